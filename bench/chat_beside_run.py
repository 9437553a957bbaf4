"""The chat beside a personalization run: llama.cpp on every core, or on one thread.

While the app's personalization runs, its worker keeps every core busy (torch, OpenMP, the
worker's GOMP_SPINCOUNT). A stand-in for it, a process multiplying matrices on every core with
the same settings, runs while the embedded model, freshly loaded each time, writes a fact's pair
(``facts.pair_from_fact``: three few-shot prompts of about 625 tokens) and answers a question
after a long chat. Each is timed with llama.cpp on every core and on one thread, beside the
stand-in and alone; the stand-in's matrix products per second say what the chat cost it.

    python bench/chat_beside_run.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunechat.core.engine import Engine, GenerationSettings, default_threads  # noqa: E402
from tunechat.core.facts import pair_from_fact  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402

SENTENCE = "Shoe size 10.5 (US)."  # no rule asks for it: every prompt is evaluated
CHAT = [m for i in range(6) for m in ({"role": "user", "content": f"Tell me one fact about the number {i}."},
                                      {"role": "assistant", "content": f"The number {i} is a whole number. " * 8})]
CHAT.append({"role": "user", "content": "Which of those numbers is even?"})


def stand_in(count, ready, stop) -> None:  # type: ignore[no-untyped-def]
    """The worker's load: matrix products on every core, counted."""
    import torch

    torch.set_num_threads(default_threads())
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    ready.set()
    while not stop.is_set():
        a @ b
        with count.get_lock():
            count.value += 1


def timed(task: Callable[[], object]) -> float:
    start = time.perf_counter()
    task()
    return time.perf_counter() - start


def chat_tasks(threads: int) -> dict[str, float]:
    engine = Engine(embedded_model_path(), n_threads=threads)
    try:
        return {"fact's pair": timed(lambda: pair_from_fact(engine, SENTENCE)),
                "answer after a long chat": timed(
                    lambda: engine.complete(CHAT, GenerationSettings(max_tokens=24, temperature=0.0)))}
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    every = default_threads()
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as personalize/job.py starts the worker
    ctx = mp.get_context("spawn")
    count, ready, stop = ctx.Value("l", 0), ctx.Event(), ctx.Event()
    print(f"# {every} cores; each figure the median of {args.repeats} runs, a fresh engine each")
    print(f"{'':9} {'llama.cpp threads':>17} {'fact pair s':>12} {'long chat s':>12} {'stand-in products/s':>20}")
    rows: dict[tuple[str, int], tuple[float, float, float]] = {}
    for beside in (False, True):
        worker = None
        if beside:
            worker = ctx.Process(target=stand_in, args=(count, ready, stop), daemon=True)
            worker.start()
            ready.wait()
            time.sleep(1.0)
        for threads in sorted({every, 1}, reverse=True):
            runs = []
            for _ in range(args.repeats):
                before, start = count.value, time.perf_counter()
                times = chat_tasks(threads)
                rate = (count.value - before) / (time.perf_counter() - start)
                runs.append((times["fact's pair"], times["answer after a long chat"], rate))
            fact, chat, rate = (sorted(r[i] for r in runs)[len(runs) // 2] for i in range(3))
            rows[("beside" if beside else "alone", threads)] = (fact, chat, rate)
            where = "beside" if beside else "alone"
            print(f"{where:9} {threads:>17} {fact:>12.2f} {chat:>12.2f} {rate if beside else float('nan'):>20.1f}")
        if worker is not None:
            stop.set()
            worker.join()
    if every > 1:
        fast, slow = rows[("beside", 1)], rows[("beside", every)]
        alone_fast, alone_slow = rows[("alone", 1)], rows[("alone", every)]
        print(f"\nbeside the run, one thread against {every}: fact pair {fast[0] / slow[0]:.2f}x the time, "
              f"long chat {fast[1] / slow[1]:.2f}x, the stand-in's products {fast[2] / slow[2]:.2f}x")
        print(f"alone, one thread against {every}: fact pair {alone_fast[0] / alone_slow[0]:.2f}x the time, "
              f"long chat {alone_fast[1] / alone_slow[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
