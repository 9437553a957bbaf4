"""Chat engine benchmarks on this machine, printed as numbers.

1. Streaming speed: tokens/s and time to first token of tunechat's Engine against raw
   llama-cpp-python on the same model, prompt, thread count and settings, interleaved in one
   process (target: ratio >= 0.95).
2. Start-up: wall time from launching `tunechat` to its first drawn frame (target <= 1.5 s),
   and whether torch/transformers were imported (they must not be).
3. Peak memory (RSS) of the chat process: the TUI to first frame, and `tunechat ask`; and
   what scoping adds on a personal version (its base model loaded beside it).

    python bench/chat.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunechat.core.engine import Engine, GenerationSettings, _without_extra_buffer_types, default_threads  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short paragraph about the history of the bicycle."}]
MAX_TOKENS = 128


def time_stream(chunks) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    n = 0
    for _ in chunks:
        n += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return first - start, (n - 1) / max(end - first, 1e-9), n


def bench_streaming(runs: int) -> None:
    from llama_cpp import Llama

    model = embedded_model_path()
    threads = default_threads()
    engine = Engine(model, n_threads=threads)
    with _without_extra_buffer_types():  # raw llama.cpp needs the AMX workaround too, or it crashes
        raw = Llama(model_path=str(model), n_ctx=engine.n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    settings = GenerationSettings(max_tokens=MAX_TOKENS, temperature=0.0)
    prompt = engine.render(PROMPT)

    def raw_stream():
        return raw.create_completion(prompt, max_tokens=MAX_TOKENS, temperature=0.0, top_p=settings.top_p,
                                     repeat_penalty=settings.repeat_penalty, seed=0, stop=[engine.eos_token], stream=True)

    results: dict[str, list[tuple[float, float, int]]] = {"tunechat": [], "raw": []}
    time_stream(engine.stream(PROMPT, settings)), time_stream(raw_stream())  # warm-up
    for _ in range(runs):
        results["tunechat"].append(time_stream(engine.stream(PROMPT, settings)))
        results["raw"].append(time_stream(raw_stream()))
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), v[0][2]) for k, v in results.items()}
    print(f"streaming, {threads} threads, {runs} runs each (median), {MAX_TOKENS} max tokens:")
    for k, (ttft, tps, n) in med.items():
        print(f"  {k:9} time to first token {ttft * 1000:6.1f} ms   {tps:6.1f} tokens/s   ({n} chunks)")
    print(f"  ratio tunechat/raw: tokens/s {med['tunechat'][1] / med['raw'][1]:.3f}   "
          f"time to first token {med['raw'][0] / med['tunechat'][0]:.3f} (raw/tunechat; >= 0.95 is the target)")


def bench_startup(runs: int) -> None:
    times = []
    heavy = ""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, TUNECHAT_HOME=home, TUNECHAT_BENCH_FIRST_FRAME="1")
        for _ in range(runs):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "tunechat.cli"], env=env, capture_output=True, text=True, cwd=ROOT)
            times.append(time.perf_counter() - start)
            heavy = next((l for l in proc.stderr.splitlines() if l.startswith("FIRST_FRAME")), "FIRST_FRAME missing")
    print(f"start-up to first frame (process launch to first drawn frame, {runs} runs): "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s (target <= 1.5 s); {heavy}")
    print(f"  peak RSS of the TUI process: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")


def _ask_rss(env: dict, question: str = "What is the capital of Japan?") -> float:
    """Peak RSS (MiB) of a `tunechat ask` process: VmHWM, the high-water mark of the process's
    own memory. (getrusage's ru_maxrss survives fork and exec on Linux, so a child of this
    process, which holds models for the streaming benchmark, would read at least its size.)"""
    code = (f"import re, sys; from tunechat.cli import main; main(['ask', {question!r}]); "
            "print('RSS', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    return int(next(l for l in proc.stderr.splitlines() if l.startswith("RSS")).split()[1]) / 1024


def bench_ask_memory() -> None:
    with tempfile.TemporaryDirectory() as home:
        rss = _ask_rss(dict(os.environ, TUNECHAT_HOME=home))
        print(f"peak RSS of a chat process that loads the model and answers (`tunechat ask`): {rss:.0f} MiB")


def bench_scoped_memory() -> None:
    """What scoping (tunechat.core.scope) costs: a personal version keeps its base model loaded too.
    The version here is a copy of the base file, so both sides load files of the same size."""
    import json
    import shutil

    from tunechat.core.registry import embedded_model_path

    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, TUNECHAT_HOME=home)
        base = embedded_model_path()
        version = Path(home) / "models" / "personal-bench"
        version.mkdir(parents=True)
        shutil.copy(base, version / "model.gguf")
        (version / "manifest.json").write_text(json.dumps({"base_path": str(base), "created_at": 1}))
        for argv in (["models", "use", "personal-bench"], ["scope", "off"]):
            subprocess.run([sys.executable, "-m", "tunechat.cli", *argv], env=env, cwd=ROOT, capture_output=True, check=True)
        alone = _ask_rss(env)
        subprocess.run([sys.executable, "-m", "tunechat.cli", "scope", "on"], env=env, cwd=ROOT, capture_output=True, check=True)
        scoped = _ask_rss(env)
    print(f"peak RSS of `tunechat ask` on a personal version: scope off {alone:.0f} MiB, scope on {scoped:.0f} MiB "
          f"(ratio {scoped / alone:.2f}; the base model is {base.stat().st_size / 2**20:.0f} MiB on disk)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # Start-up first: its peak RSS is read with RUSAGE_CHILDREN, which a child inherits from
    # this process at fork; the streaming benchmark loads two models here.
    bench_startup(args.runs)
    bench_streaming(args.runs)
    bench_ask_memory()
    bench_scoped_memory()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
