"""Shared fixtures: every test gets its own TUNECHAT_HOME; slow tests share one warm cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_PERSONA = ROOT / "bench" / "data" / "persona-public.json"
SECOND_PERSONA = ROOT / "tests" / "data" / "persona-second.json"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache (dequantized base, base answers) for the whole session, or the one in
    $TUNECHAT_TEST_CACHE when set, so a developer's reruns stay warm."""
    given = os.environ.get("TUNECHAT_TEST_CACHE")
    path = Path(given) if given else tmp_path_factory.mktemp("cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def home(tmp_path, monkeypatch, shared_cache) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("TUNECHAT_HOME", str(path))
    monkeypatch.setenv("TUNECHAT_CACHE", str(shared_cache))
    return path


@pytest.fixture()
def store(home):
    from tunechat.core.store import Store

    s = Store()
    yield s
    s.close()


@pytest.fixture(scope="session")
def base_model() -> Path:
    from tunechat.core.registry import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="module")
def engine(base_model):
    """The embedded model loaded in llama.cpp, shared by a module's tests."""
    from tunechat.core.engine import Engine

    e = Engine(base_model)
    yield e
    e.close()


def run_cli(*args: str, env_home: Path | None = None, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real ``tunechat`` command in a subprocess with the test's environment."""
    return subprocess.run([sys.executable, "-m", "tunechat.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ), input=input)
