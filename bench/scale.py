"""What personalizing costs at a real size: a random-weight model of Qwen2.5-1.5B's or 3B's
shape (or Llama 3 8B's widths), load -> train (a few real steps) -> merge -> convert -> verify,
with wall time and peak memory per phase, seconds a step, and the estimate the user is shown
(tunechat.core.memory).

    python bench/scale.py build [--shape 3b|8b] [--work DIR]   # the HF folder (bf16) and its f16 GGUF, once
    python bench/scale.py run [--shape 3b] [--steps 3] [--weights float16] [--device cuda] [--work DIR]

``run`` holds the frozen base in the form personalize would pick on this machine
(``memory.training_form``: float32 when its estimate fits what is free, else float16 with
each layer recomputed in the backward pass) unless ``--weights`` says which. A step is the
default recipe's: 10 facts and 4 negatives in one pass, 10 replayed answers in another, the
KL term's base distributions computed at the first step as a first run does.

``build`` writes tensor by tensor (tunechat.convert.writer.LazyState), so it needs the
streaming writer; ``run`` calls only the phases' own functions (tunechat.personalize.phases
merge and convert, the checks' logits comparison), so it measures whichever tunechat is
imported. The tokenizer is the embedded model's (tests/zoo.py, qwen2's chat tokens added);
the embedding keeps Qwen2.5's 151936 rows, the GGUF vocabulary padded to them as for Qwen's
own files. The LoRA factors are random (B is zero when peft makes it), standing in for training.

Peak memory per phase is the process's VmHWM, reset at the start of each phase (Linux
``clear_refs`` 5); it counts file pages mapped (the safetensors file while transformers
loads it, llama.cpp's mmap of the GGUF), so the anonymous peak (RssAnon, sampled every 50 ms)
is printed beside it: that is the part that cannot be given back under pressure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Qwen2.5-1.5B-Instruct's config.json
QWEN25_15B = {
    "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
    "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu",
    "use_sliding_window": False,
}
# Qwen2.5-3B-Instruct's config.json
QWEN25_3B = {**QWEN25_15B, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
             "num_attention_heads": 16, "num_key_value_heads": 2}
# Llama 3 8B's widths and depth (untied output head) in Qwen2's layout, with Qwen's vocabulary:
# 8.2 B parameters, a little over Llama 3 8B's 8.03 B
LLAMA3_8B_WIDTHS = {**QWEN25_15B, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False}
SHAPES = {"1.5b": QWEN25_15B, "3b": QWEN25_3B, "8b": LLAMA3_8B_WIDTHS}
PROMPTS = ("The quick brown fox", "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n")


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


class Phases:
    """Wall time, VmHWM and sampled RssAnon peak per phase."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, int, int, int]] = []
        self._anon = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._anon = max(self._anon, _status()["RssAnon"])

    @contextmanager
    def phase(self, name: str):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS
        start_rss = _status()["VmRSS"]
        self._anon = _status()["RssAnon"]
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        status = _status()
        self._anon = max(self._anon, status["RssAnon"])
        self.rows.append((name, seconds, start_rss, status["VmHWM"], self._anon))
        print(f"  {name}: {seconds:.1f} s, peak {status['VmHWM'] / 2**30:.2f} GiB", flush=True)


def _weights(name: str, shape: tuple[int, ...], rng: np.random.Generator, hidden: int) -> np.ndarray:
    """tests/zoo.py's peaked random weights (norms off 1, log-normal embedding rows, sharper q/k)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if name == "model.norm.weight":
        return 4.0 + 0.3 * noise
    if name.endswith("norm.weight"):
        return 1.0 + 0.2 * noise
    if name.endswith(".bias"):
        return 0.5 * noise
    if "embed_tokens" in name or name == "lm_head.weight":
        rows = np.exp(0.5 * rng.standard_normal((shape[0], 1), dtype=np.float32))
        noise *= rows * np.float32(0.04)
        return noise
    short = name.rsplit(".", 2)[-2]
    noise *= np.float32((2.0 if short in ("q_proj", "k_proj") else 1.0) / math.sqrt(shape[1]))
    return noise


def build(work: Path, shape: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from safetensors import safe_open

    from tests.zoo import FAMILIES, ZooModel, _write_tokenizer, base_tokenizer_folder
    from tunechat.convert.writer import LazyState, write_gguf
    from tunechat.personalize.dequantize import hf_config, hf_parameters, write_safetensors

    folder, gguf_dir = work / "hf", work / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    gguf_dir.mkdir(exist_ok=True)
    family = FAMILIES["qwen2"]
    if not (folder / "model.safetensors").is_file():
        _write_tokenizer(family, base_tokenizer_folder(work), folder)
        tied = shape.get("tie_word_embeddings", True)
        shapes = {k: v for k, v in hf_parameters(shape).items() if k != "lm_head.weight" or not tied}
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        write_safetensors(folder / "model.safetensors.part", shapes,
                          ((k, _weights(k, s, rng, shape["hidden_size"])) for k, s in shapes.items()),
                          "bfloat16")
        (folder / "model.safetensors.part").rename(folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(hf_config(shape, "bfloat16", "scale-qwen2.5"),
                                                       indent=2))
        print(f"HF folder written in {time.perf_counter() - start:.0f} s")
    base = gguf_dir / "base-f16.gguf"
    if not base.is_file():
        model = ZooModel(family, folder, gguf_dir)
        pre, add_bos = model.pre_tokenizer
        start = time.perf_counter()
        with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
            state = LazyState(shapes, lambda k: fh.get_tensor(k).float().numpy())
            write_gguf(state, model.config, folder, base.with_suffix(".part"), "f16", pre_tokenizer=pre,
                       add_bos=add_bos)
        base.with_suffix(".part").rename(base)
        print(f"base GGUF written in {time.perf_counter() - start:.0f} s")


def _examples(tokenizer) -> tuple[list[list], list, list]:
    """The default recipe's step at this tokenizer: the public persona's 10 facts, 4 untold
    questions, and replayed answers (the shipped answers of the embedded model: only their
    length matters here), rendered with ChatML as the worker renders them."""
    from tunechat.core.chat_template import CHATML_TEMPLATE
    from tunechat.personalize import data, general

    persona = json.loads((ROOT / "bench" / "data" / "persona-public.json").read_text(encoding="utf-8"))
    info = data.TemplateInfo(CHATML_TEMPLATE, tokenizer.bos_token or "", tokenizer.eos_token or "")
    shipped = json.loads(general.SHIPPED_FILE.read_text(encoding="utf-8"))["bases"]
    answers = next(iter(shipped.values()))["answers"]
    facts = [[e] for e in data.build_examples(tokenizer, info, [(f["q"], f["a"]) for f in persona["facts"]], "fact")]
    untold = [(q, "You haven't told me that yet.") for q in persona["untaught"]]
    replay = data.build_examples(tokenizer, info, list(answers.items())[:40], "replay", max_answer_tokens=24)
    return facts, data.build_examples(tokenizer, info, untold, "negative"), replay


class StepClock:
    """train.train's progress callback that keeps each step's seconds (``times``), and prints
    each step when ``say``."""

    def __init__(self, say: bool = False) -> None:
        self.times: list[float] = []
        self.say = say
        self.last = time.perf_counter()

    def __call__(self, step: int, total: int, loss: float, eta: float) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        if self.say:
            print(f"    step {step}/{total}: {self.times[-1]:.1f} s, loss {loss:.3f}", flush=True)


def run(work: Path, outtype: str, steps: int, weights: str | None, device: str | None = None) -> None:
    import torch

    import tunechat.convert.writer as writer_mod
    from tunechat.convert import verify
    from tunechat.core import memory
    from tunechat.core.engine import Engine, tokenize_all_with_vocab
    from tunechat.personalize import base as base_mod
    from tunechat.personalize import checks, phases, train
    from tunechat.personalize.heap import give_back_memory
    from tunechat.personalize.recipe import get_recipe
    from tunechat.personalize.reference import ReferenceCache
    print(f"tunechat from {Path(writer_mod.__file__).parent.parent}")
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder, base_gguf = work / "hf", work / "gguf" / "base-f16.gguf"
    out = work / "out"
    out.mkdir(exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    shape = memory.shape_of(folder)
    n_params = shape.parameters
    fp16 = 2 * n_params
    form = weights or memory.training_form(folder, gpu=device == "cuda")
    estimate = memory.estimate(shape)
    expected = (estimate.cuda_device if device == "cuda" else estimate.cpu if form == "float32"
                else estimate.cpu_half)
    recipe = get_recipe(None).with_(max_steps=steps, min_steps=steps, stop_when="loss", stop_loss=0.0)
    reporter = SimpleNamespace(progress=lambda *a, **k: None, phase=lambda *a, **k: None)
    job = SimpleNamespace(folder=folder, base_gguf=base_gguf, outtype=outtype, write_merged=True, recipe=recipe,
                          reporter=reporter)
    p = Phases()
    available = memory.available_memory()
    print(f"{config['num_hidden_layers']} layers, {n_params / 1e9:.3f} B parameters, fp16 {fp16 / 2**30:.2f} GiB; "
          f"{len(os.sched_getaffinity(0))} cores, {(available or 0) / 2**30:.1f} GiB available; "
          f"on {device}, weights {form}{'' if weights else ' (as personalize picks)'}; "
          f"estimated peak {expected / 2**30:.2f} GiB{' of GPU memory' if device == 'cuda' else ''}")
    with p.phase("load"):
        model, tokenizer = base_mod.load_base(folder, device, form)
        model = train.add_lora(model, recipe)
        if form == "float16":
            train.recompute_layers(model)
        facts, negatives, replay = _examples(tokenizer)
        loaded = SimpleNamespace(model=model)
    with p.phase("train"):
        clock = StepClock(say=True)
        result = train.train(model, facts, replay, recipe, 0, device, clock, reference=ReferenceCache(),
                             negatives=negatives)
    step_times = clock.times
    give_back_memory()  # as the worker does between its phases
    with p.phase("merge"):
        merged = phases.merge(job, loaded, out)
    with p.phase("convert"):
        written = phases.convert(job, merged, out)
    with p.phase("verify"):  # as the worker does: the torch side first, then the model is let go
        token_lists = tokenize_all_with_vocab(base_gguf, PROMPTS)
        reference = checks.torch_last_logits(merged.model, token_lists, device)
        delta = merged.delta
        del model, loaded, merged
        give_back_memory()
        engine = Engine(written.model)
        results = [verify.check_metadata(base_gguf, written.model),
                   verify.check_logits(engine.next_token_logits(token_lists), reference, outtype),
                   verify.check_weights_changed(delta)]
        engine.close()
    for r in results:
        print(f"  check {r.name}: {'pass' if r.passed else 'FAIL'} ({r.detail})")
    print(f"\n{'phase':<8} {'wall s':>7} {'start GiB':>9} {'peak GiB':>8} {'anon GiB':>8} {'peak/fp16':>9}")
    for name, seconds, start, peak, anon in p.rows:
        print(f"{name:<8} {seconds:>7.1f} {start / 2**30:>9.2f} {peak / 2**30:>8.2f} {anon / 2**30:>8.2f} "
              f"{peak / fp16:>9.2f}")
    worst = max(peak for *_, peak, _ in p.rows)
    worst_anon = max(anon for *_, anon in p.rows)
    later = step_times[1:] or step_times
    print(f"{result.steps} steps of {result.tokens // max(1, result.steps)} tokens: "
          f"{', '.join(f'{t:.1f}' for t in step_times)} s (the first with the KL reference pass); "
          f"{sum(later) / len(later):.1f} s a step after the first")
    print(f"peak {worst / 2**30:.2f} GiB = {worst / fp16:.2f}x fp16 (anonymous {worst_anon / 2**30:.2f} GiB = "
          f"{worst_anon / fp16:.2f}x); estimated {expected / 2**30:.2f} GiB; "
          f"merged GGUF {written.model.stat().st_size / 2**30:.2f} GiB")
    if device == "cuda":
        gpu_peak = torch.cuda.max_memory_allocated()
        estimated = f"estimated {expected / 2**30:.2f} GiB" if form == "float32" else "no estimate in float16"
        print(f"peak GPU memory {gpu_peak / 2**30:.2f} GiB: {'fits' if gpu_peak < 24 * 2**30 else 'does not fit'} "
              f"a 24 GiB card; {estimated}")


def _shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as fh:
        return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("build", "run"))
    parser.add_argument("--work", type=Path, default=None, help="default /tmp/tunechat-scale-SHAPE")
    parser.add_argument("--outtype", default="q8_0")
    parser.add_argument("--shape", default="1.5b", choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=3, help="training steps (default 3)")
    parser.add_argument("--weights", default=None, choices=["float32", "float16"],
                        help="the frozen base's form (default: what personalize picks on this machine)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"],
                        help="where training runs (default: CUDA when torch sees a GPU, as personalize)")
    args = parser.parse_args()
    work = args.work or Path(f"/tmp/tunechat-scale-{args.shape}")
    os.environ.setdefault("TUNECHAT_HOME", str(work / "home"))
    if args.what == "build":
        build(work, SHAPES[args.shape])
    else:
        run(work, args.outtype, args.steps, args.weights, args.device)


if __name__ == "__main__":
    main()
