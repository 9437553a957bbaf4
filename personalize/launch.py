"""The worker's train phase across several processes: torchrun starts the ranks
(``tunechat.personalize.sharded``), the first rank's progress is passed on as the worker's own,
and the trained adapter comes back from the job folder.

torchrun is the launcher: it gives the ranks their rendezvous, and when one of them stops it
ends the others and exits non-zero. Cancelling the worker (its process group) stops torchrun,
which stops the ranks; ranks whose torchrun is killed outright notice and exit
(``worker.exit_when_orphaned``), and a worker that finds itself orphaned ends its whole process
group, torchrun included, the same way. A rank that dies on its way out, after the first has
written the trained adapter (every rank had trained by then), costs nothing: the run goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tunechat.core.faults import EXIT_REFUSED, EXIT_WORKER_STOPPED
from tunechat.personalize.progress import PARENT_ENV, Reporter
from tunechat.personalize.sharded import read_trained, trained_whole, write_inputs
from tunechat.personalize.spec import Pair
from tunechat.personalize.train import TrainResult


class RanksFailed(Exception):
    """The training processes stopped without a trained adapter; ``code`` is the CLI's exit code."""

    def __init__(self, message: str, code: int = EXIT_WORKER_STOPPED) -> None:
        super().__init__(message)
        self.code = code


def torchrun_command(job_dir: Path, processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "tunechat.personalize.sharded", str(job_dir)]


def train_across(job_dir: Path, processes: int, form: str, replayed: list[Pair], rewordings: dict[str, list[str]],
                 reporter: Reporter) -> tuple[dict[str, Any], TrainResult]:
    """Train in ``processes`` ranks, the frozen base in ``form``; the adapter's tensors (peft's
    keys) and the run's figures."""
    import torch

    if form != "float32":
        raise RanksFailed("Training across processes holds the base in float32, a share in each process; this "
                          "base would need the float16 form, which trains in one process. Run again with "
                          "--processes 1 (tunechat processes 1), or with --weights float32 where it fits.",
                          EXIT_REFUSED)

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and processes > gpus:
        raise RanksFailed(f"Training in {processes} processes needs a GPU for each; this machine has {gpus}. "
                          f"Run again with --processes {gpus} or fewer (tunechat processes {gpus}).", EXIT_REFUSED)
    write_inputs(job_dir, form, replayed, rewordings)
    env = {k: v for k, v in os.environ.items() if k != PARENT_ENV}  # a rank's parent is torchrun
    env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // processes))
    process = subprocess.Popen(torchrun_command(job_dir, processes), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               text=True, encoding="utf-8", env=env)
    assert process.stdout is not None
    error: dict[str, Any] | None = None  # a rank's own failure, not a collective's broken by another rank
    try:
        for line in process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                print(line.rstrip(), file=sys.stderr)  # the worker's log
                continue
            kind = event.pop("event", None)
            if kind == "progress" and event.get("phase") == "train":
                reporter.emit("progress", **event)
            elif kind == "error" and not event.get("collective") and error is None:
                error = event
    except BaseException:  # the worker's own failure (its reporter's pipe gone): torchrun ends its ranks
        process.terminate()
        process.wait()
        raise
    code = process.wait()
    if error is not None:
        raise RanksFailed(str(error.get("message")), int(error.get("code", EXIT_WORKER_STOPPED)))
    if code != 0:
        if not trained_whole(job_dir):
            raise RanksFailed(f"One of the {processes} training processes stopped before training ended "
                              f"(torchrun exit {code}); nothing was written. Its log says why.")
        print(f"torchrun exit {code} after the training processes had written the trained adapter whole; "
              "going on with it.", file=sys.stderr)
    return read_trained(job_dir)

