"""One training step's LoRA gradients on a tiny random llama, written to OUT (safetensors).

Alone: ``python tests/ranks_step.py OUT [one-pass]``; sharded: under ``torch.distributed.run``
with N processes (gloo), where the first rank gathers the gradients whole. ``one-pass``: every
example in one pass, as on CUDA. tests/test_processes.py compares the two.
"""

from __future__ import annotations

import random
import sys


def examples(seed: int, count: int, kind: str):
    """``count`` examples: a shared 10-token prefix, then a few prompt and answer tokens."""
    from tunechat.personalize.data import IGNORE, Example

    rng = random.Random(seed)
    out = []
    prefix = [rng.randrange(1, 97) for _ in range(10)]
    for _ in range(count):
        prompt = [rng.randrange(1, 97) for _ in range(rng.randrange(2, 6))]
        answer = [rng.randrange(1, 97) for _ in range(rng.randrange(2, 5))]
        ids = prefix + prompt + answer
        out.append(Example(ids, [IGNORE] * (len(prefix) + len(prompt)) + answer, kind))
    return out


def main(out: str, one_pass: bool) -> None:
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunechat.personalize import train
    from tunechat.personalize.ranks import ALONE, Ranks
    from tunechat.personalize.recipe import get_recipe
    from tunechat.personalize.reference import ReferenceCache

    sharded = "RANK" in __import__("os").environ
    if sharded:
        dist.init_process_group("gloo")
    ranks = Ranks.joined() if sharded else ALONE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    recipe = get_recipe("replay-kl").with_(rank=4, alpha=8, kl_weight=0.5, replay_weight=1.0)
    model = train.add_lora(LlamaForCausalLM(config), recipe)
    for name, param in model.named_parameters():  # B starts at zero: give every factor a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    if sharded:
        from tunechat.personalize.sharded import shard

        shard(model, "cpu")
    model.train()
    facts, negatives, replay = examples(1, 3, "fact"), examples(2, 2, "negative"), examples(3, 5, "replay")
    done = train.backward_step(model, facts, negatives, replay, recipe, ReferenceCache(), 0, "cpu", one_pass=one_pass,
                               ranks=ranks)
    grads = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            grad = param.grad.full_tensor() if sharded else param.grad
            grads[name] = grad.detach().clone().contiguous()
    losses = ranks.total(torch.cat([done.fact_losses, done.loss[None]]))
    grads["fact_losses"] = losses[:-1].contiguous()
    grads["loss"] = losses[-1:].contiguous()
    if ranks.rank == 0:
        save_file(grads, out)
    if sharded:
        ranks.wait_for_all()  # as the training ranks leave (personalize/sharded.py)
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] == ["one-pass"])
