"""The personalize worker process: data, base, train, merge, convert, verify, evaluate.

Run as ``python -m tunechat.personalize.worker JOB_DIR``. Reads ``JOB_DIR/job.json``, writes the
candidate model into ``JOB_DIR/out/`` (manifest last), and reports JSON lines on stdout
(see ``tunechat.personalize.progress``). It never touches the current model or the models folder:
installing the result is the parent's decision (``tunechat.personalize.job``).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

from tunechat.core.manifest import MANIFEST_FILE, Manifest
from tunechat.core.wording import count
from tunechat.personalize.heap import give_back_memory
from tunechat.personalize.progress import PARENT_ENV, Phase, Reporter
from tunechat.personalize.spec import JobSpec


class Timings(dict[str, float]):
    """Seconds spent in each phase, reported to the parent as each one starts, and each
    phase's peak resident memory (``peaks``, MiB; Linux only: empty elsewhere)."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter
        self.peaks: dict[str, float] = {}

    @contextmanager
    def phase(self, name: Phase, detail: str = "") -> Iterator[None]:
        self.reporter.phase(name, detail)
        _reset_peak_rss()
        start = time.monotonic()
        yield
        self[name] = round(self.get(name, 0.0) + time.monotonic() - start, 2)
        peak = _peak_rss_mib()
        if peak is not None:
            self.peaks[name] = max(self.peaks.get(name, 0.0), peak)


def _reset_peak_rss() -> None:
    """Start the process's peak RSS (VmHWM) again from what it holds now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run(job_dir: Path, reporter: Reporter) -> Manifest:
    """Every phase in turn (tunechat.personalize.phases); the new model lands in ``job_dir/out``."""
    spec = JobSpec.read(job_dir)
    timings = Timings(reporter)
    with timings.phase("prepare", "loading libraries"):
        from tunechat.core.engine import Engine
        from tunechat.personalize import phases

        job = phases.prepare(spec, reporter)
    with timings.phase("baseline", "the base model's answers (cached after the first run)"):
        base = phases.baseline(job)
    rewordings: dict[str, list[str]] = {}
    if job.recipe.paraphrases:
        with timings.phase("paraphrase", "the base model rewords your questions (cached per pair)"):
            rewordings = phases.reword(job)
    form = ("" if job.form == "float32" else " in float16 (as asked)" if job.spec.weights
            else " in float16 (float32 would not fit this machine's memory)")
    trained = f"{count(len(job.pairs), 'pair')}, method {job.recipe.name}"
    after = job  # where the trained model is loaded and checked
    if spec.processes > 1:  # the ranks load and train; this process then loads the base once, for what follows
        from tunechat.personalize.launch import train_across

        with timings.phase("train", f"{trained}, across {spec.processes} processes"):
            state, result = train_across(job_dir, spec.processes, job.form, base.replayed(), rewordings, reporter)
        after = phases.offloaded(job)  # a base sharded across devices need not fit one of them
        with timings.phase("load", f"base weights on {after.device}{form}, with the trained adapter"):
            loaded = phases.load(after, base.replayed(), rewordings)
            phases.take_adapter(loaded, state)
    else:
        with timings.phase("load", f"base weights on {job.device}{form}"):
            loaded = phases.load(job, base.replayed(), rewordings)
        with timings.phase("train", trained):
            result = phases.train_adapter(job, loaded)
    give_back_memory()
    out = job_dir / "out"
    out.mkdir(exist_ok=True)
    with timings.phase("merge", "folding the adapter into the weights"):
        merged = phases.merge(job, loaded, out)
    with timings.phase("convert", f"writing the adapter and the GGUF ({job.outtype})" if job.write_merged
                       else "writing the adapter (the base is large: no merged copy)"):
        written = phases.convert(job, merged, out)
        phases.record_pairs(job, out)
    with ExitStack() as engines:  # both llama.cpp engines are closed whatever raises below
        with timings.phase("verify", "checking the new files before they can be used, and which questions are yours"):
            torch_side = phases.torch_side(after, loaded, merged)
            del loaded, merged  # the torch model goes before llama.cpp maps the new files
            give_back_memory()
            adapted = engines.enter_context(closing(Engine(job.base_gguf, lora_path=written.adapter)))
            engine = (engines.enter_context(closing(Engine(written.model))) if written.model is not None
                      else adapted)
            checks = phases.verify(job, torch_side, engine, adapted, written)
            probe = phases.fit_scope_probe(job, adapted, out)
        evaluation = None
        if not spec.skip_eval:
            with timings.phase("evaluate", "scoring the new model"):
                evaluation = phases.evaluate_model(job, base, engine, adapted, probe)
    return phases.manifest(job, base, rewordings, result, checks, evaluation, written, timings, timings.peaks)


def exit_when_orphaned(poll_s: float = 1.0) -> None:
    """Stop when the parent (the TUI or the CLI) is gone, instead of training for nobody:
    a daemon thread watches for the process being re-parented. The parent passes its pid,
    since it may already be gone by the time this runs. A process that leads its process group
    (the worker, a rank) ends the group with it: torchrun and the ranks it started."""
    import signal
    import threading

    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                if os.getpgrp() == os.getpid():
                    os.killpg(os.getpgrp(), signal.SIGTERM)  # this process among them
                os._exit(3)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    job_dir = Path(args[0])
    exit_when_orphaned()
    reporter = Reporter.take_stdout()
    try:
        manifest = run(job_dir, reporter)
        manifest.write(job_dir / "out" / MANIFEST_FILE)
        reporter.emit("done", result=manifest.to_dict())
        return 0
    except Exception as exc:  # reported to the parent as a clear message, traceback to stderr
        traceback.print_exc()
        reporter.emit("error", **told(exc))
        return 1


def told(exc: Exception) -> dict:
    """The error event's message and the CLI's exit code for it (tunechat.core.faults)."""
    from tunechat.core import faults, paths
    from tunechat.personalize.launch import RanksFailed

    if isinstance(exc, RanksFailed):
        return {"message": str(exc), "code": exc.code}

    told = faults.told(exc, paths.data_folder())
    if told is not None:
        return {"message": told[1], "code": told[0]}
    return {"message": str(exc) if _is_user_error(exc) else f"{type(exc).__name__}: {exc}",
            "code": faults.EXIT_REFUSED}


def _is_user_error(exc: Exception) -> bool:
    from tunechat.personalize.data import EmptyDatasetError

    try:
        from tunechat.convert.architectures import UnsupportedArchitecture
    except Exception:  # pragma: no cover
        UnsupportedArchitecture = ()  # type: ignore
    from tunechat.core.gguf_check import ModelFileError
    from tunechat.personalize.checks import TokenizerMismatch

    return isinstance(exc, (EmptyDatasetError, UnsupportedArchitecture, ModelFileError, TokenizerMismatch))


if __name__ == "__main__":
    raise SystemExit(main())
