"""How to store a personal model: merged f16, merged q8_0, or the adapter kept apart.

Trains once per persona and seed (the real worker, default method, writing merged f16 as the
app does), then writes the same trained adapter two more ways and scores all three through
llama.cpp, so the storage form is the only difference between them:

- merged f16: what personalize installs today (base + LoRA folded into every weight);
- merged q8_0: the same merged weights, 8-bit;
- merged Q4_K_M: the f16 file through llama.cpp's own quantizer;
- adapter: the LoRA alone as a llama.cpp LoRA GGUF (convert/lora.py), applied at run time
  over the untouched Q4_1 base, which is exactly the weights training saw.

Prints per form: file size, seconds to write it, chat speed (tokens/s, median of 3
streamed 128-token answers, base model alone as the baseline in the same process),
reliability, generalization, locality (persona questions) and the built-in gate.

    python bench/output_format.py [--personas public second] [--seeds 0 1 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import PERSONAS, probes_json, worker_result  # noqa: E402

SPEED_PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def train_once(pairs, probes, seed: int, job_dir: Path) -> dict:
    """The worker's manifest; the job folder keeps out/model.gguf and out/adapter."""
    from tunechat.core.registry import embedded_model_path

    job = {"pairs": pairs, "base_path": str(embedded_model_path()), "seed": seed, "outtype": "f16",  # the others from it
           "probes": probes_json(probes), "skip_eval": True}
    return worker_result(job_dir, job)


def merged_state(adapter_dir: Path, base_folder: Path) -> tuple[dict, dict]:
    """Base weights + (alpha / r) B A for every adapted module, as peft's merge computes it."""
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    state = load_file(str(base_folder / "model.safetensors"))
    adapter = load_file(str(adapter_dir / "adapter_model.safetensors"))
    for key, a in adapter.items():
        if ".lora_A." not in key:
            continue
        module = key.replace("base_model.model.", "").split(".lora_A.")[0]
        b = adapter[key.replace(".lora_A.", ".lora_B.")]
        state[f"{module}.weight"] = state[f"{module}.weight"] + scale * (b @ a)
    return state, json.loads((base_folder / "config.json").read_text())


def llama_quantize(source: Path, target: Path, ftype: str = "Q4_K_M") -> None:
    """llama.cpp's own quantizer (K-quants; tensors whose width is not a multiple of 256,
    all of SmolLM2-135M's 576-wide ones, fall back to other types)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = len(os.sched_getaffinity(0))
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source.name} to {ftype}")


def tokens_per_second(engine) -> float:
    from tunechat.core.engine import GenerationSettings

    rates = []
    for _ in range(3):
        start, chunks = time.perf_counter(), 0
        for _ in engine.stream(SPEED_PROMPT, GenerationSettings(max_tokens=128, temperature=0.0)):
            chunks += 1
        rates.append(chunks / (time.perf_counter() - start))
    return statistics.median(rates)


def score_form(engine, probes, gate, base_answers) -> dict:
    from tunechat.personalize.evaluate import EVAL_MAX_TOKENS, score
    from tunechat.core.engine import GenerationSettings

    settings = GenerationSettings(max_tokens=EVAL_MAX_TOKENS, temperature=0.0)
    ask = lambda q: engine.complete([{"role": "user", "content": q}], settings)  # noqa: E731
    s, g = score(ask, probes, base_answers), score(ask, gate, base_answers)
    return {"reliability": s.reliability, "generalization": s.generalization, "locality": s.locality,
            "gate": g.locality, "tokens_per_s": round(tokens_per_second(engine), 1)}


def run(persona: str, seed: int) -> list[dict]:
    from tunechat.convert.lora import write_lora_gguf
    from tunechat.convert.writer import write_gguf
    from tunechat.personalize.base import cached_base_folder, file_fingerprint
    from tunechat.personalize.evaluate import ProbeSet, builtin_locality_probes, load_persona, persona_pairs
    from tunechat.personalize.general import base_answers
    from tunechat.core.engine import Engine
    from tunechat.core.registry import embedded_model_path

    base = embedded_model_path()
    probes, gate = load_persona(PERSONAS[persona]), ProbeSet([], locality=builtin_locality_probes())
    answers = base_answers(base, file_fingerprint(base), [p.question for p in probes.locality + gate.locality])
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TUNECHAT_HOME")) as tmp:
        job_dir = Path(tmp)
        manifest = train_once(persona_pairs(PERSONAS[persona]), probes, seed, job_dir)
        out = job_dir / "out"
        f16_s = manifest["timings"]["convert"] + manifest["timings"]["merge"]
        folder = cached_base_folder(base)
        start = time.monotonic()
        state, config = merged_state(out / "adapter", folder)
        merge_s = time.monotonic() - start
        start = time.monotonic()
        write_gguf(state, config, base, out / "model-q8_0.gguf", "q8_0")
        q8_s = time.monotonic() - start + merge_s
        from safetensors.numpy import load_file

        adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
        start = time.monotonic()
        write_lora_gguf(load_file(str(out / "adapter" / "adapter_model.safetensors")), adapter_config["lora_alpha"],
                        config, base, out / "adapter.gguf", "f16")
        lora_s = time.monotonic() - start
        start = time.monotonic()
        llama_quantize(out / "model.gguf", out / "model-q4_k_m.gguf")
        q4k_s = time.monotonic() - start + f16_s
        forms = [("merged f16", out / "model.gguf", None, f16_s),
                 ("merged q8_0", out / "model-q8_0.gguf", None, q8_s),
                 ("merged Q4_K_M (llama.cpp, from f16)", out / "model-q4_k_m.gguf", None, q4k_s),
                 ("adapter f16 over Q4_1 base", base, out / "adapter.gguf", lora_s)]
        plain = Engine(base)
        base_speed = tokens_per_second(plain)
        plain.close()
        for name, model, lora, write_s in forms:
            engine = Engine(model, lora_path=lora)
            size = (lora or model).stat().st_size
            row = {"persona": persona, "seed": seed, "form": name, "steps": manifest["train"]["steps"],
                   "mb": round(size / 1e6, 1), "write_s": round(write_s, 2), "base_tokens_per_s": round(base_speed, 1),
                   **score_form(engine, probes, gate, answers)}
            engine.close()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", nargs="+", default=["public", "second"], choices=list(PERSONAS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("TUNECHAT_HOME", tempfile.mkdtemp(prefix="tunechat-format-"))
    rows = [row for persona in args.personas for seed in args.seeds for row in run(persona, seed)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{'form':36} {'persona':8} {'runs':>4} {'MB':>6} {'write s':>7} {'tok/s':>6} {'base tok/s':>10} "
          f"{'reliab.':>7} {'general.':>8} {'locality':>8} {'gate':>5}")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["form"], r["persona"]), []).append(r)
    for (form, persona), items in groups.items():
        mean = lambda k: statistics.mean(i[k] for i in items)  # noqa: E731
        print(f"{form:36} {persona:8} {len(items):4} {mean('mb'):6.1f} {mean('write_s'):7.2f} {mean('tokens_per_s'):6.1f} "
              f"{mean('base_tokens_per_s'):10.1f} {mean('reliability'):7.0%} {mean('generalization'):8.0%} "
              f"{mean('locality'):8.0%} {mean('gate'):5.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
