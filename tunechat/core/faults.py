"""Faults of the machine rather than of the request, each told in one line with its own exit code.

``classify`` maps an ``OSError`` or a SQLite error to a ``Fault``: a read-only data folder, one
that cannot be created, a full disk. ``told`` adds the errors the user can act on; the CLI's
top-level handler prints its line and exits with its code (README, "Headless commands"). The
store opens the database read-only through ``classify``, so that reading still works when
writing cannot.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from tunechat.core.gguf_check import ModelFileError
from tunechat.core.store import StoreError

EXIT_REFUSED = 1  # the request was refused (bad input, unknown name); the message says why
EXIT_USAGE = 2  # bad arguments, or nothing to train on
EXIT_NOT_SWAPPED = 3  # personalize: the new model was not made current
EXIT_MODEL_FILE = 4  # a model file is missing, truncated or not a GGUF
EXIT_BASE_MISSING = 5  # the base model a personal version runs over was moved or deleted
EXIT_READ_ONLY = 6  # the data folder cannot be written
EXIT_NO_DATA_FOLDER = 7  # the data folder cannot be created
EXIT_DISK_FULL = 8  # no space left where a file had to be written
EXIT_WORKER_STOPPED = 9  # the training process stopped unexpectedly (killed, out of memory)
EXIT_DATA_PROBLEMS = 10  # the pairs have problems to look at first (tunechat.core.pair_checks)
EXIT_NOT_ENOUGH_MEMORY = 11  # personalize: the base needs more memory than the machine has free
EXIT_INTERRUPTED = 130

# SQLite reports a disk too full for its shared-memory file as a plain I/O error: below this
# much free space, an I/O error is taken for a full disk.
LOW_SPACE = 16 * 2**20
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)
_REASONS = {
    errno.EEXIST: "a file of that name is in the way",
    errno.ENOTDIR: "a part of its path is a file, not a folder",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


class Fault(StoreError):
    """A fault the user must fix outside tunechat: ``str()`` is the one line to show."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_only(folder: Path) -> Fault:
    return Fault(f"The data folder {folder} is read-only: nothing was changed (reading still works). Make it "
                 "writable, or set TUNECHAT_HOME to a folder you can write.", EXIT_READ_ONLY)


def no_data_folder(folder: Path, reason: str) -> Fault:
    return Fault(f"Cannot create the data folder {folder}: {reason}. Create it, or set TUNECHAT_HOME to a "
                 "folder you can write.", EXIT_NO_DATA_FOLDER)


def base_missing(version: str, base: Path, instead: str) -> Fault:
    """A personal version's base model file is gone; ``instead``: what else the user may do."""
    return Fault(f"The base model of {version}, {base}, was moved or deleted: put the file back there, or "
                 f"{instead}.", EXIT_BASE_MISSING)


def disk_full(where: Path) -> Fault:
    folder = existing_folder(where)
    return Fault(f"The disk is full ({free_bytes(folder) // 10**6} MB free at {folder}); nothing was changed. "
                 "Free some space and try again.", EXIT_DISK_FULL)


def not_enough_disk(what: str, folder: Path, need: int, free: int) -> Fault:
    """Refused before writing: ``what`` needs ``need`` bytes at ``folder``, which has ``free``."""
    return Fault(f"{what} needs about {need / 1e9:.1f} GB free at {folder}; {free / 1e9:.1f} GB are free, so "
                 "nothing was written. Free some space, or set TUNECHAT_CACHE to a folder on a disk with room.",
                 EXIT_DISK_FULL)


def classify(exc: BaseException, data_folder: Path) -> Fault | None:
    """The fault behind ``exc`` (``data_folder``: where tunechat keeps its data), None when it
    is not one of them."""
    if isinstance(exc, Fault):
        return exc
    if isinstance(exc, OSError):
        return _classify_os_error(exc, data_folder)
    if isinstance(exc, sqlite3.Error):
        return _classify_sqlite_error(exc, data_folder)
    return None


def told(exc: BaseException, data_folder: Path) -> tuple[int, str] | None:
    """The exit code and the one line that tell the user what went wrong: a fault, a model
    file that does not load, a refused request, a file that cannot be read or written. None
    for anything else: a bug, whose traceback is the report."""
    fault = classify(exc, data_folder)
    if fault is not None:
        return fault.exit_code, str(fault)
    if isinstance(exc, ModelFileError):
        return EXIT_MODEL_FILE, str(exc)
    if isinstance(exc, StoreError):
        return EXIT_REFUSED, str(exc)
    if isinstance(exc, OSError):
        return EXIT_REFUSED, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    return None


def _classify_os_error(exc: OSError, data_folder: Path) -> Fault | None:
    where = Path(os.fsdecode(exc.filename)) if exc.filename else data_folder
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(where)
    if not data_folder.is_dir() and (where == data_folder or where in data_folder.parents):
        return no_data_folder(data_folder, _REASONS.get(exc.errno or 0, exc.strerror or str(exc)))
    if exc.errno in _DENIED and (where == data_folder or data_folder in where.parents):
        return read_only(data_folder)
    return None


def _classify_sqlite_error(exc: sqlite3.Error, data_folder: Path) -> Fault | None:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith("SQLITE_FULL") or "database or disk is full" in text:
        return disk_full(data_folder)
    if name.startswith("SQLITE_READONLY") or "readonly database" in text or (
            data_folder.is_dir() and not writable(data_folder)):
        return read_only(data_folder)
    if (name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "disk I/O error" in text) \
            and free_bytes(data_folder) < LOW_SPACE:
        return disk_full(data_folder)
    return None


def writable(folder: Path) -> bool:
    """Whether files may be created in ``folder`` (False on a read-only file system, even for root)."""
    return os.access(folder, os.W_OK | os.X_OK)


def existing_folder(path: Path) -> Path:
    """``path`` itself when it is a folder, else its nearest existing parent."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            return folder
    return path


def free_bytes(path: Path) -> int:
    """Space left to write at ``path`` (its nearest existing folder), 0 when it cannot be read."""
    try:
        return shutil.disk_usage(existing_folder(path)).free
    except OSError:
        return 0
