"""Run a personalization from the TUI or the CLI: a worker process, its events, the install.

This module imports no torch: it spawns ``python -m tunechat.personalize.worker`` in a job folder,
turns its JSON lines into events, cancels it on request, and installs a finished, verified
model atomically (rename of a complete folder into ``models/``, then the switch).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunechat.core import paths
from tunechat.core.faults import EXIT_REFUSED, EXIT_WORKER_STOPPED
from tunechat.core.manifest import MANIFEST_FILE, Check, Manifest
from tunechat.core.memory import Form
from tunechat.core.registry import ADAPTER_FILE, MODEL_FILE, ModelEntry, Registry
from tunechat.core.store import Store, pairs_fingerprint
from tunechat.personalize.data import require_pairs
from tunechat.personalize.progress import PARENT_ENV, BaseSize, EventKind, Phase, RunProgress
from tunechat.personalize.recipe import DEFAULT_RECIPE
from tunechat.personalize.spec import JobSpec, Outtype

LOCALITY_THRESHOLD = 0.8  # below this share of kept general answers, swapping in needs consent (README)
KEPT_LOGS = 5  # the worker logs of failed runs kept in the data folder's logs/


PROCESSES_SETTING = "training_processes"  # store setting: how many processes train (default 1)


class PersonalizeError(Exception):
    pass


def training_processes(store: Store) -> int:
    """The processes a personalization trains in unless told otherwise (``tunechat processes``)."""
    value = store.get_setting(PROCESSES_SETTING) or "1"
    return int(value) if value.isdigit() and int(value) >= 1 else 1


@dataclass
class Event:
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    manifest: Manifest
    out_dir: Path

    @property
    def failed_checks(self) -> list[Check]:
        return self.manifest.failed_checks

    @property
    def locality_after(self) -> float | None:
        after = self.manifest.metrics.after
        return after.locality if after else None

    @property
    def needs_consent(self) -> bool:
        loc = self.locality_after
        return loc is not None and loc < LOCALITY_THRESHOLD


class PersonalizeJob:
    """One run. Iterate ``events()``; then ``install()`` the outcome, or ``cancel()``."""

    def __init__(self, store: Store, base: Path | None = None, recipe: str | None = None,
                 seed: int = 0, outtype: Outtype | None = None, max_steps: int | None = None,
                 recipe_overrides: dict[str, Any] | None = None, write_merged: bool | None = None,
                 ignore_memory: bool = False, weights: Form | None = None, processes: int | None = None) -> None:
        self.store = store
        self.registry = Registry(store)
        pairs = store.pairs()
        require_pairs([(p.question, p.answer) for p in pairs])
        self.base = base or self.registry.current().base_path
        clean_stale_jobs(max_age_s=6 * 3600)
        self.job_dir = paths.jobs_dir() / f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.job_dir.mkdir(mode=0o700)
        overrides = dict(recipe_overrides or {})
        if max_steps:
            overrides["max_steps"] = max_steps
        self.spec = JobSpec(
            pairs=[(p.question, p.answer) for p in pairs], base_path=self.base,
            pairs_sha256=pairs_fingerprint(pairs), recipe=recipe or DEFAULT_RECIPE,
            seed=seed, outtype=outtype, recipe_overrides=overrides, write_merged=write_merged,
            ignore_memory=ignore_memory, weights=weights,
            processes=processes or training_processes(store),
        )
        self.spec.write(self.job_dir)
        self.process: subprocess.Popen[str] | None = None
        self._lock_fd: int | None = None
        self._lock_fd_guard = threading.Lock()  # cancel (the UI) and events' end (a thread) both release
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.error_code = EXIT_REFUSED  # the CLI's exit code for ``error`` (tunechat.core.faults)
        self.log: Path | None = None  # a failed run's worker log, kept after its folder is gone
        self._cancelled = False

    def progress(self) -> RunProgress:
        """A fresh estimate of this run's progress, calibrated by this machine's earlier runs."""
        skip: list[Phase] = (["paraphrase"] if not self.spec.training_recipe().paraphrases else []) + (
            ["evaluate"] if self.spec.skip_eval else [])
        base = BaseSize.of(self.base, self.spec.weights)
        return RunProgress.from_history((e.manifest for e in self.registry.personal_versions()), self.spec.recipe,
                                        skip, pairs=len(self.spec.pairs), base=base,
                                        processes=self.spec.processes)

    def start(self) -> None:
        """Start the worker; refuse (PersonalizeError) while another personalization runs."""
        self._lock_fd = take_run_lock()
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env[PARENT_ENV] = str(os.getpid())
        # Shorter OpenMP spin-waits: as fast alone, 2.3x faster per step while the chat streams
        # on the same cores (measured).
        env.setdefault("GOMP_SPINCOUNT", "10000")
        self.stderr_log = open(self.job_dir / "worker.log", "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunechat.personalize.worker", str(self.job_dir)],
            stdout=subprocess.PIPE, stderr=self.stderr_log, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", env=env, start_new_session=True,
        )

    def events(self) -> Iterator[Event]:
        if self.process is None:
            try:
                self.start()
            except PersonalizeError as exc:
                self.error = str(exc)
                yield Event("error", {"message": self.error})
                return
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                yield Event("log", {"line": line.rstrip()})
                continue
            kind = raw.pop("event", "log")
            if kind == "done":
                self.outcome = Outcome(Manifest.from_dict(raw["result"]), self.job_dir / "out")
            elif kind == "error":
                self.error = raw.get("message", "unknown error")
                self.error_code = int(raw.get("code", EXIT_REFUSED))
            yield Event(kind, raw)
        code = self.process.wait()
        self.stderr_log.close()
        self._release()
        if self.outcome is None and not self._cancelled:
            self.log = keep_log(self.job_dir / "worker.log")
        if self.outcome is None and self.error is None:
            self.error_code = EXIT_WORKER_STOPPED
            self.error = (f"The training process stopped unexpectedly ({_how_it_ended(code)}). "
                          + (f"Details: {self.log}" if self.log else "Its log could not be kept."))
            yield Event("error", {"message": self.error})

    def cancel(self) -> None:
        """Stop the worker and remove its folder: the current model and the pairs are untouched."""
        self._cancelled = True
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
        self.discard()

    def discard(self) -> None:
        self._release()
        shutil.rmtree(self.job_dir, ignore_errors=True)

    def _release(self) -> None:
        """Drop the run lock, once: closing a descriptor twice could close whatever file took
        its number in between."""
        with self._lock_fd_guard:
            fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    def install(self, consent: bool = False) -> ModelEntry:
        """Make the finished model a version and the current model, or raise saying why not."""
        if self.outcome is None:
            raise PersonalizeError(self.error or "The personalization did not finish.")
        failed = self.outcome.failed_checks
        if failed:
            reasons = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            raise PersonalizeError(f"The new model failed its checks and was not swapped in ({reasons}).")
        if self.outcome.needs_consent and not consent:
            raise PersonalizeError(
                f"The new model kept only {self.outcome.locality_after:.0%} of the base model's general "
                f"answers (threshold {LOCALITY_THRESHOLD:.0%}); it was not swapped in without your consent."
            )
        self._check_unchanged(self.outcome)
        name = time.strftime("personal-%Y%m%d-%H%M%S")
        target = paths.models_dir() / name
        if target.exists():
            target = target.with_name(f"{name}-{uuid.uuid4().hex[:4]}")
        src = self.outcome.out_dir
        if not (src / MANIFEST_FILE).is_file():
            raise PersonalizeError("The new model is incomplete (no manifest); it was not swapped in.")
        os.replace(src, target)  # one rename: the version appears whole or not at all
        self.discard()
        return self.registry.use(target.name)


    @staticmethod
    def _check_unchanged(outcome: Outcome) -> None:
        """The files about to be swapped in are the ones that passed verification, whole."""
        from tunechat.core.fingerprint import file_fingerprint
        from tunechat.core.gguf_check import ModelFileError, check_gguf_file

        expected = {name: sha256 for name, sha256 in ((MODEL_FILE, outcome.manifest.model_sha256),
                                                      (ADAPTER_FILE, outcome.manifest.adapter_sha256))
                    if sha256 is not None}
        if not expected:
            raise PersonalizeError("The new model is incomplete (no model file); it was not swapped in.")
        for file_name, sha256 in expected.items():
            path = outcome.out_dir / file_name
            try:
                check_gguf_file(path)
            except ModelFileError as exc:
                raise PersonalizeError(f"The new model file is corrupt and was not swapped in: {exc}") from None
            if file_fingerprint(path) != sha256:
                raise PersonalizeError(f"The new {file_name} changed after it was verified; it was not swapped in.")


def take_run_lock() -> int:
    """An exclusive lock on the jobs folder for one running personalization: two at once
    (the chat and `tunechat personalize`, say) would halve each other's speed and race to
    install. The kernel drops the lock when its holder exits, even when killed."""
    import fcntl

    fd = os.open(paths.jobs_dir() / "running.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise PersonalizeError(
            f"Another personalization is already running (process {holder}); "
            "wait for it to finish or cancel it first."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def keep_log(log: Path) -> Path | None:
    """Move a failed run's worker log into the data folder's ``logs/`` before its job folder is
    removed, keeping the last ``KEPT_LOGS``; None when it cannot be kept (a read-only or full disk)."""
    try:
        logs = paths.logs_dir()
        target = logs / f"{log.parent.name}.log"
        os.replace(log, target)
        for old in sorted(logs.glob("job-*.log"))[:-KEPT_LOGS]:
            old.unlink(missing_ok=True)
    except OSError:
        return None
    return target


def _how_it_ended(code: int) -> str:
    """A worker's exit status in words: a signal by name (SIGKILL: killed, often for memory)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def clean_stale_jobs(max_age_s: float = 0) -> None:
    """Remove job folders that no process is writing (a killed app or worker leaves them)."""
    for folder in paths.jobs_dir().glob("job-*"):
        if time.time() - folder.stat().st_mtime >= max_age_s:
            shutil.rmtree(folder, ignore_errors=True)
