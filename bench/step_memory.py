"""Peak memory of the training step: the process's peak RSS after loading and warming the KL
references, then after N default-sized steps (10 facts of bench/data/persona-public.json in
their rewordings, 4 of them again as the negatives' stand-ins, 10 replay examples), with the
median CPU seconds a step. The allocator is glibc's as the environment sets it, so its
settings compare run against run:

    GOMP_SPINCOUNT=10000 python bench/step_memory.py [STEPS]
    MALLOC_MMAP_THRESHOLD_=262144 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 GOMP_SPINCOUNT=10000 python bench/step_memory.py

The worker (personalize/job.py) runs with GOMP_SPINCOUNT=10000; bench/personalize.py reads the
whole run's peak from the worker itself.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def peak_and_now_mib() -> tuple[int, int]:
    with open("/proc/self/status", encoding="ascii") as fh:
        status = dict(line.split(":", 1) for line in fh)
    return int(status["VmHWM"].split()[0]) // 1024, int(status["VmRSS"].split()[0]) // 1024


def main() -> None:
    from step import setup, warm_references  # bench/step.py

    from tunechat.personalize import train
    from tunechat.personalize.reference import ReferenceCache

    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    model, facts, replay, recipe, pad_id = setup(10)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = train.optimizer_for(params, recipe, "cpu")
    reference = ReferenceCache()
    warm_references(model, replay, pad_id, reference)
    model.train()
    peak, now = peak_and_now_mib()
    print(f"loaded, references warm: peak RSS {peak} MiB, now {now} MiB", flush=True)
    rng = random.Random(0)
    times = []
    for _ in range(steps):
        drawn = [forms[rng.randrange(len(forms))] for forms in facts]
        stand_ins = [facts[i][rng.randrange(len(facts[i]))] for i in rng.sample(range(len(facts)), 4)]
        replay_drawn = [replay[i] for i in rng.sample(range(len(replay)), recipe.replay_batch)]
        start = time.process_time()
        train.train_step(model, optimizer, params, drawn, stand_ins, replay_drawn, recipe, reference, pad_id, "cpu")
        times.append(time.process_time() - start)
    peak, now = peak_and_now_mib()
    print(f"after {steps} steps: peak RSS {peak} MiB, now {now} MiB; "
          f"median {statistics.median(times[1:]):.2f} CPU s a step")


if __name__ == "__main__":
    main()
