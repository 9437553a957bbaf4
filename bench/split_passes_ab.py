"""A/B of smaller passes: each of the step's two passes (facts with negatives, replay) split in
two halves, each half backpropagated at once (the same summed loss, about half the activations
alive), against the shipped step. Run one variant per process (peak RSS is per process):

    SPLIT=0 GOMP_SPINCOUNT=10000 python bench/split_passes_ab.py
    SPLIT=1 GOMP_SPINCOUNT=10000 python bench/split_passes_ab.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def split_backward_step(model, fact_batch, negative_batch, replay_batch, recipe, reference, pad_id, device,
                        autocast_dtype=None, one_pass=None):
    """``train.backward_step`` with every pass split in two halves (a loss per half, scaled so
    the halves sum to the same loss)."""
    import torch

    from tunechat.personalize import train
    from tunechat.personalize.data import IGNORE

    taught = [*fact_batch, *negative_batch]
    half = (len(taught) + 1) // 2
    fact_tok, reproduced, tokens, loss = [], [], 0, 0.0
    for chunk in (taught[:half], taught[half:]):
        run = train._forward(model, chunk, pad_id, device, autocast_dtype)
        tokens += run.tokens
        per_example = run.per_example_mean()
        (per_example.sum() / len(taught)).backward()
        fact_tok.append(per_example.detach())
        reproduced.append(train._reproduced(run))
        loss = loss + per_example.detach().sum() / len(taught)
        del run
    answer_tokens = sum(sum(1 for label in e.labels[1:] if label != IGNORE) for e in replay_batch)
    rhalf = (len(replay_batch) + 1) // 2
    for chunk in (replay_batch[:rhalf], replay_batch[rhalf:]):
        run = train._forward(model, chunk, pad_id, device, autocast_dtype)
        tokens += run.tokens
        part = recipe.replay_weight * run.per_token.sum()
        if recipe.kl_weight > 0:
            part = part + recipe.kl_weight * train._kl_to_base(model, run, chunk, reference).sum()
        part = part / max(1, answer_tokens)
        part.backward()
        loss = loss + part.detach()
        del run
    every = torch.cat(fact_tok)[:len(fact_batch)]
    return train._Backward(every, torch.cat(reproduced)[:len(fact_batch)].all(), loss, tokens)


def main() -> None:
    import step_memory

    from tunechat.personalize import train

    if os.environ.get("SPLIT") == "1":
        train.backward_step = split_backward_step
    step_memory.main()


if __name__ == "__main__":
    main()
