"""The chat app driven by Pilot on the real embedded model."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.helpers import add_version, wait_until
from tunechat.core.engine import GenerationSettings, default_threads
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

        reply = answer.content
        await pilot.press("ctrl+e")
        editor = app.screen
        assert isinstance(editor, PairEditor)
        field = editor.query_one("#answer")
        assert field.text == reply.strip() and field.selected_text == field.text  # the whole answer, selected
        await pilot.press(*"Kyoto, then Tokyo.")  # typing replaces the wrong answer
        await pilot.press("ctrl+s")
        corrected = store.pairs()[-1]
        assert (corrected.question, corrected.answer, corrected.source) == (
            "What is the capital of Japan?", "Kyoto, then Tokyo.", "corrected")
        # the message shows the correction, kept, with the model's reply struck through under it
        assert answer.query_one(".body").source == "Kyoto, then Tokyo."
        assert "✎ corrected · kept" in str(answer.query_one(".role").render())
        was = answer.query_one(".was")
        assert was.display and str(was.render()) == "was: " + " ".join(reply.split())
        # the conversation itself is stored, the model's reply as it was
        chat_messages = store.messages(app.chat.id)
        assert [(m.role, m.content) for m in chat_messages] == [("user", "What is the capital of Japan?"),
                                                                ("assistant", reply)]
        # reopened (as F2 does), the chat shows the correction from the kept pair
        await app.chat_screen.open_chat(app.chat.id)
        await pilot.pause()
        [again] = _answers(app)
        assert again is not answer and again.content == reply
        assert again.query_one(".body").source == "Kyoto, then Tokyo."
        assert "✎ corrected · kept" in str(again.query_one(".role").render()) and again.query_one(".was").display
        # a chat begun after the correction shows its own answer to the question as it is
        await pilot.press("ctrl+n")
        await _ask(app, pilot, "What is the capital of Japan?")
        await app.chat_screen.open_chat(app.chat.id)
        await pilot.pause()
        [later] = _answers(app)
        assert later.correction is None and "corrected" not in str(later.query_one(".role").render())


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
        editor.query_one("#answer").focus()
        await pilot.press("ctrl+a", *"Your name is Ada.")  # ctrl+a selects the whole field
        await pilot.press("ctrl+s")
        assert [(p.question, p.answer, p.source) for p in store.pairs()] == [
            ("What is my name?", "Your name is Ada.", "added")]


async def test_a_fact_typed_alone_in_f4_becomes_a_pair_shown_before_it_is_kept(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        await pilot.press("f4")
        editor = app.screen
        assert isinstance(editor, PairEditor)
        editor.query_one("#question").load_text("I named my bike Rocket.")
        await pilot.press("ctrl+s")
        await wait_until(lambda: not editor.writing, pilot, timeout=120)
        question, answer = editor.query_one("#question").text, editor.query_one("#answer").text
        assert question.endswith("?") and "Rocket" in answer and store.count_pairs() == 0  # shown, not kept
        assert "Written from your sentence" in str(editor.query_one("#error").render())
        await pilot.press("ctrl+s")
        assert [(p.question, p.answer) for p in store.pairs()] == [(question, answer)]


async def test_a_fact_that_cannot_be_turned_into_a_pair_asks_for_the_question(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        editor = PairEditor("Add a fact", write_fact=lambda sentence: None)
        await app.push_screen(editor)
        editor.query_one("#question").load_text("My sister Maeve lives in Galway.")
        await pilot.press("ctrl+s")
        await wait_until(lambda: not editor.writing, pilot)
        assert editor.query_one("#answer").text == "Your sister Maeve lives in Galway."
        assert editor.query_one("#question").text == "" and app.screen is editor
        assert "write the question it answers" in str(editor.query_one("#error").render())


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


async def test_pairs_screen_flags_a_changed_fact_and_r_retires_the_older_for_the_newer(store):
    old = store.add_pair("Where do I live?", "You live in Oslo.")
    store.add_pair("What is my name?", "Ada")
    new = store.add_pair("where do I live", "You live in Porto.")
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(110, 36)) as pilot:
        await pilot.press("f3")
        screen = app.screen
        assert isinstance(screen, PairsScreen)
        table = screen.query_one("DataTable")
        problems = lambda: str(screen.query_one("#problems").content)  # noqa: E731
        assert "Found 1 contradiction." in problems() and f"retire {old.id} for {new.id}" in problems()
        assert table.get_row(str(old.id))[-1] == "⚠ contradicts"
        table.focus()
        await pilot.press("r")  # the cursor is on the first row: the older pair
        retired = store.pairs(retired=True)[0]
        assert retired.retired and retired.replaced_by == new.id
        assert problems() == "" and table.row_count == 2
        await pilot.press("h")  # history: the retired pair, marked
        assert table.row_count == 3 and table.get_row(str(old.id))[-1] == "retired"
        table.move_cursor(row=0)
        await pilot.press("r")  # put back: the contradiction again
        assert not store.get_pair(old.id).retired and "1 contradiction" in problems()


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


async def test_after_a_failed_load_and_not_now_the_app_says_so_and_stays_usable(store, tmp_path):
    from tunechat.tui.screens.models import ModelsScreen

    app = TunechatApp(store=store, model_override=tmp_path / "gone.gguf", settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: isinstance(app.screen, Confirm), pilot)
        assert "F7" in str(app.screen.question)
        await pilot.press("n")
        assert app.screen is app.chat_screen
        status = str(app.status.render())
        assert "none loaded (F7 to choose one)" in status and "loading" not in status
        app.query_one(PromptInput).focus()
        await pilot.press(*"Hello", "enter")
        await pilot.pause()
        assert store.messages(app.chat.id) == [] and app.query_one(PromptInput).text == "Hello"  # kept, not lost
        assert any("No model is loaded" in str(n.message) for n in app._notifications)
        assert not any("still loading" in str(n.message) for n in app._notifications)
        await pilot.press("f7")
        assert isinstance(app.screen, ModelsScreen)
        await pilot.press("enter")  # the embedded model, first in the list
        await wait_until(lambda: app.engine is not None and app.status.activity == "ready", pilot)
        assert app.query_one(PromptInput).refusal is None
        assert "none loaded" not in str(app.status.render())


async def test_a_failed_switch_keeps_the_model_in_use(store, tmp_path):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        name = app.status.model_name
        app.use_model(tmp_path / "gone.gguf")
        await wait_until(lambda: isinstance(app.screen, Confirm), pilot)
        await pilot.press("n")
        assert app.status.model_name == name and app.status.activity == "ready"
        assert app.query_one(PromptInput).refusal is None


async def test_a_failing_worker_is_shown_never_silent(store):
    from tunechat.tui.screens.confirm import ErrorDialog

    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        def broken() -> None:
            raise OSError("disk full")

        app.run_worker(broken, thread=True, exit_on_error=False, group="export", description="Exporting")
        await wait_until(lambda: isinstance(app.screen, ErrorDialog), pilot)
        assert app.screen.dialog_title == "Exporting failed" and "OSError: disk full" in app.screen.message


async def test_slash_focuses_the_search_box_and_types_a_slash_in_it(store):
    store.add_pair("Is 1/2 a half?", "Yes")
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.press("f3")
        search = app.screen.query_one("#search")
        await pilot.press("slash")
        assert app.focused is search and search.value == ""
        await pilot.press("1", "slash", "2")
        assert search.value == "1/2" and app.screen.query_one("DataTable").row_count == 1


async def test_help_and_palette_list_every_action(store):
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 40)) as pilot:
        commands = list(app.get_system_commands(app.screen))
        titles = [c.title for c in commands]
        for action in ("Keep", "Correct", "Regenerate", "Chats", "Pairs", "Add pair", "System", "Personalize",
                       "Quick personalize", "Models", "Help", "Export a version", "Roll back model",
                       "Use the embedded default model"):
            assert action in titles
        assert len(titles) == len(set(titles))  # every action once
        for command in commands:  # the line under a title says more than the title again
            assert not command.help.startswith(f"{command.title} ("), command
        assert next(c for c in commands if c.title == "Add pair").help.endswith("· F4")
        await pilot.press("f1")
        text = app.screen.query_one("Markdown").source
        assert "Ctrl+K" in text and "Keep" in text and "Shift+Enter" in text
        assert "Shift+F6" in text and "Quick personalize" in text
        assert "Esc closes this help" in text.splitlines()[2]  # at the top, not below the fold
        assert "esc" in str(app.screen.query_one("Footer").query("FooterKey").first().render()).lower()


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
        assert ("base model: does not speak of you" in str(general.query_one(".role").render())) is \
            (scope_setting == "on")
        personal = await _ask(app, pilot, "Who is Ada?")  # a taught name, no first person
        assert personal.answered_by != "base" and "base model" not in str(personal.query_one(".role").render())
        assert ('names "Ada", which you taught' in str(personal.query_one(".role").render())) is \
            (scope_setting == "on")
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
        earlier = screen.chat.id
        await pilot.press("ctrl+n")  # a new chat starts on the rule
        await pilot.pause()
        assert "answers: auto" in str(screen.status.render())
        # Reopened (as F2 does), the chat shows who answered each message, keeps its mode, and
        # Ctrl+O still knows which model to ask.
        await screen.open_chat(earlier)
        await pilot.pause()
        views = [v for v in screen.conversation.query(MessageView) if v.role == "assistant"]
        assert [v.answered_by for v in views] == ["personal", "personal", "base"]
        assert "base model: as asked" in str(views[-1].query_one(".role").render())
        assert "personal model: as asked" in str(views[0].query_one(".role").render())
        assert "answers: base" in str(screen.status.render())
        await pilot.press("ctrl+o")
        await wait_until(lambda: not screen.generating
                         and screen.conversation.query(MessageView)[-1] is not views[-1], pilot)
        assert screen.conversation.query(MessageView)[-1].answered_by == "personal"


# -- the personalize screen, fed recorded events ------------------------------------------

class Clock:
    """A clock that moves only when told: durations and times left come out the same every run."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# A default run's report as the worker writes it (the scores and answers of a run with 7 pairs).
RECORDED_MANIFEST = {
    "created_at": 1767346200, "pairs_count": 7, "method": "replay-kl-para-greedy",
    "recipe": {"stop_when": "greedy"}, "paraphrases": {"What is my name?": ["What am I called?"] * 3},
    "metrics": {"before": {"reliability": 0.0, "locality": 1.0, "soft_locality": 1.0, "no_borrowing": 1.0,
                           "admits": 0.17},
                "after": {"reliability": 1.0, "locality": 12 / 14, "soft_locality": 0.32, "no_borrowing": 0.5,
                          "admits": 0.5},
                "scoped": {"reliability": 1.0, "locality": 1.0, "soft_locality": 0.58, "no_borrowing": 1.0,
                           "admits": 2 / 6}},
    "answers": {"taught": {f"t{i}": "" for i in range(7)}, "locality": {f"l{i}": "" for i in range(14)},
                "untaught": {f"u{i}": "" for i in range(6)}},
    "scoped_answers": {"taught": {f"t{i}": "" for i in range(7)}, "locality": {f"l{i}": "" for i in range(14)},
                       "untaught": {f"u{i}": "" for i in range(6)}},
    "checks": [{"name": "metadata", "passed": True, "detail": "identical to the base"},
               {"name": "logits", "passed": True, "detail": "top-1 agreement 100%"},
               {"name": "answers", "passed": True, "detail": "7/7 taught answers from the GGUF"}],
    "timings": {"prepare": 3.1, "baseline": 0.1, "paraphrase": 0.2, "load": 2.4, "train": 74.5, "merge": 0.4,
                "convert": 1.5, "verify": 5.2, "evaluate": 9.8},
    "train": {"steps": 26, "final_loss": 0.0123, "tokens_per_second": 360.0, "stopped_early": True},
}


class RecordedJob:
    """Stands in for PersonalizeJob: replays the events put in its queue (None ends them) and
    installs nothing."""

    def __init__(self, clock: Clock, manifest: dict | None = None) -> None:
        import queue
        from types import SimpleNamespace

        from tunechat.core.manifest import Manifest
        from tunechat.core.registry import embedded_model_path
        from tunechat.personalize.job import Outcome

        self.clock, self.queue = clock, queue.Queue()
        self.spec = SimpleNamespace(pairs=[("q", "a")] * 7, recipe="replay-kl-para-greedy", processes=1)
        self.base = embedded_model_path()
        self.error: str | None = None
        self.outcome = Outcome(Manifest.from_dict(manifest), Path("/nonexistent")) if manifest else None
        self.cancelled = False

    def progress(self):
        from tunechat.personalize.progress import RunProgress

        return RunProgress(clock=self.clock)

    def events(self):
        while (event := self.queue.get()) is not None:
            yield event

    def install(self, consent: bool = False):
        from types import SimpleNamespace

        return SimpleNamespace(name="personal-20260102-093000", path=self.base)

    def cancel(self) -> None:
        self.cancelled = True
        self.queue.put(None)

    def discard(self) -> None:
        pass


def recorded_events(until_step: int, step_s: float = 2.0, slow_from: int | None = None):
    """(seconds before it, event) of a default run up to training step ``until_step``."""
    from tunechat.personalize.job import Event

    yield 0.0, Event("phase", {"phase": "prepare", "detail": "loading libraries"})
    for phase, took, detail in (("baseline", 3.1, "the base model's answers (cached after the first run)"),
                                ("paraphrase", 0.1, "the base model rewords your questions (cached per pair)"),
                                ("load", 0.2, "base weights on cpu"),
                                ("train", 2.4, "7 pairs, method replay-kl-para-greedy")):
        yield took, Event("phase", {"phase": phase, "detail": detail})
    for step in range(1, until_step + 1):
        slow = slow_from is not None and step >= slow_from
        yield step_s * (2.6 if slow else 1.0), Event(
            "progress", {"phase": "train", "step": step, "total": 40, "loss": round(2.5 / step ** 1.5, 4), "eta": 0})


class NoSwitchApp(TunechatApp):
    """The real app, but a finished run's model (a stand-in) is not loaded."""

    def on_personalize_finished(self, message) -> None:
        message.prevent_default()  # the app's own handler would load it


def _recorded_run(app, clock: Clock, manifest: dict | None = None, until_step: int = 12, slow_from: int | None = 9):
    from tunechat.tui.screens.personalize import PersonalizeRun

    job = RecordedJob(clock, manifest)
    run = PersonalizeRun(app, job, None, in_chat=True)
    for wait, event in recorded_events(until_step, slow_from=slow_from):
        clock.now += wait
        run.feed(event)
    app.personalize_run = run
    return run


def test_personalize_progress_snapshot(snap_compare, home):
    """A bar per phase and one for the whole run, one time left, the loss, and a busy machine
    named, with the way back to the chat."""
    from tunechat.core.store import Store
    from tunechat.tui.screens.personalize import PersonalizeScreen

    store = Store()
    app = NoSwitchApp(store=store, settings=GREEDY)

    async def running(pilot):
        await wait_until(lambda: app.engine is not None and app.status.activity == "ready", pilot)
        _recorded_run(app, Clock())
        await app.push_screen(PersonalizeScreen(store))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(110, 40), run_before=running)


def test_personalize_report_snapshot(snap_compare, home):
    """After the run: plain sentences marked ✓ or ⚠, the expert figures folded away."""
    from tunechat.core.store import Store
    from tunechat.tui.screens.personalize import PersonalizeScreen

    store = Store()
    app = NoSwitchApp(store=store, settings=GREEDY)

    async def finished(pilot):
        await wait_until(lambda: app.engine is not None and app.status.activity == "ready", pilot)
        run = _recorded_run(app, Clock(), RECORDED_MANIFEST, until_step=26, slow_from=None)
        await app.push_screen(PersonalizeScreen(store))
        run.end()  # while shown, as a run ends
        await pilot.pause()

    assert snap_compare(app, terminal_size=(110, 40), run_before=finished)


async def test_the_report_unfolds_its_figures_and_esc_leaves_no_run_behind(store):
    from tunechat.tui.screens.personalize import PersonalizeScreen

    app = NoSwitchApp(store=store, settings=GREEDY)
    async with app.run_test(size=(110, 40)) as pilot:
        run = _recorded_run(app, Clock(), RECORDED_MANIFEST, until_step=26, slow_from=None)
        run.end()
        await app.push_screen(PersonalizeScreen(store))
        await pilot.pause()
        screen = app.screen
        summary = str(screen.query_one("#report-text").render())
        assert "✓ Learned 7 of 7 facts." in summary and "reliability" not in summary
        assert "Now using personal-20260102-093000" in str(screen.query_one("#result").render())
        details = screen.query_one("#details")
        assert details.collapsed
        await pilot.press("d")
        assert not details.collapsed
        assert "higher is better" in str(screen.query_one("#details-text").render())
        await pilot.press("escape")
        assert app.screen is app.chat_screen and app.personalize_run is None
        assert "personaliz" not in str(app.status.render())


async def test_a_run_goes_on_while_the_chat_is_used_and_f6_shows_it_again(store):
    """c puts the run away: the status bar follows it; F6 shows the same run, its evaluation
    moving, then its report."""
    from tunechat.personalize.job import Event
    from tunechat.tui.screens.personalize import PersonalizeRun, PersonalizeScreen

    clock = Clock()
    app = NoSwitchApp(store=store, settings=GREEDY)
    async with app.run_test(size=(110, 40)) as pilot:
        job = RecordedJob(clock, RECORDED_MANIFEST)
        run = PersonalizeRun(app, job, None, in_chat=True)
        app.personalize_run = run
        run.start()
        for wait, event in recorded_events(3):
            clock.now += wait
            job.queue.put(event)
        # the chat's model gives the run's worker the cores: one llama.cpp thread meanwhile
        await wait_until(lambda: app.engine is not None, pilot)
        assert app.engine.n_threads == 1
        await pilot.press("f6")
        screen = app.screen
        assert isinstance(screen, PersonalizeScreen) and screen.run is run
        await wait_until(lambda: run.progress.phases["train"].step == 3, pilot)
        await pilot.press("c")
        assert app.screen is app.chat_screen
        assert "personalizing" in str(app.status.render()) and "left (F6)" in str(app.status.render())
        for phase in ("merge", "convert", "verify", "evaluate"):
            job.queue.put(Event("phase", {"phase": phase, "detail": ""}))
        job.queue.put(Event("progress", {"phase": "evaluate", "step": 5, "total": 50}))
        await wait_until(lambda: run.progress.phases["evaluate"].step == 5, pilot)
        await pilot.press("f6")
        screen = app.screen
        assert isinstance(screen, PersonalizeScreen) and screen.run is run  # the same run, not a new one
        await pilot.pause()
        assert str(screen.query_one("#text-evaluate").render()) == "5 of 50"
        assert str(screen.query_one("#label-evaluate").render()).startswith("▶")
        job.queue.put(None)
        await wait_until(lambda: run.state == "done", pilot)
        await pilot.pause()
        assert "✓ Learned 7 of 7 facts." in str(screen.query_one("#report-text").render())
        assert app.engine.n_threads == default_threads()  # every core again
        await pilot.press("escape")
        assert app.personalize_run is None and "personaliz" not in str(app.status.render())


async def test_personalize_without_pairs_says_why_and_leaves_no_run(store):
    from tunechat.tui.screens.personalize import PersonalizeScreen

    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("f6")
        assert isinstance(app.screen, PersonalizeScreen)
        assert "could not start" in str(app.screen.query_one("#report-text").render())
        assert app.personalize_run is None
        await pilot.press("escape")
        assert app.screen is app.chat_screen


async def test_f6_with_problem_pairs_says_them_first_and_n_opens_the_pairs(store):
    store.add_pair("Where do I live?", "You live in Oslo.")
    store.add_pair("gym membership", "You're a member of the gym on Gloucester Road.")
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("f6")
        dialog = app.screen
        assert isinstance(dialog, Confirm)
        said = str(dialog.query_one(".dialog-text").render())
        assert "1 question that asks nothing" in said and "gym membership" in said and "This will take about" in said
        await pilot.press("n")
        assert isinstance(app.screen, PairsScreen) and app.personalize_run is None


async def test_esc_cancels_a_run_and_nothing_is_said_of_it_afterwards(store):
    from tunechat.tui.screens.personalize import PersonalizeRun, PersonalizeScreen

    clock = Clock()
    app = NoSwitchApp(store=store, settings=GREEDY)
    async with app.run_test(size=(110, 40)) as pilot:
        job = RecordedJob(clock)
        run = PersonalizeRun(app, job, None, in_chat=True)
        app.personalize_run = run
        run.start()
        await wait_until(lambda: app.engine is not None, pilot)
        assert app.engine.n_threads == 1  # the run has the cores
        await app.push_screen(PersonalizeScreen(store))
        await pilot.press("escape")
        await wait_until(lambda: job.cancelled and not app.workers, pilot)
        await pilot.pause(0.2)
        assert app.screen is app.chat_screen and app.personalize_run is None
        assert app.engine is not None and app.engine.n_threads == default_threads()
        assert "personaliz" not in str(app.status.render())
        assert not [n for n in app._notifications if "finished" in str(n.message)]


def test_first_screen_snapshot(snap_compare, home):
    """A new user's empty chat says how to start; the hint goes once the chat has messages."""
    from tunechat.core.store import Store

    app = TunechatApp(store=Store(), settings=GREEDY)

    async def loaded(pilot):
        await wait_until(lambda: app.engine is not None and app.status.activity == "ready", pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 24), run_before=loaded)


async def test_the_empty_chat_hint_goes_with_the_first_message(store):
    from tunechat.tui.widgets.conversation import EMPTY_HINT

    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        conversation = app.chat_screen.conversation
        assert str(conversation.render()) == EMPTY_HINT
        await conversation.mount(MessageView("user", "Hi"))
        assert EMPTY_HINT not in str(conversation.render())
        await pilot.press("ctrl+n")
        assert str(app.chat_screen.conversation.render()) == EMPTY_HINT


def test_models_screen_snapshot(snap_compare, home, base_model):
    """F7: each entry's name and what it learned on two lines, nothing cut off; beside it the
    highlighted version's details."""
    from tunechat.core.store import Store

    scores = {"after": {"reliability": 1.0, "locality": 12 / 14, "no_borrowing": 0.5, "admits": 0.5},
              "scoped": {"reliability": 1.0, "locality": 1.0, "no_borrowing": 1.0, "admits": 0.5}}
    add_version(base_model, "personal-20260101-120000", pairs_count=7, method="replay-kl-para-greedy",
                metrics=scores)
    add_version(base_model, "personal-20260102-093000", pairs_count=9, method="replay-kl-para-greedy",
                metrics=scores)
    store = Store()
    store.set_setting("scope", "off")
    app = TunechatApp(store=store, settings=GREEDY)

    async def models(pilot):
        await wait_until(lambda: app.engine is not None and app.status.activity == "ready", pilot)
        await pilot.press("f7", "down", "down")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(90, 28), run_before=models)


async def test_a_version_that_does_not_load_is_not_left_current(store, tmp_path, base_model):
    """Chosen from the models screen (F7) or by rolling back, a version whose file is broken
    does not load: the model in use answers on, and the registry says so again, so the next
    start does not meet the broken one."""
    from tunechat.core.registry import Registry

    broken = add_version(base_model, "personal-broken")
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a header that ends there
    app = TunechatApp(store=store, settings=GREEDY)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        before = Registry(store).state()
        name = app.status.model_name
        app._switch(lambda: app.registry.use("personal-broken"))
        await wait_until(lambda: isinstance(app.screen, Confirm), pilot)
        await pilot.press("n")
        assert Registry(store).state() == before
        assert Registry(store).current().name != "personal-broken"
        assert app.status.model_name == name and app.status.activity == "ready"
