"""Where tunechat keeps what the user owns.

Everything lives under platformdirs' user data folder, or under ``$TUNECHAT_HOME`` when set
(tests, or people who want their data elsewhere). Folders are created private (0700) and
files private (0600): pairs and chats are personal data.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "tunechat"


def home() -> Path:
    """The root folder for every file the app writes."""
    override = os.environ.get("TUNECHAT_HOME")
    root = Path(override).expanduser() if override else Path(platformdirs.user_data_dir(APP_NAME))
    return ensure_private_dir(root)


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(path, 0o700)
    except PermissionError:  # a folder the user pointed us at but does not own
        pass
    return path


def database_path() -> Path:
    return home() / "tunechat.db"


def models_dir() -> Path:
    return ensure_private_dir(home() / "models")


def cache_dir() -> Path:
    """Derived data that can be rebuilt: dequantized base weights, the base's answers.

    ``$TUNECHAT_CACHE`` moves it (tests share one warm cache between many homes)."""
    override = os.environ.get("TUNECHAT_CACHE")
    return ensure_private_dir(Path(override).expanduser() if override else home() / "cache")


def jobs_dir() -> Path:
    """Scratch space for personalize runs; a killed job leaves only this behind."""
    return ensure_private_dir(home() / "jobs")


def make_private(path: Path) -> None:
    try:
        os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
