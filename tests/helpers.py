"""Test helpers: poll for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from typing import Callable


async def wait_until(condition: Callable[[], bool], pilot=None, timeout: float = 120.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        if pilot is not None:
            await pilot.pause(interval)
        else:
            await asyncio.sleep(interval)
