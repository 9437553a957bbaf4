"""Where tunechat keeps what the user owns.

Everything lives under platformdirs' user data folder, or under ``$TUNECHAT_HOME`` when set
(tests, or people who want their data elsewhere). Folders are created private (0700) and
files private (0600): pairs and chats are personal data. Reading creates nothing inside the data
folder, so a read-only one can still be read (``tunechat.core.faults``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import platformdirs

APP_NAME = "tunechat"


def data_folder() -> Path:
    """The root folder for every file the app writes, as configured (it may not exist yet)."""
    override = os.environ.get("TUNECHAT_HOME")
    return Path(override).expanduser() if override else Path(platformdirs.user_data_dir(APP_NAME))


def home() -> Path:
    """The root folder for every file the app writes, created when missing."""
    return ensure_private_dir(data_folder())


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (0700) when missing; an existing folder is made private where it can be
    (not one the user pointed us at but does not own, nor one on a read-only file system)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _chmod(path, 0o700)
    return path


def database_path() -> Path:
    return home() / "tunechat.db"


def models_dir(create: bool = True) -> Path:
    """The personal versions' folder (``create=False``: as it is, maybe missing, for reading)."""
    return ensure_private_dir(home() / "models") if create else home() / "models"


def cache_dir() -> Path:
    """Derived data that can be rebuilt: dequantized base weights, the base's answers.

    ``$TUNECHAT_CACHE`` moves it (tests share one warm cache between many homes)."""
    override = os.environ.get("TUNECHAT_CACHE")
    return ensure_private_dir(Path(override).expanduser() if override else home() / "cache")


def jobs_dir() -> Path:
    """Scratch space for personalize runs; a killed job leaves only this behind."""
    return ensure_private_dir(home() / "jobs")


def logs_dir() -> Path:
    """The logs of personalizations that failed, the last few kept."""
    return ensure_private_dir(home() / "logs")


def make_private(path: Path) -> None:
    _chmod(path, 0o600)


def _chmod(path: Path, mode: int) -> None:
    """Best effort: a missing file, one we do not own, or a read-only file system keeps its mode."""
    try:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES, errno.EROFS):
            raise
