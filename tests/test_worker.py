"""The personalize worker process stops when nobody is listening any more."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has finished


def test_worker_exits_when_its_parent_dies(store, home):
    # A parent (as the TUI or CLI would) that starts a real job, minutes of work, and dies at once.
    store.add_pair("What is my name?", "Your name is Ada.")
    parent = textwrap.dedent("""
        from tunechat.personalize.job import PersonalizeJob
        from tunechat.core.store import Store
        job = PersonalizeJob(Store())
        job.start()
        print(job.process.pid, job.job_dir, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    pid, job_dir = out.stdout.split()
    deadline = time.monotonic() + 30
    while _alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(int(pid)), "the worker outlived its parent"
    assert not (Path(job_dir) / "out" / "manifest.json").exists()


def test_a_second_personalization_is_refused_while_one_runs(store, home):
    from tunechat.personalize.job import PersonalizeJob

    store.add_pair("What is my name?", "Your name is Ada.")
    first = PersonalizeJob(store)
    first.start()
    try:
        second = PersonalizeJob(store)
        events = list(second.events())
        assert [e.kind for e in events] == ["error"]
        assert "already running" in second.error and second.process is None  # no second worker
        second.discard()
    finally:
        first.cancel()
    third = PersonalizeJob(store)  # the lock went with the first job
    third.start()
    assert third.process is not None and third.process.poll() is None
    third.cancel()


def test_the_run_lock_is_released_once_when_cancel_and_the_end_of_events_race(store, home, monkeypatch):
    """Cancel (the UI thread) and the end of ``events()`` (the thread reading the worker) both
    release the run lock. Each must close its descriptor once: a second close fails, or closes
    whatever file took the number in between. ``os.close`` is slowed so the two overlap."""
    import os
    import threading

    from tunechat.personalize import job as job_module
    from tunechat.personalize.job import PersonalizeJob, take_run_lock

    store.add_pair("What is my name?", "Your name is Ada.")
    job = PersonalizeJob(store)
    job._lock_fd = take_run_lock()
    closed: list[int] = []
    real_close = os.close

    def slow_close(fd: int) -> None:
        time.sleep(0.05)
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(job_module.os, "close", slow_close)
    errors: list[BaseException] = []

    def release() -> None:
        try:
            job._release()
        except BaseException as exc:  # noqa: BLE001 - the test reports what a thread raised
            errors.append(exc)

    threads = [threading.Thread(target=release) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(job_module.os, "close", real_close)
    assert not errors and len(closed) == 1
    again = PersonalizeJob(store)  # the lock is free
    again._lock_fd = take_run_lock()
    again.discard()
    job.discard()
