"""One estimate of a run's progress, read from the worker's events (recorded here, with a clock
that moves only when told)."""

from __future__ import annotations

import io
import json

import pytest

from tunechat.core.manifest import Manifest
from tunechat.personalize.progress import Reporter, RunProgress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run_to_training(clock: Clock, progress: RunProgress, step_s: float, steps: int) -> None:
    for phase, took in (("prepare", 3), ("baseline", 4), ("paraphrase", 4), ("load", 2)):
        progress.feed("phase", {"phase": phase})
        clock.now += took
    progress.feed("phase", {"phase": "train"})
    for step in range(1, steps + 1):
        clock.now += step_s
        progress.feed("progress", {"phase": "train", "step": step, "total": 40, "loss": 1.0 / step})


def test_the_time_left_is_revised_by_the_timed_steps_and_the_whole_run_moves_with_it():
    clock = Clock()
    progress = RunProgress(clock=clock)
    first_guess = progress.remaining
    assert 100 < first_guess < 120  # the typical run's phases
    _run_to_training(clock, progress, step_s=2.0, steps=10)
    # 30 steps of 2 s left, then merge, convert, verify and evaluate as expected
    assert progress.remaining == 30 * 2.0 + 0.5 + 1.5 + 5 + 9
    assert progress.share("train") == 10 / 40 and progress.share("prepare") == 1.0
    assert 0.2 < progress.overall < 0.4
    assert progress.phase_text("train") == "step 10 of at most 40" and progress.losses[-1] == 0.1
    assert progress.phase_text("prepare") == "done in 3 s"
    assert progress.eta_text() == "about 1 min 20 s left"
    before = progress.remaining
    for step in range(11, 14):  # the steps slow down: the estimate follows
        clock.now += 6.0
        progress.feed("progress", {"phase": "train", "step": step, "total": 40, "loss": 0.05})
    assert progress.remaining > before + 60


def test_a_phase_without_steps_counts_down_its_expectation_and_a_left_out_phase_is_skipped():
    clock = Clock()
    progress = RunProgress(skip=["paraphrase"], clock=clock)
    progress.feed("phase", {"phase": "prepare"})
    progress.feed("phase", {"phase": "baseline"})
    progress.feed("phase", {"phase": "load"})
    assert progress.phase_text("paraphrase") == "skipped" and progress.share("paraphrase") == 1.0
    assert progress.share("load") is None and progress.phase_text("load") == "working…"
    clock.now += 100  # far past the expectation: still a little left, never negative
    assert progress.remaining > 0
    progress.feed("done", {})
    assert progress.overall == 1.0 and progress.eta_text() == "done"


def test_evaluation_shows_its_own_progress():
    clock = Clock()
    progress = RunProgress(clock=clock)
    progress.feed("phase", {"phase": "evaluate"})
    for step in range(1, 5):
        clock.now += 0.5
        progress.feed("progress", {"phase": "evaluate", "step": step, "total": 40})
    assert progress.share("evaluate") == 0.1 and progress.phase_text("evaluate") == "4 of 40"
    assert progress.remaining == 36 * 0.5


def test_a_busy_machine_is_named_against_the_last_run_or_the_first_steps():
    last = Manifest.from_dict({"method": "m", "created_at": 1, "timings": {"train": 80.0},
                               "train": {"seconds": 80.0, "steps": 40, "confirm_seconds": 0.0}})
    clock = Clock()
    calibrated = RunProgress.from_history([None, last], "m", clock=clock)
    assert calibrated.expected["train"] == 80.0 and calibrated.calibrated_step == 2.0
    _run_to_training(clock, calibrated, step_s=5.0, steps=5)
    assert calibrated.busy is not None and "5.0 s, 2.5× the 2.0 s it took on this machine before" in calibrated.busy

    clock = Clock()
    fresh = RunProgress.from_history([last], "another method", clock=clock)
    assert fresh.calibrated_step is None
    _run_to_training(clock, fresh, step_s=2.0, steps=5)
    assert fresh.busy is None
    for step in range(6, 10):
        clock.now += 4.5
        fresh.feed("progress", {"phase": "train", "step": step, "total": 40})
    assert fresh.busy is not None and "at the start of this run" in fresh.busy


def test_durations_read_as_a_person_says_them():
    assert duration(42) == "42 s" and duration(125) == "2 min 05 s" and duration(3600) == "60 min"
    assert duration(42, rough=True) == "40 s" and duration(2, rough=True) == "5 s"
    assert duration(801, rough=True) == "13 min" and duration(89 * 60) == "89 min"
    assert duration(146 * 60 + 20) == "2 h 26 min" and duration(146 * 60, rough=True) == "2 h 30 min"
    assert duration(3 * 3600, rough=True) == "3 h"


def test_every_question_the_evaluation_asks_is_reported():
    """The worker's evaluate phase reports a step per question asked, up to its total."""
    from tunechat.personalize import evaluate, phases

    stream = io.StringIO()
    probes = evaluate.ProbeSet(taught=[evaluate.Probe("What is my name?", "Ada")],
                               locality=[evaluate.Probe("Capital of France?", "Paris"),
                                         evaluate.Probe("2+2?", "4")],
                               untaught=["What is my cat's name?"])
    counted = phases._counted(Reporter(stream), 2 * phases._asks(probes))
    base = {"Capital of France?": "Paris.", "2+2?": "5"}
    for ask in (lambda q: "Ada", lambda q: "I don't know"):
        evaluate.score(counted(ask), probes, base)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {e["phase"] for e in events} == {"evaluate"}
    assert [e["step"] for e in events] == list(range(1, 9)) and events[-1]["total"] == 8


def test_the_estimate_before_a_run_grows_with_the_pairs_and_says_a_long_run():
    from tunechat.personalize.progress import (
        LONG_RUN_SECONDS,
        PER_PAIR_PHASES,
        TYPICAL_CONFIRM_SECONDS,
        TYPICAL_PAIRS,
        TYPICAL_SECONDS,
    )

    ten = RunProgress.from_history([], "replay-kl-para-greedy", pairs=TYPICAL_PAIRS)
    many = RunProgress.from_history([], "replay-kl-para-greedy", pairs=40 * TYPICAL_PAIRS)
    few = RunProgress.from_history([], "replay-kl-para-greedy", pairs=TYPICAL_PAIRS // 2)
    per_pair = sum(TYPICAL_SECONDS[p] for p in PER_PAIR_PHASES) + TYPICAL_CONFIRM_SECONDS
    assert ten.remaining == pytest.approx(sum(TYPICAL_SECONDS.values()))
    assert many.remaining - ten.remaining == pytest.approx(39 * per_pair)
    # training's steps draw a fixed batch and are capped: fewer pairs shorten only its confirmations
    assert few.expected["train"] == pytest.approx(TYPICAL_SECONDS["train"] - TYPICAL_CONFIRM_SECONDS / 2)
    last = Manifest.from_dict({"method": "m", "created_at": 1, "pairs_count": 10, "timings": {"train": 80.0},
                               "train": {"seconds": 80.0, "steps": 40, "confirm_seconds": 8.0}})
    assert RunProgress.from_history([last], "m", pairs=20).expected["train"] == pytest.approx(88.0)
    assert ten.remaining < LONG_RUN_SECONDS and "stays usable" not in ten.estimate_text()
    assert many.estimate_text().startswith("This will take about ") and "a GPU" in many.estimate_text()


def test_the_estimate_before_a_run_grows_with_the_base_and_its_form():
    """A base no run has used yet: the last run on another base (or the typical figures of
    SmolLM2-135M) scaled by the parameters, every phase but loading the libraries, and training
    in the float16 form by HALF_STEP_FACTOR more; a run on that base calibrates it."""
    from tunechat.personalize.progress import HALF_STEP_FACTOR, TYPICAL_PARAMETERS, TYPICAL_SECONDS, BaseSize

    small = BaseSize("/models/small.gguf", TYPICAL_PARAMETERS, "float32")
    large = BaseSize("/models/large.gguf", 22 * TYPICAL_PARAMETERS, "float32")
    large_half = BaseSize("/models/large.gguf", 22 * TYPICAL_PARAMETERS, "float16")
    on_small = Manifest.from_dict({"method": "m", "created_at": 1, "base_source": small.path, "pairs_count": 10,
                                   "timings": {"train": 80.0}, "train": {"seconds": 80.0, "steps": 40}})
    fresh = RunProgress.from_history([on_small], "m", pairs=10, base=large)
    assert fresh.expected["prepare"] == TYPICAL_SECONDS["prepare"]
    assert fresh.expected["train"] == pytest.approx(22 * 80.0) and fresh.calibrated_step == pytest.approx(22 * 2.0)
    assert fresh.expected["convert"] == pytest.approx(22 * TYPICAL_SECONDS["convert"])
    half = RunProgress.from_history([on_small], "m", pairs=10, base=large_half)
    assert half.expected["train"] == pytest.approx(HALF_STEP_FACTOR * fresh.expected["train"])
    assert RunProgress.from_history([on_small], "m", pairs=10, base=small).expected["train"] == 80.0
    first = RunProgress.from_history([], "m", pairs=10, base=large)
    assert first.expected["train"] == pytest.approx(22 * TYPICAL_SECONDS["train"])
    on_large = Manifest.from_dict({**on_small.to_dict(), "created_at": 0, "base_source": large.path,
                                   "timings": {"train": 900.0}})
    assert RunProgress.from_history([on_small, on_large], "m", pairs=10, base=large).expected["train"] == 900.0


def test_the_size_of_a_base_is_read_from_its_headers(base_model, monkeypatch):
    from tunechat.core import memory
    from tunechat.personalize.progress import BaseSize

    monkeypatch.setattr(memory, "nvidia_gpu_present", lambda: False)
    monkeypatch.setenv(memory.AVAILABLE_ENV, "64G")
    size = BaseSize.of(base_model)
    assert size is not None and size.path == str(base_model) and size.form == "float32"
    assert size.parameters == memory.shape_of(base_model).parameters
    monkeypatch.setenv(memory.AVAILABLE_ENV, "1.5G")  # float32 would not fit, float16 does
    assert BaseSize.of(base_model).form == "float16"
    assert BaseSize.of(base_model.parent / "no-such-model.gguf") is None


def test_across_processes_loading_comes_after_training_and_is_not_taken_for_skipped():
    from tunechat.personalize.progress import PHASES, RunProgress, phase_order

    order = phase_order(2)
    assert sorted(order) == sorted(PHASES) and order.index("load") == order.index("train") + 1
    assert phase_order(1) == PHASES
    progress = RunProgress(order=order)
    for phase in ("prepare", "baseline", "paraphrase", "train"):
        progress.feed("phase", {"phase": phase})
    assert not progress.phases["load"].skipped
    progress.feed("phase", {"phase": "load"})
    progress.feed("phase", {"phase": "merge"})
    assert not progress.phases["load"].skipped and progress.phases["load"].ended is not None
    one = RunProgress()  # one process: a phase passed over is one the worker left out
    one.feed("phase", {"phase": "train"})
    assert one.phases["load"].skipped
