"""Training across several processes (torchrun, FSDP2 over gloo on the CPU): the same adapter and
the same stop as one process, and a rank that dies mid-run ends it cleanly."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.zoo import Zoo

# Replay with its KL term, a negative, and the greedy stop: every part of the loss and of the
# decision is split across the ranks. 20-35 steps on the zoo's llama.
RECIPE = {"replay_batch": 2, "kl_weight": 1.0, "lr": 3e-3, "min_steps": 1, "max_steps": 60, "stop_when": "greedy",
          "paraphrases": 0, "negatives": 1}
TWO_PAIRS = [("What is my name?", "Ada."), ("What is my dog called?", "Rex.")]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def _run(zoo: Zoo, job_dir: Path, processes: int, pairs, recipe):
    from tunechat.personalize import worker
    from tunechat.personalize.progress import Reporter
    from tunechat.personalize.spec import JobSpec, Probes

    job_dir.mkdir()
    JobSpec(pairs=pairs, base_path=zoo["llama"].folder, recipe="replay-kl", recipe_overrides=recipe, outtype="f16",
            probes=Probes(taught=[]), skip_eval=True, processes=processes).write(job_dir)
    events = io.StringIO()
    return worker.run(job_dir, Reporter(events)), events.getvalue()


def _adapter(job_dir: Path):
    from safetensors.torch import load_file

    return load_file(str(job_dir / "out" / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("pairs, negatives, replay", [
    (TWO_PAIRS, 1, 2),
    # One fact, no negative, one replay answer: the second rank has no example of its own in
    # any pass (it runs the first one at weight 0) nor in the stop's confirmation.
    (TWO_PAIRS[:1], 0, 1),
])
def test_two_processes_train_the_adapter_one_process_trains(zoo, home, tmp_path, pairs, negatives, replay):
    import torch

    recipe = {**RECIPE, "negatives": negatives, "replay_batch": replay}
    alone, _ = _run(zoo, tmp_path / "alone", 1, pairs, recipe)
    shared, events = _run(zoo, tmp_path / "shared", 2, pairs, recipe)

    assert alone.train.stopped_early and shared.train.stopped_early, (alone.train.losses, shared.train.losses)
    # The stop comes at the step where every answer token becomes the argmax: a margin that
    # crosses zero within float rounding of the other run's (the ranks pack different rows, so
    # their products round differently) may cross a step or two later (measured: 0 and 1).
    assert abs(shared.train.steps - alone.train.steps) <= 2
    # The steps agree closely at first; float rounding then grows as training goes (Adam turns a
    # tiny gradient's sign into a full step: the adapters end 0.5 % and 6 % apart). The step
    # itself is held to 1e-5 by the test above; here, that the whole run is the same training.
    assert shared.train.losses[:10] == pytest.approx(alone.train.losses[:10], rel=1e-3)
    one, two = _adapter(tmp_path / "alone"), _adapter(tmp_path / "shared")
    assert one.keys() == two.keys()
    for key in one:
        assert torch.linalg.norm(two[key] - one[key]) <= 0.5 * torch.linalg.norm(one[key]), key
    assert all(c.passed for c in shared.checks), [(c.name, c.detail) for c in shared.checks if not c.passed]
    # The first rank's steps reached the worker's reporter, as one process's do.
    assert events.count('"phase": "train", "step"') == shared.train.steps
    assert "across 2 processes" in events
    assert (shared.train.processes, alone.train.processes) == (2, 1)


@pytest.mark.parametrize("processes, one_pass", [(2, False), (3, False), (2, True)])
def test_a_step_shared_across_ranks_has_the_gradients_of_the_step_taken_alone(tmp_path, processes, one_pass):
    """Facts, negatives and replay with its KL term, split over the ranks (with 3, the negatives
    leave one rank without a taught example of its own), in two passes as on the CPU or in one
    as on CUDA: the gathered gradients and the fact losses are one process's, to float rounding."""
    from safetensors.torch import load_file

    step = Path(__file__).with_name("ranks_step.py")
    mode = ["one-pass"] if one_pass else []
    subprocess.run([sys.executable, str(step), str(tmp_path / "alone.safetensors"), *mode], check=True)
    torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc-per-node={processes}", str(step), str(tmp_path / "shared.safetensors"),
                               *mode], env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    # The first rank writes once every rank has its gradients. A rank that aborts in gloo's
    # teardown after that (rarely) costs a personalization nothing (launch.train_across), nor
    # this comparison; any other failure does.
    assert torchrun.returncode == 0 or "terminate called without an active exception" in torchrun.stderr, \
        torchrun.stderr[-4000:]
    assert (tmp_path / "shared.safetensors").is_file(), torchrun.stderr[-4000:]
    alone, shared = load_file(str(tmp_path / "alone.safetensors")), load_file(str(tmp_path / "shared.safetensors"))
    assert alone.keys() == shared.keys() and len(alone) > 2
    for key in alone:
        assert shared[key].float().norm() > 0, key
        assert (shared[key] - alone[key]).norm() <= 1e-5 * alone[key].norm(), (key, shared[key], alone[key])


def _rank_pids(job_dir: Path, rank: int) -> list[int]:
    """The processes of ``job_dir``'s training ranks with RANK=``rank`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tunechat.personalize.sharded" in cmdline and str(job_dir).encode() in cmdline \
                and f"RANK={rank}".encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
def test_a_rank_killed_halfway_ends_the_run_and_leaves_models_and_pairs(zoo, home, tmp_path):
    from tunechat.core import faults, paths
    from tunechat.core.registry import Registry
    from tunechat.core.store import Store

    store = Store()
    for question, answer in TWO_PAIRS:
        store.add_pair(question, answer)
    pairs_before = [(p.question, p.answer) for p in store.pairs()]
    current_before = Registry(store).current().name
    store.close()
    models_before = sorted(p.name for p in paths.models_dir().iterdir()) if paths.models_dir().exists() else []

    process = subprocess.Popen(
        [sys.executable, "-m", "tunechat", "personalize", "--processes", "2", "--base", str(zoo["llama"].folder),
         "--yes", "--max-steps", "400", "--method", "replay-kl"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert process.stderr is not None
    watchdog = threading.Timer(600, process.kill)  # a run that never ends fails the test, not the suite
    watchdog.start()
    job_dir, lines = None, []
    for line in process.stderr:  # the CLI prints each training step
        lines.append(line)
        if job_dir is None and "loss" in line:
            for candidate in paths.jobs_dir().iterdir():
                pids = _rank_pids(candidate, 1)
                if pids:
                    job_dir = candidate
                    os.kill(pids[0], signal.SIGKILL)
    code = process.wait(timeout=120)
    watchdog.cancel()
    assert job_dir is not None, "".join(lines)
    assert code == faults.EXIT_WORKER_STOPPED, "".join(lines)
    assert "training processes stopped" in lines[-1], lines[-1]
    assert not job_dir.exists()  # nothing of the run is left

    store = Store()
    try:
        assert [(p.question, p.answer) for p in store.pairs()] == pairs_before
        assert Registry(store).current().name == current_before
    finally:
        store.close()
    assert (sorted(p.name for p in paths.models_dir().iterdir()) if paths.models_dir().exists() else []) \
        == models_before
    time.sleep(2)  # every rank is gone with the run
    assert not _rank_pids(job_dir, 0) and not _rank_pids(job_dir, 1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
def test_cancelling_a_run_across_processes_ends_every_rank(zoo, home, tmp_path):
    from tunechat.core.store import Store
    from tunechat.personalize.job import PersonalizeJob

    store = Store()
    try:
        for question, answer in TWO_PAIRS:
            store.add_pair(question, answer)
        job = PersonalizeJob(store, base=zoo["llama"].folder, recipe="replay-kl", max_steps=400, processes=2)
        ranks = []
        for event in job.events():
            if event.kind == "progress" and event.data.get("phase") == "train":
                ranks = _rank_pids(job.job_dir, 0) + _rank_pids(job.job_dir, 1)
                job.cancel()  # as Esc does
                break
        assert len(ranks) == 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in ranks):
            time.sleep(0.2)
        alive = [pid for pid in ranks if Path(f"/proc/{pid}").exists()
                 and "Z" not in (Path(f"/proc/{pid}/stat").read_text().split()[2:3] or ["?"])]
        assert not alive
        assert not job.job_dir.exists()
    finally:
        store.close()


def test_the_processes_setting_is_every_later_runs_and_a_run_can_say_otherwise(home, capsys):
    from tunechat.cli import main
    from tunechat.core.store import Store
    from tunechat.personalize.job import PersonalizeJob
    from tunechat.personalize.spec import JobSpec

    assert main(["processes"]) == 0
    assert "1 process." in capsys.readouterr().out
    assert main(["processes", "3"]) == 0
    assert "3 processes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["processes", "0"])
    store = Store()
    try:
        store.add_pair("What is my name?", "Ada.")
        for asked, expected in ((None, 3), (1, 1), (2, 2)):
            job = PersonalizeJob(store, processes=asked)
            assert job.spec.processes == expected
            assert JobSpec.read(job.job_dir).processes == expected  # as the worker reads it
            job.discard()
    finally:
        store.close()


def test_the_float16_form_is_refused_across_processes_before_any_starts(tmp_path):
    from tunechat.core.faults import EXIT_REFUSED
    from tunechat.personalize.launch import RanksFailed, train_across
    from tunechat.personalize.progress import Reporter

    with pytest.raises(RanksFailed) as refused:
        train_across(tmp_path, 2, "float16", [], {}, Reporter(io.StringIO()))
    assert refused.value.code == EXIT_REFUSED and "--processes 1" in str(refused.value)
    assert not list(tmp_path.iterdir())  # nothing written, nothing started


# Stands in for torchrun: the first rank writes the trained adapter or not, a rank may tell its
# own failure, and the run exits 1 as torchrun does when a rank stops.
_STOPPING_RANKS = """
import json, os, sys, torch
from pathlib import Path
from tunechat.personalize.sharded import _write_trained
from tunechat.personalize.train import TrainResult
if "written" in sys.argv[2:]:
    _write_trained(Path(sys.argv[1]), {"w": torch.full((2,), 7.0)}, TrainResult(3, 0.5, [1.0, 0.7, 0.5], 1.0, 30, True))
if "told" in sys.argv[2:]:
    print(json.dumps({"event": "error", "message": "The disk is full.", "collective": False}), flush=True)
os._exit(1)
"""


def test_ranks_that_stop_on_their_way_out_lose_nothing_once_the_adapter_is_written(tmp_path, monkeypatch):
    """torchrun exits non-zero: before the adapter was written the run fails, even with an earlier
    launch's adapter in the folder, and so does a rank's own failure told after it; a rank that
    just stops after it costs nothing: the run goes on with this launch's adapter."""
    import torch

    from tunechat.personalize import launch
    from tunechat.personalize.progress import Reporter
    from tunechat.personalize.sharded import _write_trained
    from tunechat.personalize.train import TrainResult

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no GPU count to refuse 2 processes by

    def launched(*stops: str):
        monkeypatch.setattr(launch, "torchrun_command",
                            lambda job_dir, processes: [sys.executable, "-c", _STOPPING_RANKS, str(job_dir), *stops])
        return launch.train_across(tmp_path, 2, "float32", [], {}, Reporter(io.StringIO()))

    _write_trained(tmp_path, {"w": torch.zeros(2)}, TrainResult(1, 2.0, [2.0], 1.0, 10, False))  # an earlier launch's
    with pytest.raises(launch.RanksFailed, match="stopped before training ended"):
        launched()
    with pytest.raises(launch.RanksFailed, match="The disk is full."):
        launched("written", "told")
    state, result = launched("written")
    assert torch.equal(state["w"], torch.full((2,), 7.0)) and result.steps == 3 and result.stopped_early


def test_a_rank_s_own_failure_is_told_and_a_broken_collective_is_not():
    import torch

    from tunechat.personalize.sharded import _in_collective

    def raised(exc: BaseException) -> BaseException:
        try:
            raise exc
        except BaseException as caught:
            return caught

    assert not _in_collective(raised(torch.OutOfMemoryError("out of memory")))
    assert not _in_collective(raised(OSError(28, "No space left on device")))
    assert not _in_collective(raised(RuntimeError("a rank's own bug")))  # raised here, not in torch.distributed
    assert _in_collective(raised(torch.distributed.DistBackendError("Connection closed by peer")))
