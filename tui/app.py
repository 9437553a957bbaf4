"""The tunechat Textual app: chat, keep answers as pairs, personalize, switch models."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from tunechat.tui.screens.chats import ChatsScreen
from tunechat.tui.screens.confirm import Confirm, ErrorDialog
from tunechat.tui.screens.help import HelpScreen
from tunechat.tui.screens.pair_editor import PairEditor
from tunechat.tui.screens.pairs import PairsScreen
from tunechat.tui.screens.text_prompt import TextPrompt
from tunechat.tui.widgets.message import MessageView
from tunechat.tui.widgets.prompt_input import PromptInput
from tunechat.tui.widgets.status import StatusBar
from tunechat.core import scope
from tunechat.core.chat_template import with_system
from tunechat.core.engine import GenerationSettings
from tunechat.core.gguf_check import ModelFileError
from tunechat.core.registry import EMBEDDED_NAME, Registry
from tunechat.core.scope import ChatEngine
from tunechat.core.store import Chat, Store, StoreError


FOLLOW_INTERVAL_S = 2.0  # how often the chat looks for a model or pairs changed by another process


class TunechatApp(App[int]):
    TITLE = "tunechat"
    CSS_PATH = "app.tcss"

    BINDINGS = [
        Binding("escape", "stop_generation", "Stop", id="stop"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="regenerate"),
        Binding("ctrl+k", "keep_answer", "Keep", id="keep", priority=True),
        Binding("ctrl+e", "correct_answer", "Correct", id="correct", priority=True),
        Binding("ctrl+y", "copy_message", "Copy", id="copy", show=False, priority=True),
        Binding("ctrl+n", "new_chat", "New chat", id="new_chat"),
        Binding("f1", "help", "Help", id="help"),
        Binding("f2", "chats", "Chats", id="chats"),
        Binding("f3", "pairs", "Pairs", id="pairs"),
        Binding("f4", "add_pair", "Add pair", id="add_pair"),
        Binding("f5", "system_prompt", "System", id="system_prompt"),
        Binding("f6", "personalize", "Personalize", id="personalize", priority=True),
        Binding("shift+f6", "personalize_quick", "Quick personalize", id="personalize_quick", show=False,
                priority=True),
        Binding("f7", "models", "Models", id="models", priority=True),
    ]

    # Chat actions that make no sense (and must not steal keys) while a dialog is open.
    CHAT_ACTIONS = {
        "stop_generation", "regenerate", "keep_answer", "correct_answer", "copy_message", "new_chat",
        "chats", "pairs", "add_pair", "system_prompt", "personalize", "personalize_quick",
        "models",
    }

    class EngineReady(Message):
        """A model finished loading in the background; the conversation stays as it is."""

        def __init__(self, engine: ChatEngine) -> None:
            super().__init__()
            self.engine = engine

    def __init__(self, store: Store, model_override: Path | None = None, settings: GenerationSettings | None = None) -> None:
        super().__init__()
        self.store = store
        self.registry = Registry(store)
        self.model_override = model_override
        self.settings = settings or GenerationSettings(temperature=0.2, top_p=0.9, seed=-1)
        self.engine: ChatEngine | None = None
        self.chat: Chat | None = None
        self._stop = threading.Event()
        self._generating = False
        self._retired: list[ChatEngine] = []  # replaced engines still finishing an answer
        self._requested_model: Path | None = None  # the model last asked for (loaded or loading)
        self._seen_current: str | None = None  # the registry's current-model setting when last read

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.CHAT_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    # -- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="conversation")
        yield PromptInput(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        chats = self.store.list_chats()  # reopen the most recent chat, as the user left it
        await self.open_chat(chats[0].id if chats else None)
        self.refresh_status()
        self.query_one(PromptInput).focus()
        path = self.model_override or self.registry.current().path
        self._requested_model = path
        self._seen_current = self.store.get_setting("current_model")
        # After the first frame: the load (~0.3 s of CPU) must not delay the first paint.
        self.call_after_refresh(self.load_model, path)
        self.set_interval(FOLLOW_INTERVAL_S, self._follow_outside_changes)

    def _follow_outside_changes(self) -> None:
        """Another process (`tunechat personalize`, `tunechat models use`, `tunechat pairs add`)
        changed the current model or the pairs: follow, as if it had been done here. A model
        named with --model stays until the user switches."""
        self.refresh_status()
        value = self.store.get_setting("current_model")
        if value == self._seen_current:
            return
        self._seen_current = value
        path = self.registry.current().path
        if self.model_override is None and path != self._requested_model:
            self.use_model(path)

    @property
    def conversation(self) -> VerticalScroll:
        return self.query_one("#conversation", VerticalScroll)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    def refresh_status(self) -> None:
        self.status.pairs_count = self.store.count_pairs()

    # -- model --------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="load", description="Loading model")
    def load_model(self, path: Path) -> None:
        self.call_from_thread(setattr, self.status, "activity", f"loading {path.name}…")
        engine = scope.open_engine(path, self.registry, scope.scoping_enabled(self.store))
        self.post_message(self.EngineReady(engine))

    def on_tunechat_app_engine_ready(self, message: EngineReady) -> None:
        old, self.engine = self.engine, message.engine
        self.status.model_name = self._model_label(message.engine.model_path)
        self.status.activity = "generating… (esc stops)" if self._generating else "ready"
        if old is not None and old is not message.engine:
            if self._generating:  # the answer in flight finishes on the old model
                self._retired.append(old)
            else:
                old.close()
            scoped = isinstance(message.engine, scope.ScopedEngine)
            self.notify(f"Now chatting with {self.status.model_name}."
                        + (" Questions that don't speak of you go to the base model it came from." if scoped else ""),
                        title="Model switched")

    def _model_label(self, path: Path) -> str:
        for entry in self.registry.entries():
            if entry.path == path:
                return entry.name
        return path.name

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if event.worker.group == "load":
            self.status.activity = "no model"
            self._offer_default(str(error))
        else:
            self.status.activity = "error"
            self.push_screen(ErrorDialog("Something went wrong", f"{type(error).__name__}: {error}"))

    def _offer_default(self, reason: str) -> None:
        def chosen(use_default: bool | None) -> None:
            if use_default:
                self.use_model(self.registry.use(EMBEDDED_NAME).path)

        self.push_screen(
            Confirm(f"The model could not be loaded.\n\n{reason}\n\nUse the embedded default model instead?",
                    yes="Use default", no="Not now"),
            chosen,
        )

    # -- chats --------------------------------------------------------------------------
    async def open_chat(self, chat_id: int | None) -> None:
        self.action_stop_generation()
        self.chat = self.store.get_chat(chat_id) if chat_id is not None else self.store.create_chat()
        self.sub_title = self.chat.title
        await self.conversation.remove_children()
        views = [MessageView(m.role, m.content, m.id) for m in self.store.messages(self.chat.id)]
        if views:
            await self.conversation.mount_all(views)
        self.conversation.scroll_end(animate=False)
        self.conversation.anchor()

    def _history(self) -> list[dict[str, str]]:
        assert self.chat is not None
        chat = self.store.get_chat(self.chat.id)
        turns = [{"role": m.role, "content": m.content} for m in self.store.messages(chat.id)]
        return with_system(turns, chat.system_prompt)

    # -- sending and streaming ----------------------------------------------------------
    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        if self._generating:
            self.notify("Wait for the answer, or press Esc to stop it.", severity="warning")
            return
        if self.engine is None:
            self.notify("The model is still loading.", severity="warning")
            return
        assert self.chat is not None
        text = event.text.strip()
        self.query_one(PromptInput).clear()
        message = self.store.add_message(self.chat.id, "user", text)
        if self.chat.title == "New chat":
            self.store.rename_chat(self.chat.id, text.splitlines()[0][:40])
            self.chat = self.store.get_chat(self.chat.id)
            self.sub_title = self.chat.title
        await self.conversation.mount(MessageView("user", text, message.id))
        await self._answer()

    async def _answer(self) -> None:
        view = MessageView("assistant")
        await self.conversation.mount(view)
        await view.begin_stream()
        self.conversation.scroll_end(animate=False)
        self.conversation.anchor()
        self._stop.clear()
        self._generating = True
        self.status.activity = "generating… (esc stops)"
        self.generate(view, self._history())

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate", description="Generating")
    def generate(self, view: MessageView, messages: list[dict[str, str]]) -> None:
        engine = self.engine
        assert engine is not None
        error: str | None = None
        try:
            for delta in engine.stream(messages, self.settings, self._stop):
                self.call_from_thread(view.append, delta)
        except Exception as exc:  # shown in the chat instead of ending the app
            error = f"{type(exc).__name__}: {exc}"
        finally:
            by_base = scope.answered_by_base(engine)
            self.call_from_thread(self._finish_answer, view, self._stop.is_set(), error, by_base)

    async def _finish_answer(self, view: MessageView, stopped: bool, error: str | None, by_base: bool = False) -> None:
        note = "stopped" if stopped else None
        if error:
            note = f"error: {error}"
        await view.end_stream(note)
        if by_base:
            view.mark_by_base()
        if view.content.strip() and self.chat is not None:
            view.message_id = self.store.add_message(self.chat.id, "assistant", view.content.strip()).id
        self._generating = False
        self.status.activity = "ready"
        while self._retired:
            self._retired.pop().close()

    def action_stop_generation(self) -> None:
        if self._generating:
            self._stop.set()

    async def action_regenerate(self) -> None:
        if self._generating or self.engine is None:
            return
        views = list(self.conversation.query(MessageView))
        if not views or views[-1].role != "assistant":
            self.notify("There is no answer to regenerate.", severity="warning")
            return
        last = views[-1]
        if last.message_id is not None:
            self.store.delete_message(last.message_id)
        await last.remove()
        await self._answer()

    # -- keeping pairs ------------------------------------------------------------------
    def _target_answer(self) -> tuple[MessageView, str] | None:
        """The focused assistant message, else the last one, with the question it answers."""
        views = list(self.conversation.query(MessageView))
        focused = self.focused if isinstance(self.focused, MessageView) else None
        target = focused if focused is not None and focused.role == "assistant" else None
        if target is None:
            answers = [v for v in views if v.role == "assistant"]
            target = answers[-1] if answers else None
        if target is None or target.message_id is None:
            self.notify("There is no finished answer to keep yet.", severity="warning")
            return None
        index = views.index(target)
        question = next((v.content for v in reversed(views[:index]) if v.role == "user"), "")
        return target, question

    def action_keep_answer(self) -> None:
        found = self._target_answer()
        if found is None:
            return
        view, question = found
        try:
            self.store.add_pair(question, view.content, source="kept")
        except StoreError as exc:
            self.notify(str(exc), severity="error")
            return
        view.mark_kept()
        self.refresh_status()
        self.notify("Kept as a training pair.")

    def action_correct_answer(self) -> None:
        found = self._target_answer()
        if found is None:
            return
        view, question = found

        def save(result: tuple[str, str] | None) -> None:
            if result:
                self.store.add_pair(*result, source="corrected")
                view.mark_kept()
                self.refresh_status()
                self.notify("Kept the corrected answer as a training pair.")

        self.push_screen(PairEditor("Correct the answer, then keep it", question, view.content, focus_answer=True), save)

    def action_add_pair(self) -> None:
        def save(result: tuple[str, str] | None) -> None:
            if result:
                self.store.add_pair(*result, source="added")
                self.refresh_status()
                self.notify("Pair added.")

        self.push_screen(PairEditor("Add a fact or a question/answer pair"), save)

    def action_copy_message(self) -> None:
        focused = self.focused if isinstance(self.focused, MessageView) else None
        views = list(self.conversation.query(MessageView))
        target = focused or (views[-1] if views else None)
        if target is None:
            return
        self.copy_to_clipboard(target.content)
        self.notify("Copied to the clipboard.")

    # -- screens ------------------------------------------------------------------------
    def action_help(self) -> None:
        keys = [(b.key.replace("ctrl+", "Ctrl+").upper() if b.key.startswith("f") else b.key.replace("ctrl+", "Ctrl+").title(), b.description)
                for b in self.BINDINGS if isinstance(b, Binding)]
        self.push_screen(HelpScreen(keys))

    async def action_new_chat(self) -> None:
        await self.open_chat(None)
        self.query_one(PromptInput).focus()

    def action_chats(self) -> None:
        self.push_screen(ChatsScreen(self.store, self.chat.id if self.chat else None),
                         lambda chat_id: self.call_later(self._after_chats, chat_id))

    async def _after_chats(self, chat_id: int | None) -> None:
        try:
            if chat_id is not None:
                await self.open_chat(chat_id)
            elif self.chat is not None:
                self.store.get_chat(self.chat.id)
        except StoreError:  # the open chat was deleted
            await self.open_chat(None)

    def action_pairs(self) -> None:
        self.push_screen(PairsScreen(self.store), lambda _: self.refresh_status())

    def action_system_prompt(self) -> None:
        assert self.chat is not None
        chat = self.store.get_chat(self.chat.id)

        def saved(text: str | None) -> None:
            if text is not None and self.chat is not None:
                self.store.set_system_prompt(self.chat.id, text)
                self.notify("System prompt saved." if text else "System prompt cleared: the model's default applies.")

        self.push_screen(
            TextPrompt("System prompt for this chat", chat.system_prompt or "",
                       hint="Leave empty to use the model's own default.", allow_empty=True),
            saved,
        )

    def action_models(self) -> None:
        from tunechat.tui.screens.models import ModelsScreen

        def chosen(name: str | None) -> None:
            if not name:
                return
            try:
                entry = self.registry.use(name) if name != "__rollback__" else self.registry.rollback()
            except StoreError as exc:
                self.notify(str(exc), severity="warning")
                return
            self.use_model(entry.path)

        self.push_screen(ModelsScreen(self.registry, self.engine.model_path if self.engine else None), chosen)

    def action_personalize(self, quick: bool = False) -> None:
        from tunechat.personalize.recipe import QUICK_RECIPE
        from tunechat.tui.screens.personalize import PersonalizeScreen

        screen = PersonalizeScreen(self.store, recipe=QUICK_RECIPE if quick else None)
        self.push_screen(screen, lambda _: self.refresh_status())

    def action_personalize_quick(self) -> None:
        self.action_personalize(quick=True)

    def use_model(self, path: Path) -> None:
        """Switch to another model in the background; the current one answers until it is ready."""
        self.model_override = None
        self._requested_model = path
        self.load_model(path)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.description:
                yield SystemCommand(binding.description, f"{binding.description} ({binding.key})",
                                    lambda action=binding.action: self.run_action(action))
        yield SystemCommand("Roll back model", "Switch back to the model used before this one",
                            lambda: self._rollback())

    def _rollback(self) -> None:
        try:
            entry = self.registry.rollback()
        except StoreError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.use_model(entry.path)
