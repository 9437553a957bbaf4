"""Faults of the machine, each told by the real command in one line with its own exit code, and
nothing lost: a read-only data folder, one that cannot be created, a full disk, a killed
training process, a base model moved away (a model file that is not there: test_cli.py).

Tests run as root, whom permissions do not stop, so a read-only folder and a full disk are
made at the lowest layer, in the command's own process (``install``): the system calls and
SQLite's open fail as they do on such a disk (``EROFS``, ``ENOSPC``, SQLite's "disk I/O error"
and "database or disk is full"). Where this machine lets a test mount file systems in a user
namespace, the same commands also run on a real read-only mount and a real full disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tunechat.core import faults

RUN = """
import sys
from tests.test_faults import install
install(sys.argv[1])
from tunechat.cli import main
raise SystemExit(main(sys.argv[2:]))
"""
READ_ONLY_LINE = "is read-only: nothing was changed (reading still works)"


def run_with(fault: str, *args: str) -> subprocess.CompletedProcess:
    """``tunechat ARGS`` in a process whose data folder has ``fault`` (see ``install``)."""
    return subprocess.run([sys.executable, "-c", RUN, fault, *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=dict(os.environ))


def install(fault: str) -> None:
    """Make the data folder fail as a real one does: "read-only" (a read-only mount),
    "full" (a full disk: SQLite cannot even size its shared-memory file, so only an immutable
    read opens), "full-on-write" (the disk filled while the database was open)."""
    from tunechat.core import paths

    folder = paths.data_folder().resolve()
    inside = lambda path: folder in (p := Path(os.fsdecode(path)).resolve(), *p.parents)  # noqa: E731
    real_mkdir, real_chmod, real_access, real_open = os.mkdir, os.chmod, os.access, os.open
    real_connect = sqlite3.connect

    def fail(code: int, path) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))

    def mkdir(path, mode=0o777, **kw):
        if inside(path) and not os.path.isdir(path):
            raise fail(errno.EROFS if fault == "read-only" else errno.ENOSPC, path)
        return real_mkdir(path, mode, **kw)

    def chmod(path, mode, **kw):
        if fault == "read-only" and inside(path):
            raise fail(errno.EROFS, path)
        return real_chmod(path, mode, **kw)

    def access(path, mode, **kw):
        return False if fault == "read-only" and mode & os.W_OK and inside(path) else real_access(path, mode, **kw)

    def open_(path, flags, mode=0o777, **kw):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and inside(path):
            raise fail(errno.EROFS if fault == "read-only" else errno.ENOSPC, path)
        return real_open(path, flags, mode, **kw)

    def connect(database, *args, **kw):
        target = str(database).removeprefix("file://").split("?")[0]
        if not inside(target):
            return real_connect(database, *args, **kw)
        if fault == "read-only" and "mode=ro" not in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        if fault == "full" and "immutable=1" not in str(database):
            raise sqlite3.OperationalError("disk I/O error")
        db = real_connect(database, *args, **kw)
        if fault == "full-on-write":
            db.execute("PRAGMA max_page_count = 1")  # as far as SQLite may grow the file: its size now
        return db

    Usage = namedtuple("Usage", "total used free")
    os.mkdir, os.chmod, os.access, os.open = mkdir, chmod, access, open_
    sqlite3.connect = connect
    shutil.disk_usage = lambda path: Usage(10**9, 10**9 - 2_500_000, 2_500_000)


@pytest.fixture()
def kept(home):
    """A data folder with a pair and a setting in it, written before the fault."""
    assert run_cli("pairs", "add", "What is my name?", "Ada Quill.").returncode == 0
    assert run_cli("scope", "off").returncode == 0
    return home


def told(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    """The command failed with ``code`` and said ``text`` in one line, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert text in lines[-1] and lines[-1].startswith("tunechat: "), result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_only_data_folder_is_read_and_refuses_writes_in_one_line(kept):
    listed = run_with("read-only", "pairs", "list")
    assert listed.returncode == 0, listed.stderr
    assert "Ada Quill." in listed.stdout and "1 pair" in listed.stderr
    assert "smollm2-135m" in run_with("read-only", "models").stdout
    assert "scope off" in run_with("read-only", "scope").stdout
    asked = run_with("read-only", "ask", "What is the capital of Japan?", "--max-tokens", "16")
    assert asked.returncode == 0 and "Tokyo" in asked.stdout, asked.stderr
    for command in (["pairs", "add", "q", "a"], ["pairs", "delete", "1"], ["scope", "on"],
                    ["models", "use", "smollm2-135m"], ["personalize"], []):  # []: the chat, which keeps messages
        told(run_with("read-only", *command), faults.EXIT_READ_ONLY, f"The data folder {kept} {READ_ONLY_LINE}")
    assert "Ada Quill." in run_cli("pairs", "list").stdout and "scope off" in run_cli("scope").stdout


def test_an_old_database_in_a_read_only_folder_is_read_through_an_upgraded_copy(home):
    from tunechat.core.store import MIGRATIONS

    home.mkdir(parents=True)
    db = sqlite3.connect(home / "tunechat.db")
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO pairs(question, answer, created_at, updated_at) VALUES ('Who am I?', 'Ada.', 0, 0)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    listed = run_with("read-only", "pairs", "list")
    assert listed.returncode == 0 and "Who am I?" in listed.stdout, listed.stderr
    assert sqlite3.connect(home / "tunechat.db").execute("PRAGMA user_version").fetchone()[0] == 1  # untouched


def test_a_missing_data_folder_is_created_private_or_the_reason_is_told(home, tmp_path, monkeypatch):
    assert not home.exists()
    assert run_cli("pairs", "list").returncode == 0
    assert home.stat().st_mode & 0o777 == 0o700
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for folder, reason in ((blocker / "home", "a part of its path is a file, not a folder"),
                           (blocker, "a file of that name is in the way")):
        monkeypatch.setenv("TUNECHAT_HOME", str(folder))
        told(run_cli("pairs", "list"), faults.EXIT_NO_DATA_FOLDER, f"Cannot create the data folder {folder}: {reason}")
    monkeypatch.setenv("TUNECHAT_HOME", str(tmp_path / "read-only" / "home"))
    told(run_with("read-only", "pairs", "list"), faults.EXIT_NO_DATA_FOLDER,
         f"Cannot create the data folder {tmp_path / 'read-only' / 'home'}: the file system is read-only")


def test_a_full_disk_is_named_with_its_free_space_and_reading_goes_on(kept, tmp_path):
    listed = run_with("full", "pairs", "list")
    assert listed.returncode == 0 and "Ada Quill." in listed.stdout, listed.stderr
    assert "scope off" in run_with("full", "scope").stdout
    full = f"The disk is full (2 MB free at {kept}); nothing was changed. Free some space and try again."
    for command in (["pairs", "add", "q", "a"], ["models", "use", "smollm2-135m"], ["personalize"]):
        told(run_with("full", *command), faults.EXIT_DISK_FULL, full)
    told(run_with("full", "pairs", "export", str(kept / "out.jsonl")), faults.EXIT_DISK_FULL, full)
    assert not list(kept.glob("*.jsonl*"))
    # The disk fills while the database is open: the write fails whole, what was kept stays.
    told(run_with("full-on-write", "pairs", "add", "What is my story?", "Long ago. " * 1000),
         faults.EXIT_DISK_FULL, full)
    assert run_cli("pairs", "list").stdout.count("\n") == 1


def test_a_killed_training_process_leaves_its_log_where_the_message_says(kept, tmp_path, monkeypatch):
    """The worker is killed (SIGKILL) as it starts; its log outlives the job folder, and only
    the last few logs are kept."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "if 'tunechat.personalize.worker' in sys.orig_argv:\n"
        "    print('the worker started', file=sys.stderr, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    logs = kept / "logs"
    logs.mkdir()
    for i in range(6):
        (logs / f"job-20000101-00000{i}-aaaaaa.log").write_text("old")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    result = run_cli("personalize")
    told(result, faults.EXIT_WORKER_STOPPED, "The training process stopped unexpectedly (killed by SIGKILL). Details: ")
    log = Path(result.stderr.strip().splitlines()[-1].split("Details: ")[1])
    assert log.parent == logs and "the worker started" in log.read_text()
    assert not list((kept / "jobs").glob("job-*"))
    assert sorted(p.name for p in logs.iterdir()) == [*[f"job-20000101-00000{i}-aaaaaa.log" for i in range(2, 6)],
                                                      log.name]


def test_a_base_model_moved_away_is_named_with_what_to_do(home, tmp_path, base_model):
    from tests.helpers import random_lora_gguf
    from tunechat.core import paths
    from tunechat.core.manifest import MANIFEST_FILE, Manifest

    moved = tmp_path / "base.gguf"  # where the base was when the version was made
    version = paths.models_dir() / "personal-test"
    version.mkdir()
    random_lora_gguf(base_model, version / "adapter.gguf")
    Manifest(base_path=str(moved), created_at=1).write(version / MANIFEST_FILE)
    assert run_cli("pairs", "add", "What is my name?", "Ada.").returncode == 0
    assert run_cli("models", "use", "personal-test").returncode == 0
    gone = f"The base model of personal-test, {moved}, was moved or deleted: put the file back there, or "
    told(run_cli("ask", "What is my name?"), faults.EXIT_BASE_MISSING, gone + "use another model")
    told(run_cli("personalize"), faults.EXIT_BASE_MISSING, gone + "personalize another base")
    told(run_cli("export", str(tmp_path / "out")), faults.EXIT_BASE_MISSING, gone + "export another version")
    assert not (tmp_path / "out").exists()


# -- the real thing, where this machine allows mounts in a user namespace ------------------------

def in_namespace(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) as root of a new user and mount namespace; skip where not allowed."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user namespaces here: mounts cannot be made")
    return subprocess.run(["unshare", "-rm", "sh", "-ec", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ))


def test_on_a_real_read_only_mount(kept):
    cli = f"{sys.executable} -m tunechat.cli"
    result = in_namespace(f"mount --bind {kept} {kept}; mount -o remount,bind,ro {kept}\n"
                          f"{cli} pairs list; {cli} models\n"
                          f"{cli} pairs add q a || echo exit=$?")
    assert "Ada Quill." in result.stdout and "* smollm2-135m" in result.stdout, result.stderr
    assert f"exit={faults.EXIT_READ_ONLY}" in result.stdout and READ_ONLY_LINE in result.stderr
    assert "Traceback" not in result.stderr


def test_on_a_real_full_disk(kept, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    cli = f"TUNECHAT_HOME={disk} {sys.executable} -m tunechat.cli"
    result = in_namespace(f"mount -t tmpfs -o size=1m tunechat-test {disk}; cp {kept}/tunechat.db {disk}/\n"
                          f"dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null || true\n"
                          f"{cli} pairs list\n"
                          f"{cli} pairs add q a || echo exit=$?")
    assert "Ada Quill." in result.stdout, result.stderr
    assert f"exit={faults.EXIT_DISK_FULL}" in result.stdout
    assert f"The disk is full (0 MB free at {disk})" in result.stderr
    assert "Traceback" not in result.stderr
