"""The worker's progress protocol, and the one estimate of a run's progress read from it.

Events, one JSON object per line on the protocol stream:
        {"event": "phase", "phase": ..., "detail": ...}
        {"event": "progress", "phase": ..., "step": n, "total": n, "loss": x, "eta": s}
        {"event": "done", "result": {...}}   {"event": "error", "message": ...}

``RunProgress`` turns them into what the TUI and the CLI show: each phase's share done, the
whole run's, one time left (revised as steps are timed) and whether the machine is busy.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, get_args

from tunechat.core.manifest import Manifest

# The parent passes its pid to the worker in this variable (the worker exits when orphaned).
PARENT_ENV = "TUNECHAT_WORKER_PARENT"

EventKind = Literal["phase", "progress", "done", "error", "log"]  # "log": a line that is not JSON
# The worker's phases, in order (the TUI draws one progress bar over them).
Phase = Literal["prepare", "baseline", "paraphrase", "load", "train", "merge", "convert", "verify", "evaluate"]
PHASES: list[Phase] = list(get_args(Phase))


def phase_order(processes: int = 1) -> list[Phase]:
    """The phases in the order the worker runs them: training across processes, the ranks load
    the base themselves, and the worker loads it after them (tunechat.personalize.worker)."""
    if processes <= 1:
        return list(PHASES)
    order = [p for p in PHASES if p != "load"]
    after = order.index("train") + 1
    return [*order[:after], "load", *order[after:]]


class Reporter:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    @classmethod
    def take_stdout(cls) -> Reporter:
        """Keep the real stdout for the protocol and send everything else printed (by
        libraries, or by llama.cpp's C code) to stderr, so stray output never breaks a line."""
        sys.stdout.flush()
        protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(protocol)

    def emit(self, event: EventKind, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")
        self.stream.flush()

    def phase(self, phase: Phase, detail: str = "") -> None:
        self.emit("phase", phase=phase, detail=detail)

    def progress(self, phase: Phase, step: int, total: int, loss: float | None = None,
                 eta: float | None = None) -> None:
        fields: dict[str, Any] = {"phase": phase, "step": step, "total": total}
        if loss is not None:
            fields["loss"] = round(loss, 5)
        if eta is not None:
            fields["eta"] = round(eta, 1)
        self.emit("progress", **fields)


PHASE_TITLES: dict[Phase, str] = {
    "prepare": "Getting ready", "baseline": "Base model's answers", "paraphrase": "Rewording questions",
    "load": "Loading weights", "train": "Training", "merge": "Merging", "convert": "Writing the model",
    "verify": "Checking files", "evaluate": "Scoring",
}
# Seconds per phase of the default method, warm, on 2 cores (bench/results/personalize.txt):
# the estimate until this machine's own runs, or this run's steps, say better.
TYPICAL_SECONDS: dict[Phase, float] = {
    "prepare": 3.0, "baseline": 4.0, "paraphrase": 4.0, "load": 2.0, "train": 78.0, "merge": 0.5,
    "convert": 1.5, "verify": 5.0, "evaluate": 9.0,
}
TYPICAL_PAIRS = 10  # the pairs TYPICAL_SECONDS was measured on
TYPICAL_PARAMETERS = 134_515_008  # ... and the base's parameters (SmolLM2-135M)
# A step in the float16 form (tunechat.personalize.half: weights widened per product, every
# layer computed again in the backward pass) against a float32 step of the same base:
# bench/scale.py at Qwen2.5-1.5B's shape, 30.6 s against 20.3 s once warm (docs/benchmarks.md).
HALF_STEP_FACTOR = 1.5
# Of TYPICAL_SECONDS["train"], the greedy stop's confirmations (every wording of every pair
# asked): the part of training that grows with the pairs. The steps themselves do not: each
# draws a fixed batch, and the stop caps their number (bench/personalize.py: 40 steps of 3.0 s
# and 6 s of confirmations on 10 pairs).
TYPICAL_CONFIRM_SECONDS = 4.0
# Phases whose work grows with the pairs (a question each to answer, reword or ask).
PER_PAIR_PHASES: tuple[Phase, ...] = ("baseline", "paraphrase", "evaluate")
LONG_RUN_SECONDS = 300.0  # longer than this, the user is told before the run starts
BUSY_FACTOR = 1.8  # steps this much slower than calibrated: the machine is busy with something else
RECENT_STEPS = 3  # steps whose median is "now"


@dataclass(frozen=True)
class BaseSize:
    """What the estimate needs of the base: which one, its parameters, the form it will train in."""

    path: str
    parameters: int
    form: str

    @classmethod
    def of(cls, base: Path, weights: str | None = None) -> BaseSize | None:
        """Read from the base's headers (no torch); the form as the worker will pick it (float32
        on CUDA) unless ``weights`` says; None when the headers cannot be read."""
        from tunechat.core import memory

        try:
            form = weights or memory.training_form(base)
            return cls(str(base), memory.shape_of(base).parameters, form)
        except (OSError, ValueError, KeyError):
            return None


def _parameters_of(run: Manifest) -> int:
    """The parameters of the base an earlier run trained (its GGUF's header), SmolLM2-135M's
    when that file is gone."""
    from tunechat.core import memory

    try:
        return memory.shape_of(Path(run.base_path or "")).parameters if run.base_path else TYPICAL_PARAMETERS
    except (OSError, ValueError, KeyError):
        return TYPICAL_PARAMETERS


@dataclass
class PhaseState:
    started: float | None = None
    ended: float | None = None
    skipped: bool = False
    step: int = 0
    total: int = 0
    step_times: list[float] = field(default_factory=list)  # when each step's event arrived


class RunProgress:
    """Where a run stands. Feed it every event; read each phase's share, the whole run's,
    ``remaining`` seconds and ``busy``. Phases not started are expected to take what this
    machine's last run of the method took (``from_history``), else ``TYPICAL_SECONDS``, scaled
    by how much slower or faster the phases done so far went than expected."""

    def __init__(self, expected: Mapping[Phase, float] | None = None, step_seconds: float | None = None,
                 skip: Iterable[Phase] = (), clock: Callable[[], float] = time.monotonic,
                 order: Sequence[Phase] = PHASES) -> None:
        self.expected: dict[Phase, float] = {**TYPICAL_SECONDS, **(expected or {})}
        self.calibrated_step = step_seconds  # a training step's seconds on this machine, when known
        self.clock = clock
        self.start = clock()
        self.order = list(order)  # the phases as the worker runs them (phase_order)
        self.phases: dict[Phase, PhaseState] = {p: PhaseState(skipped=p in set(skip)) for p in self.order}
        self.current: Phase | None = None
        self.losses: list[float] = []
        self.finished = False

    @classmethod
    def from_history(cls, manifests: Iterable[Manifest | None], method: str, skip: Iterable[Phase] = (),
                     clock: Callable[[], float] = time.monotonic, pairs: int | None = None,
                     base: BaseSize | None = None, processes: int = 1) -> RunProgress:
        """Calibrated by the newest earlier run of ``method`` on this machine, if any, and
        scaled to ``pairs`` from the pairs that run (or ``TYPICAL_SECONDS``) had: the phases that
        work pair by pair take proportionally longer. With ``base``, a run on another base (or
        ``TYPICAL_SECONDS``, measured on SmolLM2-135M) is scaled to it: every phase but loading
        the libraries grows with the parameters, and training in the float16 form by
        ``HALF_STEP_FACTOR`` (bench/scale.py measures both)."""
        runs = sorted((m for m in manifests if m is not None and m.method == method and m.timings),
                      key=lambda m: m.created_at)
        same = [m for m in runs if base is not None and base.path in (m.base_source, m.base_path)]
        expected: dict[Phase, float] = dict(TYPICAL_SECONDS)
        step, measured_on, confirm = None, TYPICAL_PAIRS, TYPICAL_CONFIRM_SECONDS
        last = (same or runs)[-1] if runs else None
        if last is not None:
            expected.update({p: float(s) for p, s in last.timings.items() if p in PHASES})
            train = last.train
            step = ((train.seconds - train.confirm_seconds) / train.steps
                    if train.seconds and train.steps else None)
            measured_on = last.pairs_count or TYPICAL_PAIRS
            confirm = float(train.confirm_seconds or 0.0)
        if base is not None and not same:
            size = base.parameters / (_parameters_of(last) if last is not None else TYPICAL_PARAMETERS)
            expected = {p: s if p == "prepare" else s * size for p, s in expected.items()}
            confirm *= size
            step = step * size if step is not None else None
            if base.form == "float16" and (last is None or last.train.weights != "float16"):
                expected["train"] *= HALF_STEP_FACTOR
                step = step * HALF_STEP_FACTOR if step is not None else None
        if pairs:
            scale = pairs / measured_on
            for phase in PER_PAIR_PHASES:
                expected[phase] *= scale
            expected["train"] += confirm * (scale - 1)  # only the confirmations grow
        return cls(expected, step, skip, clock, phase_order(processes))

    def estimate_text(self) -> str:
        """Before the run: roughly how long it will take, and a word when that is long."""
        total = self.remaining
        text = f"This will take about {duration(total, rough=True)} on this machine"
        if total > LONG_RUN_SECONDS:
            text += ("; the chat stays usable meanwhile. Fewer pairs, or a GPU, make it shorter"
                     if total > 2 * LONG_RUN_SECONDS else "; the chat stays usable meanwhile")
        return text + "."

    # -- events -------------------------------------------------------------------------
    def feed(self, kind: str, data: Mapping[str, Any]) -> None:
        now = self.clock()
        phase = data.get("phase")
        if kind in ("done", "error"):
            self._end_current(now)
            self.finished = True
        elif kind == "phase" and phase in self.phases:
            if phase != self.current:
                self._end_current(now)
                for earlier in self.order[:self.order.index(phase)]:  # a phase the worker left out
                    if self.phases[earlier].started is None:
                        self.phases[earlier].skipped = True
                self.current = phase
                state = self.phases[phase]
                state.started, state.skipped = now, False
        elif kind == "progress" and phase in self.phases:
            if phase != self.current:
                self.feed("phase", {"phase": phase})
            state = self.phases[phase]
            state.step, state.total = int(data.get("step", 0)), int(data.get("total", 0))
            state.step_times.append(now)
            if phase == "train" and data.get("loss") is not None:
                self.losses.append(float(data["loss"]))

    def _end_current(self, now: float) -> None:
        if self.current is not None and self.phases[self.current].ended is None:
            self.phases[self.current].ended = now

    # -- reading ------------------------------------------------------------------------
    def share(self, phase: Phase) -> float | None:
        """How much of ``phase`` is done, 0 to 1; None while it runs without counting steps."""
        state = self.phases[phase]
        if state.ended is not None or state.skipped:
            return 1.0
        if state.started is None:
            return 0.0
        return min(1.0, state.step / state.total) if state.total else None

    def seconds(self, phase: Phase) -> float | None:
        """How long ``phase`` took, or has taken so far."""
        state = self.phases[phase]
        if state.started is None:
            return None
        return (state.ended if state.ended is not None else self.clock()) - state.started

    def step_seconds(self, phase: Phase = "train") -> float | None:
        """The current seconds per step of ``phase``: the median of its last steps (the first
        step, which also sets up, left out)."""
        times = self.phases[phase].step_times
        gaps = [b - a for a, b in zip(times, times[1:])][-RECENT_STEPS:]
        return statistics.median(gaps) if gaps else None

    @property
    def speed(self) -> float:
        """How long the finished phases took against their expectation (2.0: twice as long)."""
        took = expected = 0.0
        for phase, state in self.phases.items():
            if state.ended is not None and state.started is not None and self.expected[phase] >= 1.0:
                took += state.ended - state.started
                expected += self.expected[phase]
        return min(5.0, max(0.5, took / expected)) if expected else 1.0

    @property
    def remaining(self) -> float:
        """Seconds left in the whole run, by one rule: the current phase from its own timed
        steps where it counts them, every phase to come from its expectation."""
        if self.finished:
            return 0.0
        left = 0.0
        for phase, state in self.phases.items():
            if state.skipped or state.ended is not None:
                continue
            expected = self.expected[phase] * self.speed
            if state.started is None:
                left += expected
                continue
            per_step = self.step_seconds(phase)
            if state.total and per_step is not None:
                left += per_step * max(0, state.total - state.step)
            elif state.total and state.step:
                elapsed = self.clock() - state.started
                left += elapsed / state.step * max(0, state.total - state.step)
            else:
                left += max(expected - (self.clock() - state.started), 0.1 * expected)
        return left

    @property
    def overall(self) -> float:
        """The whole run's share done, 0 to 1, in time."""
        if self.finished:
            return 1.0
        spent = self.clock() - self.start
        return spent / (spent + self.remaining) if spent + self.remaining > 0 else 0.0

    @property
    def busy(self) -> str | None:
        """A sentence when training steps run much slower than calibrated (this machine's last
        run, else the fastest of this run's first steps): something else is using the machine."""
        now = self.step_seconds("train")
        times = self.phases["train"].step_times
        if now is None or len(times) < RECENT_STEPS + 1 or self.phases["train"].ended is not None:
            return None
        reference, source = self.calibrated_step, "on this machine before"
        if reference is None:
            gaps = [b - a for a, b in zip(times, times[1:])]
            reference, source = min(gaps[:RECENT_STEPS]), "at the start of this run"
        if now < BUSY_FACTOR * reference:
            return None
        return (f"The machine is busy: a training step takes {now:.1f} s, {now / reference:.1f}× the "
                f"{reference:.1f} s it took {source}.")

    def phase_text(self, phase: Phase) -> str:
        """What a phase's row says beside its bar."""
        state = self.phases[phase]
        took = self.seconds(phase)
        if state.skipped:
            return "skipped"
        if state.ended is not None and took is not None:
            return f"done in {duration(took)}"
        if state.started is None:
            return ""
        if phase == "train" and state.total:
            return f"step {state.step} of at most {state.total}"
        if state.total:
            return f"{state.step} of {state.total}"
        return "working…"

    def eta_text(self) -> str:
        return "done" if self.finished else f"about {duration(self.remaining, rough=True)} left"


def duration(seconds: float, rough: bool = False) -> str:
    """"45 s", "2 min 05 s", "2 h 25 min"; ``rough``: rounded as an estimate deserves ("about
    2 min 10 s", "about 2 h 30 min")."""
    s = max(0, round(seconds))
    if rough:
        s = (max(5, round(s / 5) * 5) if s < 60 else round(s / 10) * 10 if s < 600
             else round(s / 60) * 60 if s < 5400 else round(s / 600) * 600)
    if s < 60:
        return f"{s} s"
    minutes, rest = divmod(s, 60)
    if minutes >= 90:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h" if minutes == 0 else f"{hours} h {minutes:02d} min"
    return f"{minutes} min" if rest == 0 or minutes >= 10 else f"{minutes} min {rest:02d} s"
