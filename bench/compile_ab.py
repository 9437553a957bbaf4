"""A/B of a compiled training step: every decoder layer through ``torch.compile`` (inductor,
dynamic shapes, peft's own LoRA forward so every layer shares one graph) against the same
layers eager, the same step code on the same draws, interleaved. The first compiled step pays
the compilation (a warm inductor cache in /tmp/torchinductor_$USER makes the second process's
shorter).

    GOMP_SPINCOUNT=10000 python bench/compile_ab.py [STEPS]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    import torch
    from step import setup  # bench/step.py

    from tunechat.personalize import train
    from tunechat.personalize.reference import ReferenceCache

    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    model, facts, replay, recipe, pad_id = setup(10)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {name: train.optimizer_for(params, recipe, "cpu") for name in ("eager", "compiled")}
    reference = ReferenceCache()
    with torch.no_grad():
        for i in range(0, len(replay), 16):
            batch = replay[i:i + 16]
            train._kl_to_base(model, train._forward(model, batch, pad_id, "cpu", None), batch, reference)
    model.train()
    for m in model.modules():
        m.__dict__.pop("forward", None)  # peft's own forward: one code object for every layer
    layers = train._decoder(model).model.layers
    for layer in layers:
        layer.compile(dynamic=True)
    compiled = {layer: layer._compiled_call_impl for layer in layers}

    def use(name: str) -> None:
        for layer in layers:
            layer._compiled_call_impl = compiled[layer] if name == "compiled" else None

    rng = random.Random(0)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(steps):
        facts_drawn = [forms[rng.randrange(len(forms))] for forms in facts]
        replay_drawn = [replay[i] for i in rng.sample(range(len(replay)), 10)]
        for name in (["compiled", "eager"] if r % 2 else ["eager", "compiled"]):
            use(name)
            start = time.perf_counter()
            train.train_step(model, optimizers[name], params, facts_drawn, [], replay_drawn, recipe, reference,
                             pad_id, "cpu")
            times[name].append(time.perf_counter() - start)
        print(r, {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    for name, values in times.items():
        print(f"{name}: first step {values[0]:.1f} s, then median {statistics.median(values[2:]):.3f} s a step")


if __name__ == "__main__":
    main()
