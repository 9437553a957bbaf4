"""The user's data: chats, messages, training pairs and settings, in one SQLite database.

The schema is versioned with ``PRAGMA user_version`` and upgraded by the ordered
``MIGRATIONS`` list. WAL journaling plus a commit per change means a crash or a kill at any
moment loses at most the change in flight, never one already made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunechat.core import paths

if TYPE_CHECKING:
    from tunechat.core.faults import Fault

# Each entry upgrades the schema from version i to i + 1. Never edit a shipped entry; append.
MIGRATIONS: list[str] = [
    # 0 -> 1: chats, messages, pairs
    """
    CREATE TABLE chats (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        system_prompt TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_by_chat ON messages(chat_id, id);
    CREATE TABLE pairs (
        id INTEGER PRIMARY KEY,
        question TEXT NOT NULL CHECK (length(trim(question)) > 0),
        answer TEXT NOT NULL CHECK (length(trim(answer)) > 0),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 1 -> 2: where a pair came from, and app settings
    """
    ALTER TABLE pairs ADD COLUMN source TEXT NOT NULL DEFAULT 'added';
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2 -> 3: who answered each message and who answers each chat, deleted with the chat
    # (they were settings keyed by chat id, which a new chat could inherit)
    """
    ALTER TABLE messages ADD COLUMN answered_by TEXT CHECK (answered_by IN ('personal', 'base', 'untold'));
    ALTER TABLE chats ADD COLUMN mode TEXT NOT NULL DEFAULT 'auto' CHECK (mode IN ('auto', 'personal', 'base'));
    UPDATE chats SET mode = (SELECT value FROM settings WHERE key = 'scope_mode:' || chats.id)
        WHERE (SELECT value FROM settings WHERE key = 'scope_mode:' || chats.id) IN ('personal', 'base');
    DELETE FROM settings WHERE key GLOB 'scope_mode:*';
    UPDATE messages SET answered_by = 'untold'
        WHERE role = 'assistant' AND content GLOB 'You haven''t told me * yet.';
    """,
    # 3 -> 4: a fact that changed: the older pair is retired (kept in history, not trained)
    # and points at the pair that replaced it
    """
    ALTER TABLE pairs ADD COLUMN retired_at REAL;
    ALTER TABLE pairs ADD COLUMN replaced_by INTEGER REFERENCES pairs(id) ON DELETE SET NULL;
    """,
    # 4 -> 5: why the side that answered a message was chosen ("speaks of you ("my")")
    """
    ALTER TABLE messages ADD COLUMN why TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

PAIR_SOURCES = ("kept", "corrected", "added", "imported")
INSERT_PAIR = "INSERT INTO pairs(question, answer, source, created_at, updated_at) VALUES (?,?,?,?,?)"


class StoreError(Exception):
    """A problem with the user's data that the user should be told about."""


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    system_prompt: str | None
    created_at: float
    updated_at: float
    mode: str = "auto"  # who answers its turns: "auto" (the scope rule), "personal" or "base"


@dataclass(frozen=True)
class Message:
    id: int
    chat_id: int
    role: str
    content: str
    answered_by: str | None = None  # an answer's source: "personal", "base", "untold"; None when unknown
    why: str | None = None  # why that side answered, in a few words (tunechat.core.turns.Decision.reason)


@dataclass(frozen=True)
class Pair:
    id: int
    question: str
    answer: str
    source: str
    created_at: float
    retired_at: float | None = None  # when a newer pair replaced it or the user retired it; not trained since
    replaced_by: int | None = None  # the pair that replaced it, when one did

    @property
    def retired(self) -> bool:
        return self.retired_at is not None


def validate_pair(question: str, answer: str, source: str = "added") -> tuple[str, str]:
    """Strip a pair and refuse an empty side (or an unknown source), with a message a user
    understands."""
    if source not in PAIR_SOURCES:
        raise StoreError(f"Unknown pair source {source!r}.")
    q, a = question.strip(), answer.strip()
    if not q:
        raise StoreError("The question is empty: a training pair needs a question.")
    if not a:
        raise StoreError("The answer is empty: a training pair needs an answer.")
    return q, a


def pair_key(question: str, answer: str) -> tuple[str, str]:
    """What two pairs that say the same share: case, spacing and punctuation aside."""
    def norm(text: str) -> str:
        kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.casefold())
        return " ".join(kept.split())
    return norm(question), norm(answer)


def pairs_fingerprint(pairs: Iterable[Pair]) -> str:
    """A stable hash of the pairs' content, recorded with each personal model."""
    h = hashlib.sha256()
    for p in sorted(pairs, key=lambda p: p.id):
        h.update(json.dumps([p.question, p.answer]).encode("utf-8"))
    return h.hexdigest()


class Store:
    """One connection to the database, safe to share between the UI and worker threads.

    When the database cannot be written (a read-only data folder, a full disk), it is opened
    read-only: reads go on, and every write raises ``fault`` saying why."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.database_path()
        self._lock = threading.RLock()
        self.fault: Fault | None = None  # why this store cannot be written; None: it can
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            for suffix in ("", "-wal", "-shm"):
                paths.make_private(Path(f"{self.path}{suffix}"))
            self.migrate()
        except sqlite3.Error as exc:
            self._open_read_only(exc)

    def _open_read_only(self, cause: sqlite3.Error) -> None:
        """Open the database for reading only, when ``cause`` is a fault of the machine that
        keeps it from being written; else raise StoreError. A database of an older schema is
        read from an upgraded copy in memory."""
        from tunechat.core.faults import classify

        fault = classify(cause, self.path.parent)
        if fault is None:
            raise StoreError(f"Cannot open the tunechat database {self.path}: {cause}") from cause
        opened = getattr(self, "_db", None)
        if opened is not None:
            with contextlib.suppress(sqlite3.Error):
                opened.close()
        try:
            self._db = _read_only_connection(self.path)
            if self.schema_version < SCHEMA_VERSION:
                memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
                self._db.backup(memory)
                self._db.close()
                self._db = memory
                self.migrate()
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA query_only=ON")
        except sqlite3.Error:
            raise fault from cause
        self.fault = fault

    # -- schema -------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, target: int = SCHEMA_VERSION) -> None:
        """Apply the migrations this database lacks, each in its own transaction."""
        with self._lock:
            current = self.schema_version
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer tunechat (schema {current}, this one "
                    f"knows {SCHEMA_VERSION}). Upgrade tunechat; the data was left untouched."
                )
            for version in range(current, target):
                script = MIGRATIONS[version]
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _split_sql(script):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {version + 1}")
                    self._db.execute("COMMIT")
                except Exception:
                    self._db.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def change_stamp(self) -> tuple[int, int]:
        """A value that moves whenever anything is committed to the database, by another
        connection (``PRAGMA data_version``) or by this one (rows it changed): cheap to poll,
        so a reader can re-read only after a change."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._db.total_changes

    def _tx(self) -> _Transaction:
        if self.fault is not None:
            raise self.fault
        return _Transaction(self._db, self._lock, self.path.parent)

    # -- chats --------------------------------------------------------------------------
    def create_chat(self, title: str = "New chat", system_prompt: str | None = None) -> Chat:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO chats(title, system_prompt, created_at, updated_at) VALUES (?,?,?,?)",
                (title, system_prompt, now, now),
            )
        return self.get_chat(_row_id(cur))

    def get_chat(self, chat_id: int) -> Chat:
        row = self._db.execute("SELECT * FROM chats WHERE id=?", (chat_id,)).fetchone()
        if row is None:
            raise StoreError(f"No chat with id {chat_id}.")
        return _chat(row)

    def list_chats(self) -> list[Chat]:
        rows = self._db.execute("SELECT * FROM chats ORDER BY updated_at DESC, id DESC").fetchall()
        return [_chat(r) for r in rows]

    def set_chat_mode(self, chat_id: int, mode: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE chats SET mode=? WHERE id=?", (mode, chat_id))

    def rename_chat(self, chat_id: int, title: str) -> None:
        title = title.strip()
        if not title:
            raise StoreError("A chat needs a name.")
        with self._tx() as db:
            db.execute("UPDATE chats SET title=?, updated_at=? WHERE id=?", (title, time.time(), chat_id))

    def set_system_prompt(self, chat_id: int, system_prompt: str | None) -> None:
        value = system_prompt.strip() if system_prompt else None
        with self._tx() as db:
            db.execute("UPDATE chats SET system_prompt=? WHERE id=?", (value or None, chat_id))

    def delete_chat(self, chat_id: int) -> None:
        """Delete a chat and its messages for real (rows gone, pages reclaimed by VACUUM)."""
        with self._tx() as db:
            db.execute("DELETE FROM chats WHERE id=?", (chat_id,))
        # On a connection of its own, so that the UI may call this from a thread while its
        # own reads go on: SQLite refuses VACUUM on a connection with a statement in progress.
        vacuum = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            vacuum.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            vacuum.execute("VACUUM")
        finally:
            vacuum.close()

    # -- messages -----------------------------------------------------------------------
    def add_message(self, chat_id: int, role: str, content: str, answered_by: str | None = None,
                    why: str | None = None) -> Message:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO messages(chat_id, role, content, created_at, answered_by, why) VALUES (?,?,?,?,?,?)",
                (chat_id, role, content, now, answered_by, why),
            )
            db.execute("UPDATE chats SET updated_at=? WHERE id=?", (now, chat_id))
        return Message(_row_id(cur), chat_id, role, content, answered_by, why)

    def update_message(self, message_id: int, content: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE messages SET content=? WHERE id=?", (content, message_id))

    def delete_message(self, message_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE id=?", (message_id,))

    def messages(self, chat_id: int) -> list[Message]:
        rows = self._db.execute(
            "SELECT id, chat_id, role, content, answered_by, why FROM messages WHERE chat_id=? ORDER BY id", (chat_id,)
        ).fetchall()
        return [Message(r["id"], r["chat_id"], r["role"], r["content"], r["answered_by"], r["why"]) for r in rows]

    def latest_chat(self) -> Chat | None:
        """The chat changed last, None when there is none."""
        chats = self.list_chats()
        return chats[0] if chats else None

    # -- pairs --------------------------------------------------------------------------
    def add_pair(self, question: str, answer: str, source: str = "added") -> Pair:
        q, a = validate_pair(question, answer, source)
        now = time.time()
        with self._tx() as db:
            cur = db.execute(INSERT_PAIR, (q, a, source, now, now))
        return self.get_pair(_row_id(cur))

    def add_pairs(self, items: list[tuple[str, str]], source: str = "imported") -> int:
        """Add many pairs in one transaction: all of them or none, less those already kept or
        given twice (``pair_key``: importing a file again adds nothing). Returns how many were
        added."""
        checked = [validate_pair(q, a, source) for q, a in items]
        now = time.time()
        with self._tx() as db:
            seen = {pair_key(r["question"], r["answer"]) for r in db.execute("SELECT question, answer FROM pairs")}
            fresh = []
            for q, a in checked:
                if pair_key(q, a) not in seen:
                    seen.add(pair_key(q, a))
                    fresh.append((q, a))
            checked = fresh
            db.executemany(INSERT_PAIR, [(q, a, source, now, now) for q, a in checked])
        return len(checked)

    def get_pair(self, pair_id: int) -> Pair:
        row = self._db.execute("SELECT * FROM pairs WHERE id=?", (pair_id,)).fetchone()
        if row is None:
            raise StoreError(f"No pair with id {pair_id}.")
        return _pair(row)

    def update_pair(self, pair_id: int, question: str, answer: str) -> None:
        q, a = validate_pair(question, answer)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE pairs SET question=?, answer=?, updated_at=? WHERE id=?", (q, a, time.time(), pair_id)
            )
            if cur.rowcount == 0:
                raise StoreError(f"No pair with id {pair_id}.")

    def delete_pair(self, pair_id: int) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM pairs WHERE id=?", (pair_id,))
            if cur.rowcount == 0:
                raise StoreError(f"No pair with id {pair_id}.")

    def pairs(self, search: str = "", retired: bool = False) -> list[Pair]:
        """The pairs in use (what training sees), or with ``retired`` the retired ones too;
        with ``search`` only those whose question or answer contains it."""
        where = [] if retired else ["retired_at IS NULL"]
        args: list[str] = []
        if search:
            where.append("(question LIKE ? OR answer LIKE ?)")
            args += [f"%{search}%"] * 2
        sql = "SELECT * FROM pairs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_pair(r) for r in self._db.execute(sql, args).fetchall()]

    def count_pairs(self) -> int:
        """How many pairs are in use (retired ones aside)."""
        return int(self._db.execute("SELECT count(*) FROM pairs WHERE retired_at IS NULL").fetchone()[0])

    def replace_pair(self, old_id: int, question: str, answer: str, source: str = "added") -> Pair:
        """A fact that changed: keep the new pair and retire ``old_id`` in one step. The old pair
        stays in history (``pairs(retired=True)``) and is not trained again."""
        q, a = validate_pair(question, answer, source)
        now = time.time()
        with self._tx() as db:
            old = db.execute("SELECT retired_at FROM pairs WHERE id=?", (old_id,)).fetchone()
            if old is None:
                raise StoreError(f"No pair with id {old_id}.")
            cur = db.execute(INSERT_PAIR, (q, a, source, now, now))
            new_id = _row_id(cur)
            db.execute("UPDATE pairs SET retired_at=?, replaced_by=?, updated_at=? WHERE id=?",
                       (now, new_id, now, old_id))
        return self.get_pair(new_id)

    def retire_pair(self, pair_id: int, replaced_by: int | None = None) -> None:
        """Stop training on a pair but keep it in history (``replaced_by``: the pair that
        supersedes it, when one does)."""
        now = time.time()
        with self._tx() as db:
            if replaced_by is not None and db.execute(
                    "SELECT 1 FROM pairs WHERE id=? AND retired_at IS NULL", (replaced_by,)).fetchone() is None:
                raise StoreError(f"No pair in use with id {replaced_by}.")
            cur = db.execute("UPDATE pairs SET retired_at=?, replaced_by=?, updated_at=? WHERE id=? "
                             "AND retired_at IS NULL", (now, replaced_by, now, pair_id))
            if cur.rowcount == 0:
                raise StoreError(f"No pair in use with id {pair_id}.")

    def restore_pair(self, pair_id: int) -> None:
        """Put a retired pair back in use."""
        with self._tx() as db:
            cur = db.execute("UPDATE pairs SET retired_at=NULL, replaced_by=NULL, updated_at=? WHERE id=? "
                             "AND retired_at IS NOT NULL", (time.time(), pair_id))
            if cur.rowcount == 0:
                raise StoreError(f"No retired pair with id {pair_id}.")

    # -- settings -----------------------------------------------------------------------
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, key: str, value: str | None) -> None:
        self.set_settings({key: value})

    def set_settings(self, values: dict[str, str | None]) -> None:
        """Several settings in one transaction (None deletes one)."""
        with self._tx() as db:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM settings WHERE key=?", (key,))
                else:
                    db.execute(
                        "INSERT INTO settings(key, value) VALUES (?,?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value),
                    )


def _chat(row: sqlite3.Row) -> Chat:
    return Chat(row["id"], row["title"], row["system_prompt"], row["created_at"], row["updated_at"], row["mode"])


def _pair(row: sqlite3.Row) -> Pair:
    return Pair(row["id"], row["question"], row["answer"], row["source"], row["created_at"],
                row["retired_at"], row["replaced_by"])


def _split_sql(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement


def _read_only_connection(path: Path) -> sqlite3.Connection:
    """``path`` opened read-only. Where SQLite cannot share it with writers (no ``-shm`` file
    can be created beside it), it is read as an immutable file, unless a write-ahead log holds
    changes that would then be missed; no file reads as an empty database."""
    if not path.is_file():
        return sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db
    except sqlite3.Error:
        wal = Path(f"{path}-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            raise
    return sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False, isolation_level=None)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, folder: Path) -> None:
        self._db, self._lock, self._folder = db, lock, folder

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as failed:
            self._lock.release()
            self._raise_fault(failed)
            raise
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
            elif self._db.in_transaction:  # SQLite rolls back by itself after some errors (a full disk)
                self._db.execute("ROLLBACK")
        except sqlite3.Error as failed:  # a commit the disk refused: nothing of it is kept
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._raise_fault(failed)
            raise
        finally:
            self._lock.release()
        if isinstance(exc, sqlite3.IntegrityError):
            raise StoreError(f"Refused: {exc}") from exc
        if isinstance(exc, sqlite3.Error):
            self._raise_fault(exc)

    def _raise_fault(self, cause: sqlite3.Error) -> None:
        """Raise the machine's fault behind ``cause`` (a read-only folder, a full disk), if any."""
        from tunechat.core.faults import classify

        fault = classify(cause, self._folder)
        if fault is not None:
            raise fault from cause


def _row_id(cursor: sqlite3.Cursor) -> int:
    """The id SQLite gave the row an INSERT just wrote."""
    if cursor.lastrowid is None:  # pragma: no cover - an INSERT always sets it
        raise StoreError("The database did not report the new row's id.")
    return cursor.lastrowid
