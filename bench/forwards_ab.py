"""A/B of the training forwards: fused RMSNorm and SiLU MLP (personalize/fused.py) against the
modules' own forwards, the same step code on the same draws, interleaved. Prints the tensors a
replay pass keeps for its backward and the CPU seconds a step; ``ONLY=mlp`` leaves the norms as
they are.

    GOMP_SPINCOUNT=10000 python bench/forwards_ab.py [ROUNDS]
"""

from __future__ import annotations

import os
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

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    model, facts, replay, recipe, pad_id = setup(10)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {name: train.optimizer_for(params, recipe, "cpu") for name in ("fused", "own")}
    reference = ReferenceCache()
    with torch.no_grad():
        for i in range(0, len(replay), 16):
            batch = replay[i:i + 16]
            train._kl_to_base(model, train._forward(model, batch, pad_id, "cpu", None), batch, reference)
    model.train()
    only_mlp = os.environ.get("ONLY") == "mlp"
    for m in model.modules():
        if only_mlp and type(m).__name__.endswith("RMSNorm"):
            m.__dict__.pop("forward", None)
    toggled = [m for m in model.modules() if "forward" in m.__dict__
               and (hasattr(m, "gate_proj") or type(m).__name__.endswith("RMSNorm"))]
    fused_forwards = {m: m.__dict__["forward"] for m in toggled}

    def use(name: str) -> None:
        for m in toggled:
            if name == "fused":
                m.forward = fused_forwards[m]
            else:
                m.__dict__.pop("forward", None)

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for name in ("own", "fused"):
        use(name)
        kept: dict[int, int] = {}

        def keep(t, kept=kept):
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            run = train._forward(model, replay[:10], pad_id, "cpu", None)
        mib = sum(n for ptr, n in kept.items() if ptr not in weights) / 2**20
        print(f"{name}: a replay pass of {run.tokens} tokens keeps {mib:.0f} MiB (weights left out)")
        del run
    rng = random.Random(0)
    times: dict[str, list[float]] = {"fused": [], "own": []}
    for r in range(rounds):
        facts_drawn = [forms[rng.randrange(len(forms))] for forms in facts]
        replay_drawn = [replay[i] for i in rng.sample(range(len(replay)), 10)]
        for name in (["fused", "own"] if r % 2 else ["own", "fused"]):
            use(name)
            start = time.process_time()
            train.train_step(model, optimizers[name], params, facts_drawn, [], replay_drawn, recipe, reference,
                             pad_id, "cpu")
            times[name].append(time.process_time() - start)
        print(r, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values[1:]):.3f} CPU s a step")
    ratio = statistics.median(a / b for a, b in zip(times["fused"][1:], times["own"][1:]))
    print(f"fused / own: {ratio:.3f}")


if __name__ == "__main__":
    main()
