"""What the float16 form costs a training step, part by part, at real widths on few layers.

A random model of Qwen2.5-1.5B's widths and vocabulary with 4 layers (written once under
``--work``; the tokenizer from bench/scale.py's 1.5B folder) is trained for ``--steps`` default
steps (bench/scale.py's batches) in each variant, each in its own process: float32; float32
with every layer recomputed; float16 weights (tunechat.personalize.half); float16 and
recomputed (the form personalize uses). Prints each step's seconds, the mean after the first
and the ratio to float32, and the process's peak RSS. Run bench/scale.py build first.

    python bench/half_step.py [--threads 1] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"float32": ("float32", False), "float32, recomputed": ("float32", True),
            "float16": ("float16", False), "float16, recomputed": ("float16", True)}


def build(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from scale import QWEN25_15B
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if (folder / "model.safetensors").is_file():
        return
    tokenizer = Path("/tmp/tunechat-scale-1.5b/hf")
    if not (tokenizer / "tokenizer.json").is_file():
        raise SystemExit("run `python bench/scale.py build --shape 1.5b` first (its tokenizer is used)")
    Qwen2ForCausalLM(Qwen2Config(**{**QWEN25_15B, "num_hidden_layers": 4})).save_pretrained(folder)
    for path in tokenizer.glob("tokenizer*"):
        shutil.copy(path, folder)


def one(folder: Path, form: str, recompute: bool, steps: int) -> None:
    """One variant in this process: a JSON line with its step times and peak RSS."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from scale import _examples

    from tunechat.personalize import base, train
    from tunechat.personalize.recipe import get_recipe
    from tunechat.personalize.reference import ReferenceCache

    model, tokenizer = base.load_base(folder, "cpu", form)
    recipe = get_recipe(None)
    model = train.add_lora(model, recipe)
    if recompute:
        train.recompute_layers(model)
    facts, negatives, replay = _examples(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = train.optimizer_for(params, recipe, "cpu")
    reference = ReferenceCache()
    model.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train.train_step(model, optimizer, params, [f[0] for f in facts], negatives[:recipe.negatives],
                         replay[:recipe.replay_batch], recipe, reference, 0, "cpu")
        times.append(time.perf_counter() - start)
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"times": times, "peak_mib": peak / 1024}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunechat-half-step"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    if args.one:
        one(args.work, args.one[0], args.one[1] == "1", args.steps)
        return
    build(args.work)
    print(f"4 layers of Qwen2.5-1.5B's widths, {torch.get_num_threads()} threads, {args.steps} steps")
    baseline = None
    for name, (form, recompute) in VARIANTS.items():
        command = [sys.executable, __file__, "--work", str(args.work), "--steps", str(args.steps),
                   "--threads", str(torch.get_num_threads()), "--one", form, "1" if recompute else "0"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        result = json.loads(out)
        later = result["times"][1:] or result["times"]
        mean = sum(later) / len(later)
        baseline = baseline or mean
        steps = ", ".join(f"{t:.2f}" for t in result["times"])
        print(f"{name:<22} {steps} s; {mean:.2f} s a step after the first ({mean / baseline:.2f}x); "
              f"peak {result['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
