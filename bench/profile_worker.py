"""Where a training step's time goes inside torch: the worker's real run (default method, 10
pairs of the public persona) with torch.profiler recording a few training steps only (after
two warm-up steps), then the ops that took the most host time and, on CUDA, how long the GPU
itself was busy in those steps. Answers "is a step arithmetic or overhead?" on a GPU, where a
135M model should not need a second per step.

    python bench/profile_worker.py [--steps N] [--active K] [--method NAME]

Profiling every step of the whole run records ~200k events a step, which takes torch longer
to summarize than the run took (seen on an H200 lease); hence the schedule.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERSONA = ROOT.parent / "shared" / "data" / "persona-public.json"
PROGRESS_ARG = 6  # train.train(model, facts, replay, recipe, pad_id, device, progress, ...)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--active", type=int, default=3, help="steps recorded, after 2 skipped and 1 warm-up")
    parser.add_argument("--method", default=None)
    parser.add_argument("--persona", type=Path, default=PERSONA)
    args = parser.parse_args()
    os.environ.setdefault("TUNECHAT_HOME", tempfile.mkdtemp(prefix="tunechat-profile-"))

    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from tunechat.personalize import train
    from tunechat.personalize.progress import Reporter
    from tunechat.personalize.worker import run
    from tunechat.core.registry import embedded_model_path

    facts = json.loads(args.persona.read_text(encoding="utf-8"))["facts"][:10]
    job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=os.environ["TUNECHAT_HOME"]))
    job = {"pairs": [[f["q"], f["a"]] for f in facts], "base_path": str(embedded_model_path()), "recipe": args.method,
           "recipe_overrides": {"max_steps": args.steps, "min_steps": args.steps}, "skip_eval": True}
    (job_dir / "job.json").write_text(json.dumps(job))
    warm = run(job_dir, Reporter(io.StringIO()))  # fills the caches; not profiled
    print(f"first run: {warm['train']['steps']} steps, {warm['timings']['train'] / warm['train']['steps']:.2f} s a step",
          flush=True)

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    marks: list[float] = []
    captured: list = []
    original = train.train

    def profiled_train(*a, **kw):
        """The real training loop, with the profiler stepping on each progress report."""
        a = list(a)
        report = a[PROGRESS_ARG]
        plan = schedule(wait=2, warmup=1, active=args.active, repeat=1)
        with profile(activities=activities, schedule=plan) as prof:
            def progress(step, *rest):
                if step in (3, 3 + args.active):  # the recorded steps lie between these reports
                    if cuda:
                        torch.cuda.synchronize()
                    marks.append(time.monotonic())
                prof.step()
                report(step, *rest)
            a[PROGRESS_ARG] = progress
            result = original(*a, **kw)
        captured.append(prof)
        return result

    train.train = profiled_train
    run(job_dir, Reporter(io.StringIO()))
    events = captured[0].key_averages()
    steps = args.active
    print(f"recorded {steps} training steps: {(marks[-1] - marks[0]) / steps:.3f} s a step (profiled), "
          f"{sum(e.count for e in events) / steps:.0f} torch ops a step")
    if cuda:
        busy = sum(e.self_device_time_total for e in events) / 1e6 / steps
        print(f"GPU busy (kernel time) per step: {busy:.3f} s")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=48))
    if cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=10, max_name_column_width=48))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
