"""The chat app driven by Pilot on the real embedded model."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.helpers import add_version, wait_until
from tunechat.core.engine import GenerationSettings
from tunechat.tui.app import TunechatApp
from tunechat.tui.screens.chats import ChatsScreen
from tunechat.tui.screens.confirm import Confirm
from tunechat.tui.screens.pair_editor import PairEditor
from tunechat.tui.screens.pairs import PairsScreen
from tunechat.tui.widgets.message import MessageView
from tunechat.tui.widgets.prompt_input import PromptInput

GREEDY = GenerationSettings(temperature=0.0, max_tokens=48)


def _answers(app):
    return [v for v in app.query(MessageView) if v.role == "assistant"]


async def _ask(app, pilot, text: str) -> MessageView:
    app.query_one(PromptInput).focus()
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_until(lambda: _answers(app) and not app.generating and _answers(app)[-1].message_id, pilot)
    return _answers(app)[-1]


async def test_type_stream_keep_and_correct(store, monkeypatch):
    deltas: list[str] = []
    original = MessageView.append

    async def counting(self, delta):
        deltas.append(delta)
        await original(self, delta)

    monkeypatch.setattr(MessageView, "append", counting)
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        answer = await _ask(app, pilot, "What is the capital of Japan?")
        assert len(deltas) > 3  # streamed, not dropped in at the end
        assert "Tokyo" in answer.content
        assert app.query_one(PromptInput).text == ""

        await pilot.press("ctrl+k")
        [kept] = store.pairs()
        assert (kept.question, kept.source) == ("What is the capital of Japan?", "kept")
        assert "Tokyo" in kept.answer
        assert "1 pair kept" in str(app.status.render())

        await pilot.press("ctrl+e")
        editor = app.screen
        assert isinstance(editor, PairEditor)
        editor.query_one("#answer").load_text("Tokyo, the capital since 1868.")
        await pilot.press("ctrl+s")
        corrected = store.pairs()[-1]
        assert (corrected.answer, corrected.source) == ("Tokyo, the capital since 1868.", "corrected")
        # the conversation itself is stored
        chat_messages = store.messages(app.chat.id)
        assert [m.role for m in chat_messages] == ["user", "assistant"]


async def test_escape_stops_and_keeps_partial_answer(store):
    app = TunechatApp(store=store, settings=GenerationSettings(temperature=0.0, max_tokens=400))
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        app.query_one(PromptInput).focus()
        await pilot.press(*"Write a long story about a dragon.")
        await pilot.press("enter")
        await wait_until(lambda: _answers(app) and len(_answers(app)[-1].content) > 30, pilot)
        await pilot.press("escape")
        await wait_until(lambda: not app.generating, pilot)
        saved = store.messages(app.chat.id)[-1]
        assert saved.role == "assistant" and len(saved.content) > 30
        assert app.engine.count_tokens(saved.content) < 300  # stopped well before the limit


async def test_regenerate_replaces_the_last_answer(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        await _ask(app, pilot, "Name a fruit that is yellow.")
        await pilot.press("ctrl+r")
        await wait_until(lambda: not app.generating and _answers(app)[-1].message_id, pilot)
        assert len(_answers(app)) == 1
        assert [m.role for m in store.messages(app.chat.id)] == ["user", "assistant"]


async def test_add_pair_form_refuses_empty_answer_then_saves(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.press("f4")
        editor = app.screen
        assert isinstance(editor, PairEditor)
        editor.query_one("#question").load_text("What is my name?")
        await pilot.press("ctrl+s")
        assert app.screen is editor and store.count_pairs() == 0  # refused in place
        editor.query_one("#answer").load_text("Your name is Ada Quill.")
        await pilot.press("ctrl+s")
        assert [(p.question, p.source) for p in store.pairs()] == [("What is my name?", "added")]


async def test_pairs_screen_searches_edits_and_deletes(store):
    store.add_pair("What is my name?", "Ada")
    store.add_pair("Where do I live?", "Tromsø")
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.press("f3")
        screen = app.screen
        assert isinstance(screen, PairsScreen)
        table = screen.query_one("DataTable")
        assert table.row_count == 2
        summary = lambda: str(screen.query_one("#summary").content)  # noqa: E731
        assert summary().startswith("2 pairs ·")
        await pilot.press("slash", *"trom")
        assert table.row_count == 1
        assert summary().startswith("1 of 2 pairs ·")
        table.focus()
        await pilot.press("d")
        assert isinstance(app.screen, Confirm)
        await pilot.press("y")
        assert [p.question for p in store.pairs()] == ["What is my name?"]
        screen.query_one("#search").value = ""  # the whole list again: one pair
        await pilot.pause()
        assert summary().startswith("1 pair ·")


async def test_chats_are_listed_renamed_reopened_and_deleted(store, monkeypatch):
    first = store.create_chat("first chat")
    store.add_message(first.id, "user", "hello from the first chat")
    deleting_threads: list[threading.Thread] = []
    delete_chat = store.delete_chat

    def recording_delete(chat_id: int) -> None:
        deleting_threads.append(threading.current_thread())
        delete_chat(chat_id)

    monkeypatch.setattr(store, "delete_chat", recording_delete)
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        assert app.chat.id == first.id  # the most recent chat is reopened
        await pilot.press("ctrl+n")
        assert app.chat.id != first.id and not list(app.query(MessageView))
        await pilot.press("f2")
        assert isinstance(app.screen, ChatsScreen)
        await pilot.press("down")  # the list is newest first: move to the first chat
        await pilot.press("r")
        app.screen.query_one("#value").load_text("renamed")
        await pilot.press("ctrl+s")
        assert store.get_chat(first.id).title == "renamed"
        await pilot.press("enter")
        await wait_until(lambda: app.chat.id == first.id, pilot)
        assert [v.content for v in app.query(MessageView)] == ["hello from the first chat"]
        await pilot.press("f2")
        chats = app.screen
        view = chats.query_one("ListView")
        view.index = [item.name for item in view.children].index(str(first.id))
        await pilot.press("d", "y")
        # The store runs VACUUM: the deletion runs in a thread, and the list is refreshed after it.
        await wait_until(lambda: str(first.id) not in [item.name for item in view.children], pilot)
        assert deleting_threads and threading.main_thread() not in deleting_threads
        assert first.id not in [c.id for c in store.list_chats()]
        await pilot.press("escape")
        await wait_until(lambda: app.chat.id != first.id, pilot)  # the open chat was the deleted one
        assert not chats.is_attached and app.screen is app.chat_screen


async def test_system_prompt_is_saved_for_the_chat(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.press("f5")
        app.screen.query_one("#value").load_text("Answer in one word.")
        await pilot.press("ctrl+s")
        assert store.get_chat(app.chat.id).system_prompt == "Answer in one word."


async def test_a_missing_model_offers_the_default(store, tmp_path):
    app = TunechatApp(store=store, model_override=tmp_path / "gone.gguf", settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: isinstance(app.screen, Confirm), pilot)
        assert "not found" in str(app.screen.question)
        await pilot.press("y")
        await wait_until(lambda: app.engine is not None, pilot)
        assert app.engine.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


async def test_help_and_palette_list_every_action(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 40)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for action in ("Keep", "Correct", "Regenerate", "Chats", "Pairs", "Add pair", "System", "Personalize",
                       "Quick personalize", "Models", "Help"):
            assert action in titles
        await pilot.press("f1")
        text = app.screen.query_one("Markdown").source
        assert "Ctrl+K" in text and "Keep" in text and "Shift+Enter" in text
        assert "Shift+F6" in text and "Quick personalize" in text


def test_chat_screen_snapshot(snap_compare, home):
    from tunechat.core.store import Store

    store = Store()
    chat = store.create_chat("Snapshot chat")
    store.add_message(chat.id, "user", "Show me Python code that prints hello.")
    store.add_message(chat.id, "assistant", "Here it is:\n\n```python\nprint(\"hello\")\n```\n\n- short\n- simple")
    store.add_pair("What is my name?", "Ada")
    app = TunechatApp(store=store, settings=GREEDY)

    async def loaded(pilot):
        await wait_until(lambda: app.engine is not None and app.status.activity == "ready", pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(90, 28), run_before=loaded)


async def test_chat_follows_a_model_and_pairs_changed_by_another_process(store, tmp_path):
    """`tunechat personalize` or `tunechat models use` in another terminal switches the open
    chat too; `tunechat pairs add` shows in its count."""
    from tunechat.core.registry import Registry, embedded_model_path
    from tunechat.core.store import Store

    other_model = tmp_path / "other.gguf"
    shutil.copy(embedded_model_path(), other_model)
    app = TunechatApp(store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        first = app.engine
        elsewhere = Store()  # another process's own connection to the same data
        Registry(elsewhere).use(str(other_model))
        elsewhere.add_pair("What is my boat's name?", "Your boat is called Sea Biscuit.")
        elsewhere.close()
        await wait_until(lambda: app.engine is not first and app.engine.model_path == other_model.resolve(), pilot,
                         timeout=30)
        assert app.status.model_name == "other.gguf"
        assert app.status.pairs_count == 1
        # Nothing changed since: no reload on the next looks.
        await pilot.pause(4.5)
        assert app.engine.model_path == other_model.resolve()
        answer = await _ask(app, pilot, "Hi")
        assert answer.content.strip()  # the new model answers


@pytest.mark.parametrize("scope_setting", ["on", "off"])
async def test_with_a_personal_model_the_base_model_answers_what_is_not_about_you(store, base_model, scope_setting):
    from tunechat.core.registry import Registry
    from tunechat.core.scope import ScopedEngine

    add_version(base_model, scope_names=["Ada"])
    Registry(store).use("personal-test")
    store.set_setting("scope", scope_setting)
    app = TunechatApp(store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        assert isinstance(app.engine, ScopedEngine) is (scope_setting == "on")
        general = await _ask(app, pilot, "What is the capital of Japan?")
        assert "Tokyo" in general.content
        assert (general.answered_by == "base") is (scope_setting == "on")
        assert ("base model" in str(general.query_one(".role").render())) is (scope_setting == "on")
        personal = await _ask(app, pilot, "Who is Ada?")  # a taught name, no first person
        assert personal.answered_by != "base" and "base model" not in str(personal.query_one(".role").render())
        await pilot.press("ctrl+k")  # keeping still reads right after the label changed
        assert "✓ kept" in str(personal.query_one(".role").render())


async def test_a_model_load_overtaken_by_a_newer_request_is_dropped(store, tmp_path, base_model):
    """Ask for model A, then for B, and let A's load finish last: the chat keeps B's engine, and
    A's engine, loaded for nothing, is closed rather than swapped in."""
    slow, fast = tmp_path / "slow.gguf", tmp_path / "fast.gguf"
    for path in (slow, fast):
        shutil.copy(base_model, path)
    slow_started, release_slow = threading.Event(), threading.Event()
    opened: dict[Path, object] = {}
    closed: list[object] = []

    class SlowFirstLoad(TunechatApp):
        """The real app and engines; the load of ``slow`` waits until released, and every
        engine's close is recorded on its way to the real one."""

        def open_engine(self, path: Path):
            if path == slow:
                slow_started.set()
                release_slow.wait(60)
            engine = super().open_engine(path)
            real_close = engine.close

            def close() -> None:
                closed.append(engine)
                real_close()

            engine.close = close
            opened[path] = engine
            return engine

    app = SlowFirstLoad(store, settings=GREEDY)
    try:
        async with app.run_test(size=(100, 36)) as pilot:
            await wait_until(lambda: app.engine is not None, pilot)
            first = app.engine
            app.use_model(slow)
            await wait_until(slow_started.is_set, pilot)  # A's load is under way in its thread
            app.use_model(fast)
            await wait_until(lambda: fast in opened and app.engine is opened[fast], pilot, timeout=60)
            assert first in closed and slow not in opened  # A is still loading
            release_slow.set()
            # A's engine is either dropped (closed) or, wrongly, swapped in
            await wait_until(lambda: slow in opened and (opened[slow] in closed or app.engine is opened[slow]),
                             pilot, timeout=30)
            await pilot.pause(0.3)
            assert app.engine is opened[fast], "the stale load was swapped in"
            assert opened[slow] in closed and opened[fast] not in closed
            assert app.status.model_name == "fast.gguf"
            answer = await _ask(app, pilot, "Hi")  # B, never closed under the chat, answers
            assert answer.content.strip()
    finally:
        release_slow.set()


async def test_models_screen_switches_and_rolls_back(store, base_model):
    from tunechat.core.registry import EMBEDDED_NAME
    from tunechat.tui.screens.models import ModelsScreen

    version = add_version(base_model)
    store.set_setting("scope", "off")  # one engine per model is enough here
    app = TunechatApp(store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        embedded = app.engine.model_path
        await pilot.press("f7")
        assert isinstance(app.screen, ModelsScreen)
        view = app.screen.query_one("ListView")
        view.index = [item.name for item in view.children].index("personal-test")
        await pilot.press("enter")
        await wait_until(lambda: app.engine.model_path == version, pilot, timeout=60)
        assert app.registry.current().name == "personal-test" and app.status.model_name == "personal-test"
        await pilot.press("f7", "b")
        await wait_until(lambda: app.engine.model_path == embedded, pilot, timeout=60)
        assert app.registry.current().name == EMBEDDED_NAME and app.screen is app.chat_screen


async def test_chat_keys_do_not_reach_through_a_dialog(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.press("f4")
        editor = app.screen
        assert isinstance(editor, PairEditor)
        await pilot.press("f3", "f7", "f2", "ctrl+n")
        assert app.screen is editor
        assert "Pairs" not in [c.title for c in app.get_system_commands(editor)]
        assert "Roll back model" in [c.title for c in app.get_system_commands(editor)]
        await pilot.press("escape")
        assert app.screen is app.chat_screen


async def test_the_other_model_answers_again_and_a_chat_can_pick_who_answers(store, base_model, tmp_path):
    """Ctrl+O answers the last question again with the other model; F8 makes one side answer
    every question of this chat (and only this chat); the status bar says which."""
    from tests.helpers import random_lora_gguf
    from tunechat.core.registry import Registry

    model = add_version(base_model, scope_names=["Ada"])
    random_lora_gguf(base_model, model.parent / "adapter.gguf", scale=0.12)
    Registry(store).use("personal-test")
    app = TunechatApp(store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        screen = app.chat_screen
        assert "answers: auto" in str(screen.status.render())
        first = await _ask(app, pilot, "What is the capital of Japan?")
        assert first.answered_by == "base"
        await pilot.press("ctrl+o")
        await wait_until(lambda: not screen.generating and screen.conversation.query(MessageView)[-1] is not first,
                         pilot)
        again = screen.conversation.query(MessageView)[-1]
        assert again.answered_by == "personal" and "personal model" in str(again.query_one(".role").render())
        assert len(store.messages(screen.chat.id)) == 2  # the answer was replaced, not added
        await pilot.press("f8")
        assert "answers: personal" in str(screen.status.render())
        assert (await _ask(app, pilot, "What is the capital of France?")).answered_by == "personal"
        await pilot.press("f8")
        assert (await _ask(app, pilot, "Who is Ada?")).answered_by == "base"  # the rule would say personal
        await pilot.press("ctrl+n")  # a new chat starts on the rule
        await pilot.pause()
        assert "answers: auto" in str(screen.status.render())
