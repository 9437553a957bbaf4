"""Test helpers: poll for a condition instead of sleeping a fixed time; a stand-in version."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path


def add_version(base_model: Path, name: str = "personal-test", **manifest) -> Path:
    """A personal version folder whose model is a copy of ``base_model`` (what the registry
    and the chat need from a version, without training one); returns its model file."""
    from tunechat.core import paths
    from tunechat.core.manifest import MANIFEST_FILE, Manifest

    version = paths.models_dir() / name
    version.mkdir()
    shutil.copy(base_model, version / "model.gguf")
    Manifest(base_path=str(base_model), created_at=1, **manifest).write(version / MANIFEST_FILE)
    return version / "model.gguf"


async def wait_until(condition: Callable[[], bool], pilot=None, timeout: float = 120.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        if pilot is not None:
            await pilot.pause(interval)
        else:
            await asyncio.sleep(interval)
