import os
import sqlite3
import stat

import pytest

from tunechat.core.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError


def test_fresh_database_is_migrated_to_latest_and_uses_wal(store):
    assert store.schema_version == SCHEMA_VERSION
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_database_and_folder_are_private(store, home):
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_migration_from_version_one_keeps_pairs(home):
    path = home / "old.db"
    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO pairs(question, answer, created_at, updated_at) VALUES ('Q?', 'A.', 0, 0)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    [pair] = store.pairs()
    assert (pair.question, pair.answer, pair.source) == ("Q?", "A.", "added")
    store.set_setting("k", "v")  # the table added by migration 2 exists
    assert store.get_setting("k") == "v"


def test_newer_schema_is_refused_untouched(home):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "future.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer tunechat"):
        Store(path)


def test_empty_question_or_answer_is_refused(store):
    with pytest.raises(StoreError, match="question is empty"):
        store.add_pair("   ", "answer")
    with pytest.raises(StoreError, match="answer is empty"):
        store.add_pair("question", "\n")
    assert store.count_pairs() == 0


def test_pairs_crud_and_search(store):
    a = store.add_pair("What is my name?", "Ada", source="kept")
    store.add_pair("Where do I live?", "Tromsø")
    assert [p.question for p in store.pairs("tromsø")] == ["Where do I live?"]
    store.update_pair(a.id, "What is my name?", "Ada Quill")
    assert store.get_pair(a.id).answer == "Ada Quill"
    store.delete_pair(a.id)
    assert store.count_pairs() == 1
    with pytest.raises(StoreError):
        store.delete_pair(a.id)


def test_importing_the_same_pairs_again_adds_nothing(store):
    store.add_pair("What is my name?", "Ada Quill.")
    added = store.add_pairs([("what is my name", "Ada  Quill"), ("Where do I live?", "Tromsø."),
                             ("Where do I live ?", "tromsø"), ("Where do I live?", "Oslo.")])
    assert added == 2  # the first is kept already, the third says the second again
    assert [(p.question, p.answer) for p in store.pairs()][1:] == [("Where do I live?", "Tromsø."),
                                                                   ("Where do I live?", "Oslo.")]
    assert store.add_pairs([(p.question, p.answer) for p in store.pairs()]) == 0


def test_add_pairs_is_all_or_nothing(store):
    with pytest.raises(StoreError):
        store.add_pairs([("q1", "a1"), ("q2", "")])
    assert store.count_pairs() == 0


def test_deleted_chat_is_gone_from_the_file(store):
    chat = store.create_chat("secret chat")
    store.add_message(chat.id, "user", "my bank pin is 98127364")
    store.delete_chat(chat.id)
    assert store.list_chats() == []
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob("tunechat.db*"))
    assert b"98127364" not in raw


def test_chats_rename_system_prompt_and_messages(store):
    chat = store.create_chat()
    store.rename_chat(chat.id, "Trip planning")
    store.set_system_prompt(chat.id, "Be brief.")
    store.add_message(chat.id, "user", "hi")
    store.add_message(chat.id, "assistant", "hello")
    got = store.get_chat(chat.id)
    assert (got.title, got.system_prompt) == ("Trip planning", "Be brief.")
    assert [m.role for m in store.messages(chat.id)] == ["user", "assistant"]
    with pytest.raises(StoreError):
        store.rename_chat(chat.id, "  ")


def test_committed_pairs_survive_a_killed_process(home):
    import subprocess
    import sys

    code = (
        "import os; from tunechat.core.store import Store; s = Store(); "
        "s.add_pair('Q kept', 'A kept'); os._exit(9)"  # no close, no checkpoint
    )
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ), check=False)
    store = Store()
    assert [p.question for p in store.pairs()] == ["Q kept"]


def test_the_change_stamp_moves_on_every_commit_here_or_elsewhere_and_only_then(store):
    stamp = store.change_stamp()
    store.count_pairs()
    store.get_setting("current_model")
    assert store.change_stamp() == stamp  # reading changes nothing
    store.add_pair("What is my name?", "Ada")
    mine = store.change_stamp()
    assert mine != stamp  # this connection's own commit
    other = Store()
    other.set_setting("current_model", "elsewhere")
    other.close()
    assert store.change_stamp() != mine  # another connection's (another process's) commit


def test_who_answered_and_each_chat_s_mode_are_columns_deleted_with_the_chat(home):
    """A chat's mode was a setting keyed by its id: migration 3 moves it into the chat, and a
    deleted chat's mode is gone with it (ids are reused, and a new chat must start on auto)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "v2.db"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        db.executescript(script)
    db.execute("INSERT INTO chats(id, title, created_at, updated_at) VALUES (1, 'a', 0, 0), (2, 'b', 0, 0)")
    db.execute("INSERT INTO settings VALUES ('scope_mode:1', 'base'), ('scope_mode:9', 'personal')")
    db.execute("INSERT INTO messages(chat_id, role, content, created_at) VALUES "
               "(1, 'user', 'What is my cat''s name?', 0), "
               "(1, 'assistant', 'You haven''t told me your cat''s name yet.', 0)")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = Store(path)
    assert [store.get_chat(i).mode for i in (1, 2)] == ["base", "auto"]
    assert store.get_setting("scope_mode:1") is None and store.get_setting("scope_mode:9") is None
    # The chat's own replies of before are known by their words: never shown to a model again.
    assert [m.answered_by for m in store.messages(1)] == [None, "untold"]
    answer = store.add_message(1, "assistant", "Paris.", "base", "does not speak of you")
    assert store.messages(1)[-1] == answer and answer.answered_by == "base"
    assert answer.why == "does not speak of you"  # why it went there, kept with the answer (migration 5)
    with pytest.raises(StoreError):
        store.add_message(1, "assistant", "x", "nobody")
    store.set_chat_mode(2, "personal")
    assert store.get_chat(2).mode == "personal"
    store.delete_chat(2)
    again = store.create_chat()
    assert again.id == 2 and again.mode == "auto"  # the id is reused, the mode is not
    assert store.latest_chat() == again
    store.close()


def test_a_replaced_fact_is_retired_kept_in_history_and_not_in_use(store):
    old = store.add_pair("Where do I live?", "You live in Oslo.")
    other = store.add_pair("What is my name?", "Ada")
    new = store.replace_pair(old.id, "Where do I live?", "You live in Porto.")
    assert [p.id for p in store.pairs()] == [other.id, new.id]
    assert store.count_pairs() == 2
    history = {p.id: p for p in store.pairs(retired=True)}
    assert history[old.id].retired and history[old.id].replaced_by == new.id
    assert not history[new.id].retired
    assert [p.id for p in store.pairs("Oslo", retired=True)] == [old.id] and store.pairs("Oslo") == []
    with pytest.raises(StoreError, match="No pair in use"):
        store.retire_pair(old.id)  # retired already
    store.restore_pair(old.id)
    assert {p.id for p in store.pairs()} == {old.id, other.id, new.id}
    store.retire_pair(other.id)
    store.delete_pair(new.id)  # a pair that replaced another can go; the link goes with it
    assert store.count_pairs() == 1


def test_migration_from_version_three_keeps_pairs_in_use(home):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "v3.db"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        db.executescript(script)
    db.execute("INSERT INTO pairs(question, answer, created_at, updated_at) VALUES ('Q?', 'A.', 0, 0)")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = Store(path)
    [pair] = store.pairs()
    assert not pair.retired and pair.replaced_by is None
