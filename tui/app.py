"""The tunechat Textual app: loads and switches models, follows outside changes, hosts the chat.

The chat itself (conversation, keys, generation) is :class:`ChatScreen`; dialogs tell the app
what they need through the messages in :mod:`tunechat.tui.messages`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tunechat.core import scope
from tunechat.core.engine import GenerationSettings, default_threads
from tunechat.core.registry import EMBEDDED_NAME, ModelEntry, Registry, RegistryState
from tunechat.core.scope import ChatEngine
from tunechat.core.store import Chat, Store, StoreError
from tunechat.tui.messages import (
    ModelChosen,
    PairsChanged,
    PersonalizeChanged,
    PersonalizeFinished,
    RollbackRequested,
)
from tunechat.tui.screens.chat import GENERATING, ChatScreen
from tunechat.tui.screens.confirm import Confirm, ErrorDialog
from tunechat.tui.screens.help import key_label
from tunechat.tui.widgets.prompt_input import PromptInput
from tunechat.tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from tunechat.tui.screens.personalize import PersonalizeRun

FOLLOW_INTERVAL_S = 2.0  # how often the chat looks for a model or pairs changed by another process
NO_MODEL = "none loaded (F7 to choose one)"

# The command palette's entry for each chat action: what it does, beyond its name.
COMMAND_HELP = {
    "stop_generation": "Stop the answer being written; what came is kept",
    "regenerate": "Ask for the last answer again",
    "answer_with_other": "Answer the last question again with the other model (personal or base)",
    "cycle_mode": "Who answers this chat: by the scope rule, always personal, always base",
    "keep_answer": "Keep the focused (or last) answer as a training pair",
    "correct_answer": "Correct the focused (or last) answer, then keep it",
    "copy_message": "Copy the focused (or last) message to the clipboard",
    "new_chat": "Start an empty chat",
    "help": "Every key, in one list",
    "chats": "Earlier chats: open, rename, delete",
    "pairs": "The training pairs: search, add, edit, delete",
    "add_pair": "Teach a fact: a question and its answer",
    "system_prompt": "This chat's system prompt",
    "personalize": "Teach the model your pairs (method replay-kl-para-greedy)",
    "personalize_quick": "Under half the time, weaker on reworded questions (method replay-kl)",
    "models": "Use another model; each version's scores, size and pairs",
}


class TunechatApp(App[int]):
    TITLE = "tunechat"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: a subclass elsewhere finds it too

    class EngineReady(Message):
        """The load numbered ``request`` finished in the background."""

        def __init__(self, engine: ChatEngine, request: int) -> None:
            super().__init__()
            self.engine = engine
            self.request = request

    def __init__(self, store: Store, model_override: Path | None = None,
                 settings: GenerationSettings | None = None) -> None:
        super().__init__()
        self.store = store
        self.registry = Registry(store)
        self.model_override = model_override
        self.settings = settings or GenerationSettings(temperature=0.2, top_p=0.9, seed=-1)
        self._chat_screen: ChatScreen | None = None
        self._requested_model: Path | None = None  # the model last asked for (loaded or loading)
        self._load_request = 0  # numbers the loads: only the latest one's engine is used
        self._seen_current: str | None = None  # the registry's current-model setting when last read
        self._seen_stamp: tuple[int, int] | None = None  # the store's change stamp when last read
        self.personalize_run: PersonalizeRun | None = None  # kept here while its screen is away
        self._load_worker: Worker[None] | None = None  # the newest load
        # A switch's load, and the registry's settings before it: put back if the load fails,
        # so that the model named current is the one answering (and the next start loads it).
        self._switch_undo: tuple[int, RegistryState, RegistryState] | None = None  # request, before, after

    # -- the chat -----------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        self._chat_screen = ChatScreen(self.store, self.registry, self.settings)
        return self._chat_screen

    @property
    def chat_screen(self) -> ChatScreen:
        assert self._chat_screen is not None, "the app is not running"
        return self._chat_screen

    @property
    def engine(self) -> ChatEngine | None:
        """The engine the chat answers with (None until the first model is loaded)."""
        return self._chat_screen.engine if self._chat_screen is not None else None

    @property
    def chat(self) -> Chat | None:
        return self.chat_screen.chat

    @property
    def status(self) -> StatusBar:
        return self.chat_screen.status

    @property
    def generating(self) -> bool:
        return self.chat_screen.generating

    _generating = generating  # the name callers used before the chat became a screen

    def on_mount(self) -> None:
        path = self.model_override or self.registry.current().path
        self._seen_current = self.store.get_setting("current_model")
        # After the first frame: the load (~0.3 s of CPU) must not delay the first paint.
        self.call_after_refresh(self._request_load, path)
        self.set_interval(FOLLOW_INTERVAL_S, self._follow_outside_changes)

    def _follow_outside_changes(self) -> None:
        """Another process (`tunechat personalize`, `tunechat models use`, `tunechat pairs add`)
        changed the current model or the pairs: follow, as if it had been done here. A model
        named with --model stays until the user switches. The store is read only after a commit
        (its change stamp moved): an idle chat costs one cheap query per look."""
        stamp = self.store.change_stamp()
        if stamp == self._seen_stamp:
            return
        self._seen_stamp = stamp
        self.chat_screen.refresh_status()
        value = self.store.get_setting("current_model")
        if value == self._seen_current:
            return
        self._seen_current = value
        path = self.registry.current().path
        if self.model_override is None and path != self._requested_model:
            self.use_model(path)

    # -- loading models -----------------------------------------------------------------
    def use_model(self, path: Path) -> None:
        """Switch to another model in the background; the current one answers until it is ready."""
        self.model_override = None
        self._request_load(path)

    def _request_load(self, path: Path) -> None:
        self._requested_model = path
        self._load_request += 1
        self._load_worker = self.load_model(path, self._load_request)

    def open_engine(self, path: Path) -> ChatEngine:
        """Load the chat engine for ``path`` (runs in the load worker's thread)."""
        return scope.open_engine(path, self.registry, scope.scoping_enabled(self.store))

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", description="Loading model")
    def load_model(self, path: Path, request: int) -> None:
        self.call_from_thread(self._show_loading, path)
        self.post_message(self.EngineReady(self.open_engine(path), request))

    def _show_loading(self, path: Path) -> None:
        self.chat_screen.status.activity = f"loading {path.name}…"

    def on_tunechat_app_engine_ready(self, message: EngineReady) -> None:
        # A thread cannot be interrupted: a load superseded by a newer request still finishes.
        if message.request != self._load_request:
            message.engine.close()
            return
        self._switch_undo = None  # it loaded: the switch stands
        self.chat_screen.query_one(PromptInput).refusal = None
        self.chat_screen.use_engine(message.engine)
        self.fit_threads()

    def fit_threads(self) -> None:
        """One llama.cpp thread for the chat while this app's personalization runs (its worker
        keeps every core busy, and llama.cpp's threads would wait for each other at every step:
        a fact's pair took 124 s on two threads, 16 s on one, on 2 cores), every core otherwise."""
        run = self.personalize_run
        wanted = 1 if run is not None and run.state == "running" else default_threads()
        engine = self.engine
        if engine is not None and engine.n_threads != wanted:
            engine.use_threads(wanted)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every worker the app runs ends up here when it fails, and the failure is shown:
        a model that did not load, a personalization or an export that broke."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if event.worker.group == "load":
            if event.worker is self._load_worker:  # an older load failing after a newer request is no news
                self._undo_switch()
                self._load_failed(str(error))
            return
        if event.worker.group == "personalize" and self.personalize_run is not None and error is not None:
            self.personalize_run.fail(error)  # the run's own screen says so (F6), and the status bar
            return
        self.push_screen(ErrorDialog(f"{event.worker.description or 'A task'} failed",
                                     f"{type(error).__name__}: {error}"))

    def _load_failed(self, reason: str) -> None:
        """The model in use goes on answering; with none, the chat says so and how to get one."""
        chat = self.chat_screen
        if chat.engine is not None:
            chat.status.activity = GENERATING if chat.generating else "ready"
        else:
            chat.status.model_name = NO_MODEL
            chat.status.activity = ""
            chat.query_one(PromptInput).refusal = (
                "No model is loaded: press F7 to choose one, or Ctrl+P → Use the embedded default model.")
        self._offer_default(reason)

    def _offer_default(self, reason: str) -> None:
        def chosen(use_default: bool | None) -> None:
            if use_default:
                self.use_embedded()

        self.push_screen(
            Confirm(f"The model could not be loaded.\n\n{reason}\n\nUse the embedded default model instead? "
                    "(Or choose another later with F7.)", yes="Use default", no="Not now"),
            chosen,
        )

    def use_embedded(self) -> None:
        self._switch(lambda: self.registry.use(EMBEDDED_NAME))

    # -- what the dialogs ask for -------------------------------------------------------
    def on_model_chosen(self, message: ModelChosen) -> None:
        self._switch(lambda: self.registry.use(message.name))

    def on_rollback_requested(self, message: RollbackRequested) -> None:
        self._switch(self.registry.rollback)

    def on_personalize_finished(self, message: PersonalizeFinished) -> None:
        self.use_model(message.path)  # the job already made it the current model

    def on_pairs_changed(self, message: PairsChanged) -> None:
        self.chat_screen.refresh_status()

    def on_personalize_changed(self, message: PersonalizeChanged) -> None:
        self.status.personalizing = message.status

    def on_unmount(self) -> None:
        """Quitting mid-run must not leave a training process behind."""
        if self.personalize_run is not None:
            self.personalize_run.cancel()

    def _switch(self, change: Callable[[], ModelEntry]) -> None:
        """Change the registry's current model with ``change``, then load what it chose; if it
        does not load, the registry goes back to what it said before."""
        before = self.registry.state()
        try:
            entry = change()
        except StoreError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.use_model(entry.path)
        self._switch_undo = (self._load_request, before, self.registry.state())

    def _undo_switch(self) -> None:
        """The registry as it was before the switch whose load just failed, unless something
        else (another process, a newer switch) changed it since."""
        undo, self._switch_undo = self._switch_undo, None
        if undo is None or undo[0] != self._load_request or self.registry.state() != undo[2]:
            return
        self.registry.restore(undo[1])
        self._seen_current = self.store.get_setting("current_model")

    # -- command palette ----------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every action once: its name as on its key, what it does and the key beside it."""
        yield from super().get_system_commands(screen)
        if screen is self._chat_screen:  # like its keys, the chat's commands are not offered over a dialog
            for binding in ChatScreen.BINDINGS:
                if isinstance(binding, Binding) and binding.description:
                    help_text = COMMAND_HELP.get(binding.action, binding.description)
                    yield SystemCommand(binding.description, f"{help_text} · {key_label(binding.key)}",
                                        lambda action=binding.action: self.run_action(action, screen))
            yield SystemCommand("Export a version", "A personal version as a folder for llama.cpp, LM Studio, "
                                "Ollama, peft · F7, x", self._export)
        yield SystemCommand("Roll back model", "Switch back to the model used before this one · F7, b",
                            lambda: self.post_message(RollbackRequested()))
        yield SystemCommand("Use the embedded default model", f"{EMBEDDED_NAME}, shipped with tunechat",
                            self.use_embedded)

    def _export(self) -> None:
        from tunechat.tui.screens.models import ModelsScreen

        engine = self.engine
        self.push_screen(ModelsScreen(self.registry, engine.model_path if engine else None, export=True))
