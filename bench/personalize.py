"""Personalize benchmark: per-phase wall time, peak memory and training speed, cold and warm.

Runs the real pipeline (worker process: train, merge, GGUF, verify, evaluate), as the
personalize key does, on 10 pairs from bench/data/persona-public.json, then loads the new model
and asks a taught question. For each recipe (the default and the quick one) a **cold** run
starts from an empty data folder and an empty cache (what a new user's first personalize
pays: dequantizing the base, the base model's answers, rewordings), then a **warm** run from an
empty data folder over the cache the cold run filled; an **added** run (``--runs added``) is the
everyday case of adding one pair and personalizing again: a cache filled by a run on all the
pairs but the last, then all of them (the new pair's rewordings and base answers computed).
Each run prints per-phase seconds, the
key-press-to-answer time (targets on the 2-core CPU machine: cold <= 150 s, warm <= 100 s, quick
warm <= 60 s), the worker's peak RSS overall (target <= 1.5 GB) and per phase, GPU peak memory
where CUDA is used, tokens trained per second and the training step's time.

The step's arithmetic is set against this machine's matmul floor: the benchmark counts the
step's matrix products (forward and input gradients through every frozen linear layer of the
base for the tokens a step trains, the output head at the answer positions; LoRA's rank-r
products, attention and element-wise work are left out, so the count is a lower bound) and
times torch matmuls of exactly those shapes (float32, every thread) after the runs. The ratio
of the step's time to that floor is how far the step is from being bound by its matmuls.

    python bench/personalize.py [--methods default quick] [--runs cold warm added] [--out [PATH]]
    python bench/personalize.py --pairs 2 --max-steps 2 --runs warm     # a quick check that it works

Each run is its own process (the worker's peak RSS is read from that process's children).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunechat.personalize.recipe import DEFAULT_RECIPE, QUICK_RECIPE, RECIPES  # noqa: E402

PERSONA = ROOT / "bench" / "data" / "persona-public.json"
RESULTS = ROOT / "bench" / "results" / "personalize.txt"
METHODS = {"default": DEFAULT_RECIPE, "quick": QUICK_RECIPE}
STATS_PREFIX = "@@stats "


def run_once(method: str, pairs: int, max_steps: int | None, persona: Path, weights: str | None = None) -> int:
    """One personalization in this process (TUNECHAT_HOME and TUNECHAT_CACHE set by the caller);
    prints its numbers and one ``@@stats`` JSON line for the caller."""
    from tunechat.core.engine import Engine, GenerationSettings
    from tunechat.core.store import Store
    from tunechat.personalize.job import PersonalizeJob

    facts = json.loads(persona.read_text(encoding="utf-8"))["facts"][:pairs]
    store = Store()
    store.add_pairs([(f["q"], f["a"]) for f in facts], source="imported")
    start = time.monotonic()
    job = PersonalizeJob(store, recipe=method, max_steps=max_steps, weights=weights)
    for event in job.events():
        if event.kind == "phase":
            print(f"  [{time.monotonic() - start:6.1f}s] {event.data['phase']}", flush=True)
    if job.outcome is None:
        print(f"failed: {job.error}", flush=True)
        return 1
    entry = job.install(consent=True)
    engine = Engine(entry.path)
    answer = engine.complete([{"role": "user", "content": facts[0]["q"]}], GenerationSettings(max_tokens=32))
    total = time.monotonic() - start
    engine.close()
    m = job.outcome.manifest
    # The worker resets its peak at each phase (Linux clear_refs), which resets ru_maxrss too:
    # the peak over the run is the largest phase's.
    peak = max(m.peak_rss_mib.values(), default=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    gpu = f" ({m.gpu_name})" if m.gpu_name else ""
    print(f"method {m.method} on {m.device}{gpu}, {m.pairs_count} pairs, {m.train.steps} steps")
    for phase, seconds in m.timings.items():
        rss = m.peak_rss_mib.get(phase)
        print(f"  {phase:10} {seconds:7.1f} s" + (f"   peak RSS {rss:6.0f} MiB" if rss is not None else ""))
    print(f"  key press to the new model answering: {total:.1f} s")
    print(f"  answer to {facts[0]['q']!r}: {answer!r}")
    print(f"  tokens trained per second: {m.train.tokens_per_second or 0:.0f}")
    if m.train.confirms:
        print(f"  greedy-stop confirmations: {m.train.confirms}, {m.train.confirm_seconds:.1f} s of training")
    print(f"  peak RSS of the worker: {peak:.0f} MiB (target <= 1536 MiB)")
    if m.gpu_peak_mib is not None:
        print(f"  peak GPU memory: {m.gpu_peak_mib:.0f} MiB")
    after = m.metrics.after
    scores = {k: v for k, v in vars(after).items() if v is not None} if after else {}
    print("  scores after: " + ", ".join(f"{k} {v:.0%}" for k, v in scores.items()))
    answer_tokens = _answer_tokens(Path(m.base_path), [f["a"] for f in facts])
    stats = {"method": m.method, "device": m.device, "steps": m.train.steps, "tokens": m.train.tokens,
             "train_seconds": m.train.seconds, "confirm_seconds": m.train.confirm_seconds,
             "total": total, "peak_mib": peak, "fact_answer_tokens": answer_tokens}
    print(STATS_PREFIX + json.dumps(stats), flush=True)
    return 0


def _answer_tokens(base: Path, answers: list[str]) -> int:
    """Tokens of the taught answers, end-of-turn token included (llama.cpp's tokenizer)."""
    from tunechat.core.engine import tokenize_all_with_vocab

    return sum(len(ids) + 1 for ids in tokenize_all_with_vocab(base, answers))  # the vocabulary loaded once


# -- the matmul floor --------------------------------------------------------------------------

def step_matmuls(stats: dict, dims: dict, recipe) -> list[tuple[int, int, int, int]]:
    """(m, k, n, count) of the step's matrix products: for each of its two passes (facts,
    replay), every frozen linear layer forward (T x in @ in x out) and its input gradient
    (T x out @ out x in), and the head at the answer positions both ways."""
    d, ff, kv, vocab, layers = dims["hidden"], dims["ff"], dims["kv"], dims["vocab"], dims["layers"]
    tokens_per_pass = max(1, round(stats["tokens"] / max(1, stats["steps"]) / 2))
    linears = [(d, d), (d, kv), (d, kv), (d, d), (d, ff), (d, ff), (ff, d)]  # q k v o gate up down
    answers = [stats["fact_answer_tokens"], recipe.replay_batch * (recipe.replay_answer_tokens + 1)]
    out = []
    for n_in, n_out in linears:
        out.append((tokens_per_pass, n_in, n_out, 2 * layers))  # forward, both passes
        out.append((tokens_per_pass, n_out, n_in, 2 * layers))  # input gradient
    for a in answers:
        if a:
            out += [(a, d, vocab, 1), (a, vocab, d, 1)]
    return out


def matmul_floor(shapes: list[tuple[int, int, int, int]], seconds_each: float = 0.3,
                 clock=time.perf_counter) -> tuple[float, float]:
    """(FLOP, seconds) of ``shapes`` timed as plain float32 torch matmuls on every thread
    (``clock``: wall time, or e.g. ``time.process_time`` on a machine shared with other work)."""
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    flop = seconds = 0.0
    with torch.no_grad():
        for m, k, n, count in shapes:
            a, b = torch.randn(m, k), torch.randn(k, n)
            a @ b  # warm-up
            reps, start = 0, clock()
            while clock() - start < seconds_each or reps < 3:
                a @ b
                reps += 1
            per = (clock() - start) / reps
            flop += 2.0 * m * k * n * count
            seconds += per * count
    return flop, seconds


def base_dims() -> dict[str, int]:
    from tunechat.convert.header import read_header
    from tunechat.core.registry import embedded_model_path
    from tunechat.personalize.dequantize import config_dict

    return dims_of(config_dict(read_header(embedded_model_path())))


def dims_of(c: dict) -> dict[str, int]:
    """The widths the matmul count needs, from an HF config dict."""
    heads, kv_heads = int(c["num_attention_heads"]), int(c.get("num_key_value_heads") or c["num_attention_heads"])
    head = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
    return {"hidden": int(c["hidden_size"]), "ff": int(c["intermediate_size"]), "kv": kv_heads * head,
            "vocab": int(c["vocab_size"]), "layers": int(c["num_hidden_layers"])}


def floor_lines(stats: dict) -> list[str]:
    recipe = RECIPES[stats["method"]]
    flop, floor = matmul_floor(step_matmuls(stats, base_dims(), recipe))
    step = (stats["train_seconds"] - stats["confirm_seconds"]) / max(1, stats["steps"])
    return [
        f"  training step: {step:.2f} s (confirmations left out), ~{stats['tokens'] / max(1, stats['steps']):.0f} "
        f"tokens, >= {flop / 1e9:.0f} GFLOP of matmuls",
        f"  step {flop / 1e9 / step:.0f} GFLOP/s; the same matmuls alone {flop / 1e9 / floor:.0f} GFLOP/s "
        f"({floor:.2f} s): the step takes {step / floor:.1f}x its matmul floor",
    ]


# -- the runs ----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *RECIPES],
                        help="recipes: default, quick or a recipe name (default: default quick)")
    parser.add_argument("--runs", nargs="+", default=["cold", "warm"], choices=["cold", "warm", "added"])
    parser.add_argument("--persona", type=Path, default=PERSONA)
    parser.add_argument("--pairs", type=int, default=10, help="how many of the persona's facts (default 10)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap the training steps (a quick check)")
    parser.add_argument("--out", type=Path, nargs="?", const=RESULTS, default=None, metavar="PATH",
                        help=f"also write the numbers here (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--weights", nargs="+", default=[None], choices=["float32", "float16"],
                        help="the frozen base's forms, each run once per form (default: what personalize "
                             "picks, float32 when it fits)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a recipe: run once, in this process
    args = parser.parse_args()
    if args.one:
        return run_once(args.one, args.pairs, args.max_steps, args.persona, args.weights[0])

    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    say(f"$ python bench/personalize.py {' '.join(sys.argv[1:])}".rstrip())
    say(f"{len(os.sched_getaffinity(0))} cores, {args.pairs} pairs of {args.persona.name}")
    failed = 0
    for name in args.methods:
        recipe = METHODS.get(name, name)
        cache = Path(tempfile.mkdtemp(prefix="tunechat-bench-cache-"))
        try:
            if "cold" not in args.runs and "warm" in args.runs:
                print(f"warming the cache for {recipe}…", flush=True)
                _child(recipe, cache, args, max_steps=1)
            for run in args.runs:
                if run == "added":  # its own cache, filled without the last pair
                    shutil.rmtree(cache, ignore_errors=True)
                    print(f"filling a cache with {args.pairs - 1} pairs…", flush=True)
                    _child(recipe, cache, args, max_steps=1, pairs=args.pairs - 1)
                for weights in args.weights:
                    say()
                    say(f"## {name} ({recipe}), {run}" + (f", {weights} weights" if weights else "") +
                        ": empty data folder, " + {
                            "cold": "empty cache", "warm": "cache filled by the run before",
                            "added": f"cache filled by a run on the first {args.pairs - 1} pairs"}[run])
                    code, output = _child(recipe, cache, args, args.max_steps, weights=weights)
                    stats = None
                    for line in output:
                        if line.startswith(STATS_PREFIX):
                            stats = json.loads(line[len(STATS_PREFIX):])
                        else:
                            say(line)
                    if code != 0 or stats is None:
                        failed += 1
                        continue
                    for line in floor_lines(stats):
                        say(line)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 1 if failed else 0


def _child(recipe: str, cache: Path, args, max_steps: int | None, pairs: int | None = None,
           weights: str | None = None) -> tuple[int, list[str]]:
    """One run in its own process, a new data folder over ``cache``; its phase lines are printed
    as they come, its other lines returned."""
    home = tempfile.mkdtemp(prefix="tunechat-bench-")
    env = {**os.environ, "TUNECHAT_HOME": home, "TUNECHAT_CACHE": str(cache)}
    command = [sys.executable, str(Path(__file__).resolve()), "--one", recipe, "--pairs", str(pairs or args.pairs),
               "--persona", str(args.persona)]
    if max_steps is not None:
        command += ["--max-steps", str(max_steps)]
    if weights:
        command += ["--weights", weights]
    lines = []
    try:
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT) as child:
            assert child.stdout is not None
            for line in child.stdout:
                line = line.rstrip("\n")
                if line.lstrip().startswith("["):
                    print(line, flush=True)
                else:
                    lines.append(line)
        return child.returncode, lines
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
