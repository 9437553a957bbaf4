"""Chat engine benchmarks on this machine, printed as numbers.

1. Streaming speed: tokens/s and time to first token of tunechat's Engine against raw
   llama-cpp-python on the same model, prompt, thread count and settings, interleaved in one
   process (target: ratio >= 0.95).
2. Start-up: wall time from launching the chat to its first drawn frame (target <= 1.5 s),
   and whether torch/transformers/peft were imported (they must not be). The chat runs as
   `tunechat` runs it, headless, with the app subclassed to report its first frame and exit.
3. Peak memory (RSS) of the chat process: the TUI to first frame, and `tunechat ask`.
4. Scoping on one model (the base with a version's adapter, switched per turn) against the
   merged file: peak memory, tokens/s of personal and base turns, the cost of a switch, and
   the disk a version takes and load times; with --large also on a random-weight base of
   SmolLM2-1.7B's shape (Q4_K_M), the size that decides whether a version keeps a merged file.

    python bench/chat.py [--runs 5] [--large] [--out [PATH]]
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
RESULTS = ROOT / "bench" / "results" / "chat.txt"
LINES: list[str] = []
HEAVY = ("torch", "transformers", "peft")
# `tunechat` with no command, its app reporting the first frame (time and heavy imports) on
# stderr and exiting: on mount it asks for a callback after the first refresh.
FIRST_FRAME = f"""
import os, sys, time
import tunechat.tui.app
from tunechat.cli import main

class FirstFrame(tunechat.tui.app.TunechatApp):
    def run(self, *args, **kwargs):
        return super().run(*args, headless=True, **kwargs)

    def on_mount(self):
        self.call_after_refresh(self._first_frame)

    def _first_frame(self):
        heavy = ",".join(m for m in {HEAVY!r} if m in sys.modules) or "none"
        os.write(2, f"FIRST_FRAME {{time.time():.6f}} heavy={{heavy}}\\n".encode())
        self.exit()

tunechat.tui.app.TunechatApp = FirstFrame
main([])
"""


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


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
        raw = Llama(model_path=str(model), n_ctx=engine.n_ctx, n_threads=threads, n_threads_batch=threads,
                    verbose=False)
    settings = GenerationSettings(max_tokens=MAX_TOKENS, temperature=0.0)
    prompt = engine.render(PROMPT)

    def raw_stream():
        raw.reset()  # evaluate the prompt afresh, as tunechat does (no prefix reuse across calls)
        return raw.create_completion(prompt, max_tokens=MAX_TOKENS, temperature=0.0, top_p=settings.top_p,
                                     repeat_penalty=settings.repeat_penalty, seed=0, stop=[engine.eos_token],
                                     stream=True)

    results: dict[str, list[tuple[float, float, int]]] = {"tunechat": [], "raw": []}
    time_stream(engine.stream(PROMPT, settings)), time_stream(raw_stream())  # warm-up
    for _ in range(runs):
        results["tunechat"].append(time_stream(engine.stream(PROMPT, settings)))
        results["raw"].append(time_stream(raw_stream()))
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), v[0][2])
           for k, v in results.items()}
    say(f"streaming, {threads} threads, {runs} runs each (median), {MAX_TOKENS} max tokens:")
    for k, (ttft, tps, n) in med.items():
        say(f"  {k:9} time to first token {ttft * 1000:6.1f} ms   {tps:6.1f} tokens/s   ({n} chunks)")
    say(f"  ratio tunechat/raw: tokens/s {med['tunechat'][1] / med['raw'][1]:.3f}   "
          f"time to first token {med['raw'][0] / med['tunechat'][0]:.3f} (raw/tunechat; >= 0.95 is the target)")


def bench_startup(runs: int) -> None:
    times = []
    heavy = ""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, TUNECHAT_HOME=home)
        for _ in range(runs):
            start = time.time()
            proc = subprocess.run([sys.executable, "-c", FIRST_FRAME], env=env, capture_output=True, text=True,
                                  cwd=ROOT, timeout=120)
            frame = next((line.split() for line in proc.stderr.splitlines() if line.startswith("FIRST_FRAME")), None)
            if frame is None:
                raise RuntimeError(f"no first frame: {proc.stderr[-2000:]}")
            times.append(float(frame[1]) - start)
            heavy = frame[2]
    say(f"start-up to first frame (process launch to first drawn frame, {runs} runs): "
        f"median {statistics.median(times):.2f} s, max {max(times):.2f} s (target <= 1.5 s); {heavy} "
        f"(torch, transformers and peft must not be imported)")
    say(f"  peak RSS of the TUI process: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")


def _ask_rss(env: dict, question: str = "What is the capital of Japan?") -> float:
    """Peak RSS (MiB) of a `tunechat ask` process: VmHWM, the high-water mark of the process's
    own memory. (getrusage's ru_maxrss survives fork and exec on Linux, so a child of this
    process, which holds models for the streaming benchmark, would read at least its size.)"""
    code = (f"import re, sys; from tunechat.cli import main; main(['ask', {question!r}]); "
            "print('RSS', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    return int(next(line for line in proc.stderr.splitlines() if line.startswith("RSS")).split()[1]) / 1024


def bench_ask_memory() -> None:
    with tempfile.TemporaryDirectory() as home:
        rss = _ask_rss(dict(os.environ, TUNECHAT_HOME=home))
        say(f"peak RSS of a chat process that loads the model and answers (`tunechat ask`): {rss:.0f} MiB")


def _quantize(source: Path, out: Path, ftype: int) -> Path:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source.name}")
    return out


def _version(home: Path, base: Path, source: Path) -> tuple[Path, Path]:
    """A stand-in personal version of ``base`` in ``home``: ``source`` (the base at full
    precision) quantized to q8_0 as its merged file (a real version's size and speed) and a
    random rank-16 adapter on every linear projection (a real adapter's shape). Returns
    (merged, adapter)."""
    import llama_cpp

    from tests.helpers import PROJECTIONS, random_lora_gguf
    from tunechat.core.manifest import MANIFEST_FILE, Manifest

    version = home / "models" / "personal-bench"
    version.mkdir(parents=True)
    merged, adapter = version / "model.gguf", version / "adapter.gguf"
    _quantize(source, merged, llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)
    random_lora_gguf(base, adapter, rank=16, scale=0.02, modules=tuple(PROJECTIONS))
    Manifest(base_path=str(base), created_at=1).write(version / MANIFEST_FILE)
    return merged, adapter


# SmolLM2-1.7B's shape (llama, tied embeddings, the embedded model's tokenizer): a base of
# the size people run, with random weights, quantized as they download it (Q4_K_M).
LARGE_SHAPE = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
               "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
               "num_key_value_heads": 32, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
               "rope_theta": 130000.0, "tie_word_embeddings": True, "vocab_size": 49152}


def _large_base(home: Path) -> tuple[Path, Path]:
    """A random-weight base of ``LARGE_SHAPE``: (Q4_K_M base, its f16 source)."""
    import llama_cpp
    import numpy as np

    from tunechat.convert.writer import write_gguf

    c = LARGE_SHAPE
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02)

    state = {"model.embed_tokens.weight": w(c["vocab_size"], h), "model.norm.weight": np.ones(h, np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        state.update({p + "input_layernorm.weight": np.ones(h, np.float32),
                      p + "post_attention_layernorm.weight": np.ones(h, np.float32),
                      **{p + f"self_attn.{m}.weight": w(h, h) for m in ("q_proj", "k_proj", "v_proj", "o_proj")},
                      p + "mlp.gate_proj.weight": w(inter, h), p + "mlp.up_proj.weight": w(inter, h),
                      p + "mlp.down_proj.weight": w(h, inter)})
    # The metadata comes from an HF folder of this shape with the embedded model's tokenizer
    # (a GGUF given as the source would lend its own shape).
    import json
    import shutil

    from tunechat.personalize.base import cached_base_folder

    folder = home / "large-hf"
    folder.mkdir()
    tokenizer_files = [p for p in cached_base_folder(embedded_model_path()).iterdir()
                       if p.name.startswith(("tokenizer", "special_tokens", "chat_template"))]
    for path in tokenizer_files:
        shutil.copy(path, folder / path.name)
    (folder / "config.json").write_text(json.dumps({**c, "bos_token_id": 1, "eos_token_id": 2}))
    source = home / "large-f16.gguf"
    write_gguf(state, c, folder, source, "f16", pre_tokenizer="smollm", add_bos=False)
    del state
    return _quantize(source, home / "large-q4_k_m.gguf", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M), source


def _load_seconds(make, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        engine = make()
        times.append(time.perf_counter() - start)
        engine.close()
    return statistics.median(times)


def bench_scoped(runs: int, large: bool) -> None:
    """What scoping costs on one model (the base with the version's adapter, its scale set per
    turn) against the merged file alone: peak memory, tokens/s of personal and base turns,
    the time a switch adds, load time and the disk a version takes."""
    from tunechat.core.scope import ScopedEngine

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as home:
        env = dict(os.environ, TUNECHAT_HOME=home)
        if large:
            base, source = _large_base(Path(home))
            label = "random-weight SmolLM2-1.7B shape, base Q4_K_M"
        else:
            base = source = embedded_model_path()
            label = "embedded SmolLM2-135M, base Q4_1"
        merged, adapter = _version(Path(home), base, source)
        say(f"scoping on one model, {label}:")
        for argv in (["models", "use", "personal-bench"], ["scope", "off"]):
            subprocess.run([sys.executable, "-m", "tunechat.cli", *argv], env=env, cwd=ROOT, capture_output=True,
                           check=True)
        alone = _ask_rss(env)
        subprocess.run([sys.executable, "-m", "tunechat.cli", "scope", "on"], env=env, cwd=ROOT, capture_output=True,
                       check=True)
        scoped_rss = _ask_rss(env)
        say(f"  peak RSS of `tunechat ask` on a personal version: scope off (merged q8_0) {alone:.0f} MiB, "
            f"scope on (base + adapter) {scoped_rss:.0f} MiB, ratio {scoped_rss / alone:.2f} (target <= 1.10)")
        load_merged = _load_seconds(lambda: Engine(merged))
        load_adapted = _load_seconds(lambda: Engine(base, lora_path=adapter))
        say(f"  load time (page cache warm, median of 3): merged {load_merged:.2f} s, base + adapter "
            f"{load_adapted:.2f} s")

        tokens = MAX_TOKENS if not large else 48
        settings = GenerationSettings(max_tokens=tokens, temperature=0.0)
        engines = {"merged": Engine(merged), "base": Engine(base)}
        scoped = ScopedEngine(Engine(base, lora_path=adapter))
        speeds: dict[str, list[float]] = {"merged": [], "base": [], "scoped personal": [], "scoped base": []}
        for _ in range(runs + 1):  # the first round warms up
            for name, engine in engines.items():
                speeds[name].append(time_stream(engine.stream(PROMPT, settings))[1])
            for side in ("personal", "base"):
                speeds[f"scoped {side}"].append(time_stream(scoped.stream(PROMPT, settings, force=side))[1])
        tps = {k: statistics.median(v[1:]) for k, v in speeds.items()}
        say(f"  tokens/s, median of {runs}, {tokens} tokens: merged {tps['merged']:.1f}, bare base {tps['base']:.1f}, "
            f"scoped personal turns {tps['scoped personal']:.1f}, scoped base turns {tps['scoped base']:.1f}")
        say(f"  ratio personal turn / merged {tps['scoped personal'] / tps['merged']:.2f}, "
            f"base turn / bare base {tps['scoped base'] / tps['base']:.2f} (target >= 0.90 each)")
        switches = []
        for i in range(20):
            start = time.perf_counter()
            scoped.personal.set_adapter_scale(float(i % 2))
            switches.append(time.perf_counter() - start)
        say(f"  a switch (adapter on or off): median {statistics.median(switches) * 1000:.2f} ms, "
            f"max {max(switches) * 1000:.2f} ms (target <= 20 ms; the prompt is then evaluated afresh)")
        scoped.close()
        for engine in engines.values():
            engine.close()
        sizes = {p.name: p.stat().st_size / 1e6 for p in (merged, adapter)}
        say(f"  disk per version: merged q8_0 {sizes['model.gguf']:.1f} MB, adapter {sizes['adapter.gguf']:.1f} MB "
            f"(base {base.stat().st_size / 1e6:.1f} MB, shared by every version)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only-scoped", action="store_true", help="only the scoping benchmarks")
    parser.add_argument("--large", action="store_true",
                        help="also scope a random-weight base of SmolLM2-1.7B's shape (builds ~6 GB of files)")
    parser.add_argument("--large-only", action="store_true", help="only the scoping benchmark on that base")
    parser.add_argument("--out", type=Path, nargs="?", const=RESULTS, default=None, metavar="PATH",
                        help=f"also write the numbers here (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    # Start-up first: its peak RSS is read with RUSAGE_CHILDREN, which a child inherits from
    # this process at fork; the streaming benchmark loads two models here.
    if not args.only_scoped:
        bench_startup(args.runs)
        bench_streaming(args.runs)
        bench_ask_memory()
    if not args.large_only:
        bench_scoped(args.runs, large=False)
    if args.large or args.large_only:
        bench_scoped(min(args.runs, 3), large=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
