"""The chat screen: the conversation, the message box, the status bar and every chat key.

Its bindings live here, not on the app, so a dialog pushed over the chat never sees them.
The app loads models and hands each one to :meth:`ChatScreen.use_engine`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from tunechat.core import memory, pair_checks, scope
from tunechat.core.engine import GenerationSettings
from tunechat.core.registry import Registry
from tunechat.core.scope import ChatEngine
from tunechat.core.store import Chat, Store, StoreError
from tunechat.core.turns import ANSWERED_BY, AnsweredBy, as_history
from tunechat.tui.screens.chats import ChatsClosed, ChatsScreen
from tunechat.tui.screens.confirm import Confirm, ErrorDialog
from tunechat.tui.screens.help import HelpScreen, key_label
from tunechat.tui.screens.pair_editor import PairEditor
from tunechat.tui.screens.pairs import PairsScreen
from tunechat.tui.screens.text_prompt import TextPrompt
from tunechat.tui.widgets.conversation import Conversation
from tunechat.tui.widgets.message import MessageView
from tunechat.tui.widgets.prompt_input import PromptInput
from tunechat.tui.widgets.status import StatusBar

GENERATING = "generating… (esc stops)"


class ChatScreen(Screen[None]):
    """One chat at a time with the engine the app last handed over."""

    BINDINGS = [
        Binding("escape", "stop_generation", "Stop", id="stop"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="regenerate"),
        Binding("ctrl+o", "answer_with_other", "Other model", id="answer_with_other", show=False, priority=True),
        Binding("f8", "cycle_mode", "Who answers", id="cycle_mode", show=False),
        # priority: the message box (a TextArea) would take these keys for line editing
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

    def __init__(self, store: Store, registry: Registry, settings: GenerationSettings) -> None:
        super().__init__()
        self.store = store
        self.registry = registry
        self.settings = settings
        self.engine: ChatEngine | None = None
        self.chat: Chat | None = None
        self.generating = False
        self._stop = threading.Event()
        self._retired: list[ChatEngine] = []  # replaced engines still finishing an answer

    # -- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Conversation(id="conversation")  # shows how to start while it has no messages
        yield PromptInput(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        chats = self.store.list_chats()  # reopen the most recent chat, as the user left it
        await self.open_chat(chats[0].id if chats else None)
        self.refresh_status()
        self.query_one(PromptInput).focus()

    @property
    def conversation(self) -> VerticalScroll:
        return self.query_one("#conversation", VerticalScroll)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    def refresh_status(self) -> None:
        bars = self.query(StatusBar)
        if not bars:  # the app's follow timer can fire before the screen is composed or after it is gone
            return
        bars.first().pairs_count = self.store.count_pairs()
        scoped = isinstance(self.engine, scope.ScopedEngine)
        bars.first().answers = self.mode if scoped else ""

    @property
    def mode(self) -> scope.Mode:
        """Who answers this chat's turns: the scope rule, or one side for every turn."""
        return scope.chat_mode(self.store, self.chat.id) if self.chat is not None else "auto"

    # -- the engine ---------------------------------------------------------------------
    def use_engine(self, engine: ChatEngine) -> None:
        """Chat with ``engine`` from the next turn; an answer in flight finishes on the old one."""
        old, self.engine = self.engine, engine
        self.status.model_name = self._model_label(engine.model_path)
        self.refresh_status()
        self.status.activity = GENERATING if self.generating else "ready"
        if old is None or old is engine:
            return
        if self.generating:
            self._retired.append(old)
        else:
            old.close()
        scoped = isinstance(engine, scope.ScopedEngine)
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
        self.status.activity = "error"
        self.app.push_screen(ErrorDialog("Something went wrong", f"{type(error).__name__}: {error}"))

    # -- chats --------------------------------------------------------------------------
    async def open_chat(self, chat_id: int | None) -> None:
        """Show the chat ``chat_id``, or a new one when None."""
        self.action_stop_generation()
        self.chat = self.store.get_chat(chat_id) if chat_id is not None else self.store.create_chat()
        self.sub_title = self.chat.title
        self.refresh_status()
        await self.conversation.remove_children()
        views = self._message_views(self.chat)
        if views:
            await self.conversation.mount_all(views)
        self.conversation.scroll_end(animate=False)
        self.conversation.anchor()

    def _message_views(self, chat: Chat) -> list[MessageView]:
        """The chat's messages, each answer marked as the pairs in use say: kept as it is (a
        "kept" pair with its question and text), or corrected (the last "corrected" pair with
        its question, kept since the chat began; the first answer to that question shows it).
        A correction is read back from the pairs, the stored message stays the model's reply."""
        pairs = self.store.pairs()
        kept = {(p.question, p.answer) for p in pairs if p.source == "kept"}
        corrections = {p.question: p.answer for p in pairs
                       if p.source == "corrected" and p.created_at >= chat.created_at}
        views: list[MessageView] = []
        question = ""
        for m in self.store.messages(chat.id):
            by = _answered_by(m.answered_by)
            if m.role != "assistant":
                question = m.content.strip()
                views.append(MessageView(m.role, m.content, m.id, by))
                continue
            text = m.content.strip()
            correction = corrections.pop(question, None)
            is_kept = correction == text or (question, text) in kept
            views.append(MessageView(m.role, m.content, m.id, by, why=m.why, kept=is_kept,
                                     correction=None if correction == text else correction))
        return views

    def _history(self) -> list[dict[str, str]]:
        assert self.chat is not None
        chat = self.store.get_chat(self.chat.id)
        return as_history(self.store.messages(chat.id), chat.system_prompt)

    # -- sending and streaming ----------------------------------------------------------
    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        if self.generating:
            self.notify("Wait for the answer, or press Esc to stop it.", severity="warning")
            return
        if self.engine is None:
            self.notify("The model is still loading.", severity="warning")
            return
        assert self.chat is not None
        text = event.text.strip()
        try:
            message = self.store.add_message(self.chat.id, "user", text)
        except (StoreError, OSError) as exc:  # a full disk, a read-only folder: the text stays to retry
            self.notify(f"Not sent: {exc}", severity="error", timeout=10)
            return
        self.query_one(PromptInput).clear()
        if self.chat.title == "New chat":
            self.store.rename_chat(self.chat.id, text.splitlines()[0][:40])
            self.chat = self.store.get_chat(self.chat.id)
            self.sub_title = self.chat.title
        await self.conversation.mount(MessageView("user", text, message.id))
        await self._answer()

    async def _answer(self, force: scope.Route | None = None) -> None:
        """Answer the conversation; ``force``: by this side of a scoped engine, else by the
        chat's mode (and, in "auto", by the scope rule)."""
        view = MessageView("assistant")
        await self.conversation.mount(view)
        await view.begin_stream()
        self.conversation.scroll_end(animate=False)
        self.conversation.anchor()
        self._stop.clear()
        self.generating = True
        self.status.activity = GENERATING
        self.generate(view, self._history(), force or scope.forced_route(self.mode))

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate", description="Generating")
    def generate(self, view: MessageView, messages: list[dict[str, str]], force: scope.Route | None = None) -> None:
        engine = self.engine
        assert engine is not None
        error: str | None = None
        try:
            for delta in scope.stream_answer(engine, messages, self.settings, self._stop, force):
                self.app.call_from_thread(view.append, delta)
        except Exception as exc:  # shown in the chat instead of ending the app
            error = f"{type(exc).__name__}: {exc}"
        finally:
            by, why = scope.answered_by(engine), scope.answer_reason(engine)
            self.app.call_from_thread(self._finish_answer, view, self._stop.is_set(), error, by, why)

    async def _finish_answer(self, view: MessageView, stopped: bool, error: str | None,
                             by: scope.AnsweredBy | None, why: str | None = None) -> None:
        note = "stopped" if stopped else None
        if error:
            note = f"error: {error}"
        await view.end_stream(note)
        if by is not None:
            view.mark_answered_by(by, why)
        try:
            if view.content.strip() and self.chat is not None:
                view.message_id = self.store.add_message(self.chat.id, "assistant", view.content.strip(), by,
                                                         why).id
        except (StoreError, OSError) as exc:  # shown, not kept: the chat goes on
            self.notify(f"The answer could not be kept: {exc}", severity="error", timeout=10)
        self.generating = False
        self.status.activity = "ready"
        while self._retired:
            self._retired.pop().close()

    def action_stop_generation(self) -> None:
        if self.generating:
            self._stop.set()

    async def action_regenerate(self, force: scope.Route | None = None) -> None:
        if self.generating or self.engine is None:
            return
        views = list(self.conversation.query(MessageView))
        if not views or views[-1].role != "assistant":
            self.notify("There is no answer to regenerate.", severity="warning")
            return
        last = views[-1]
        if last.message_id is not None:
            self.store.delete_message(last.message_id)
        await last.remove()
        await self._answer(force)

    async def action_answer_with_other(self) -> None:
        """Answer the last question again with the other model: the base model if the personal
        one answered, the personal one if the base model did or the chat said it was not told."""
        if not isinstance(self.engine, scope.ScopedEngine):
            self.notify("Only a personal version (with scoping on) has a second model to ask.", severity="warning")
            return
        views = list(self.conversation.query(MessageView))
        last = views[-1] if views else None
        if last is None or last.role != "assistant" or last.answered_by is None:
            self.notify("There is no answer to ask the other model for.", severity="warning")
            return
        # An untold reply came from no model: the personal model's own answer is the other one.
        await self.action_regenerate(force="base" if last.answered_by == "personal" else "personal")

    def action_cycle_mode(self) -> None:
        """This chat's turns: by the scope rule, all by the personal model, all by the base."""
        if self.chat is None or not isinstance(self.engine, scope.ScopedEngine):
            self.notify("Only a personal version (with scoping on) has a second model to choose.", severity="warning")
            return
        mode = scope.MODES[(scope.MODES.index(self.mode) + 1) % len(scope.MODES)]
        scope.set_chat_mode(self.store, self.chat.id, mode)
        self.refresh_status()
        self.notify({"auto": "Questions about you go to the personal model, the rest to the base model.",
                     "personal": "The personal model answers every question in this chat.",
                     "base": "The base model answers every question in this chat."}[mode],
                    title=f"Who answers: {mode}")

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
            self.store.add_pair(question, view.answer, source="kept")
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

        async def save(result: tuple[str, str] | None) -> None:
            if not result:
                return
            try:
                pair = self.store.add_pair(*result, source="corrected")
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            # The stored message stays the model's reply; the view shows the pair's answer over it.
            await view.mark_corrected(pair.answer)
            self.refresh_status()
            self.notify("Kept the corrected answer as a training pair.")

        self.app.push_screen(PairEditor("Correct the answer, then keep it", question, view.answer, focus_answer=True),
                             save)

    def action_add_pair(self) -> None:
        def save(result: tuple[str, str] | None) -> None:
            if result:
                self.store.add_pair(*result, source="added")
                self.refresh_status()
                self.notify("Pair added.")

        self.app.push_screen(PairEditor("Add a fact (a sentence, or a question and its answer)",
                                        write_fact=self._write_fact), save)

    def _write_fact(self, sentence: str) -> tuple[str, str] | None:
        """A fact said as a sentence as the pair to train, written by the base model (called
        from a worker thread); None when no model is loaded or no pair passed the checks."""
        from tunechat.core.facts import pair_from_fact

        engine = self.engine
        if engine is None:
            return None
        base = engine.engine_for("base") if isinstance(engine, scope.ScopedEngine) else engine
        pair = pair_from_fact(base, sentence)
        return (pair.question, pair.answer) if pair is not None else None

    def action_copy_message(self) -> None:
        focused = self.focused if isinstance(self.focused, MessageView) else None
        views = list(self.conversation.query(MessageView))
        target = focused or (views[-1] if views else None)
        if target is None:
            return
        self.app.copy_to_clipboard(target.answer)
        self.notify("Copied to the clipboard.")

    # -- other screens ------------------------------------------------------------------
    def action_help(self) -> None:
        keys = [(key_label(b.key), b.description) for b in self.BINDINGS if isinstance(b, Binding)]
        self.app.push_screen(HelpScreen(keys))

    async def action_new_chat(self) -> None:
        await self.open_chat(None)
        self.query_one(PromptInput).focus()

    def action_chats(self) -> None:
        def closed(result: ChatsClosed | None) -> None:
            self.call_later(self._after_chats, result)  # once the list is off the screen stack

        self.app.push_screen(ChatsScreen(self.store, self.chat.id if self.chat else None), closed)

    async def _after_chats(self, closed: ChatsClosed | None) -> None:
        try:
            if closed is not None and closed.open_chat is not None:
                await self.open_chat(closed.open_chat)
            elif closed is not None and closed.current_deleted:
                await self.open_chat(None)
            elif self.chat is not None:
                self.store.get_chat(self.chat.id)
        except StoreError:  # the open chat was deleted
            await self.open_chat(None)

    def action_pairs(self) -> None:
        self.app.push_screen(PairsScreen(self.store), lambda _: self.refresh_status())

    def action_system_prompt(self) -> None:
        assert self.chat is not None
        chat = self.store.get_chat(self.chat.id)

        def saved(text: str | None) -> None:
            if text is not None and self.chat is not None:
                self.store.set_system_prompt(self.chat.id, text)
                self.notify("System prompt saved." if text else "System prompt cleared: the model's default applies.")

        self.app.push_screen(
            TextPrompt("System prompt for this chat", chat.system_prompt or "",
                       hint="Leave empty to use the model's own default.", allow_empty=True),
            saved,
        )

    def action_models(self) -> None:
        from tunechat.tui.screens.models import ModelsScreen  # posts ModelChosen / RollbackRequested

        self.app.push_screen(ModelsScreen(self.registry, self.engine.model_path if self.engine else None))

    def action_personalize(self, quick: bool = False) -> None:
        """Show the run, or start one: first, when the pairs have problems or the run will be
        long, say so and let the user look at the pairs instead (n opens them)."""
        # Imported when used: the personalize screen pulls in the job runner, not needed to chat.
        from tunechat.personalize.recipe import DEFAULT_RECIPE, QUICK_RECIPE
        from tunechat.tui.screens.personalize import PersonalizeScreen

        recipe = QUICK_RECIPE if quick else None
        ignore_memory = False

        def start(go: bool | None = True) -> None:
            if go:
                self.app.push_screen(PersonalizeScreen(self.store, recipe=recipe, ignore_memory=ignore_memory),
                                     lambda _: self.refresh_status())
            else:
                self.action_pairs()

        def check_pairs(go: bool | None = True) -> None:
            nonlocal ignore_memory
            if not go:
                return
            ignore_memory = too_big is not None
            warning = before_training(self.store, self.registry, recipe or DEFAULT_RECIPE,
                                      self.engine.count_tokens if self.engine is not None else None)
            if warning:
                self.app.push_screen(Confirm(warning, yes="Train anyway", no="Look at the pairs"), start)
            else:
                start()

        if getattr(self.app, "personalize_run", None) is not None or not self.store.count_pairs():
            start()
            return
        too_big = memory_refusal(self.registry)
        if too_big:
            self.app.push_screen(Confirm(too_big, yes="Try anyway", no="Cancel"), check_pairs)
        else:
            check_pairs()

    def action_personalize_quick(self) -> None:
        self.action_personalize(quick=True)


def memory_refusal(registry: Registry) -> str | None:
    """Why the current base will not fit this machine's free memory (tunechat.core.memory),
    before the run starts; None when it fits, or when there is no base to personalize."""
    try:
        base = registry.current().base_path
    except StoreError:
        return None
    return memory.refusal(base, "Try anyway starts it regardless")


def before_training(store: Store, registry, recipe: str, count_tokens: Callable[[str], int] | None) -> str | None:
    """What to tell the user before a run starts: the pairs' problems, and how long it will
    take when that is long. None: nothing worth a question."""
    from tunechat.personalize.progress import LONG_RUN_SECONDS, BaseSize, RunProgress

    pairs = store.pairs()
    problems = [p for p in pair_checks.check_pairs(pairs, count_tokens=count_tokens) if p.blocking]
    estimate = RunProgress.from_history((e.manifest for e in registry.personal_versions()), recipe,
                                        pairs=len(pairs), base=BaseSize.of(registry.current().base_path))
    if not problems and estimate.remaining <= LONG_RUN_SECONDS:
        return None
    lines = [pair_checks.summary(problems), *(p.text for p in problems[:4])] if problems else []
    if len(problems) > 4:
        lines.append(f"… and {len(problems) - 4} more (F3 shows them all).")
    return "\n".join(lines + [estimate.estimate_text()])


def _answered_by(value: str | None) -> AnsweredBy | None:
    """A stored message's source, as the chat labels it."""
    return next((by for by in ANSWERED_BY if by == value), None)
