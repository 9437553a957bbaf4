"""The training step of a random-weight model of a real shape, on CUDA when present: seconds a
step and its share of the device's measured matrix-product rate (MFU).

    python bench/model_step.py                      # Qwen2.5-1.5B's shape (bf16 autocast on CUDA)
    python bench/model_step.py --shape smollm2-135m --steps 10
    python bench/model_step.py --shape tiny --steps 2 --device cpu   # a check that it runs

The batch is the default recipe's at its size: 10 facts and 4 negatives (a 24-token shared
prefix, 10-token questions, 8-token answers) and 10 replay examples (12-token questions,
24-token answers), drawn at random from the vocabulary; the step is ``train.train_step`` as
personalize runs it (on CUDA one packed pass, on CPU two), its KL references filled before the
timing. Weights are random: a step's work depends on the shapes alone.

The step's work is counted as bench/step.py counts it (every frozen linear layer of every
block forward and input gradient over the packed tokens, the head at the answer rows both
ways; LoRA's rank-r products and attention left out): a lower bound. The device's rate is
measured, not looked up: square bf16 products of 8192 on CUDA, float32 products of the step's
own shapes on CPU (bench/personalize.py's floor).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SHAPES: dict[str, dict] = {
    "qwen2.5-1.5b": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                     "tie_word_embeddings": True, "max_position_embeddings": 32768, "rope_theta": 1000000.0},
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                     "tie_word_embeddings": True, "max_position_embeddings": 8192, "rope_theta": 100000.0},
    "tiny": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": True,
             "max_position_embeddings": 512},
}
PREFIX, QUESTION, FACT_ANSWER, REPLAY_QUESTION, REPLAY_ANSWER = 24, 10, 8, 12, 24
FACTS, NEGATIVES, REPLAY = 10, 4, 10


def build_model(shape: str, device: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunechat.personalize import train
    from tunechat.personalize.recipe import get_recipe

    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):  # random weights made where they are used
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    recipe = get_recipe(None)
    return train.add_lora(model, recipe), recipe


def batch(vocab: int, rng: random.Random):
    """(facts, negatives, replay) of the default recipe's sizes, token ids drawn at random."""
    from tunechat.personalize.data import IGNORE, Example

    prefix = [rng.randrange(vocab) for _ in range(PREFIX)]

    def example(question: int, answer: int, kind: str) -> Example:
        asked = [rng.randrange(vocab) for _ in range(question)]
        said = [rng.randrange(vocab) for _ in range(answer)]
        return Example(prefix + asked + said, [IGNORE] * (PREFIX + question) + said, kind)

    facts = [example(QUESTION, FACT_ANSWER, "fact") for _ in range(FACTS)]
    negatives = [example(QUESTION, FACT_ANSWER, "negative") for _ in range(NEGATIVES)]
    replay = [example(REPLAY_QUESTION, REPLAY_ANSWER, "replay") for _ in range(REPLAY)]
    return facts, negatives, replay


def counted_flop(passes, config) -> tuple[float, list[tuple[int, int, int, int]]]:
    """(FLOP, shapes) of the step's counted matrix products (bench/step.py's ``pass_matmuls``)."""
    from step import dims_of, pass_matmuls

    from tunechat.personalize import train

    dims = dims_of(config.to_dict())
    shapes = []
    for examples in passes:
        shared = train.shared_prefix_length(examples)
        packed = train._pack(examples, shared if shared >= train.MIN_SHARED_PREFIX else 0)
        shapes += pass_matmuls(len(packed.ids), len(packed.rows), dims)
    return sum(2.0 * m * k * n * count for m, k, n, count in shapes), shapes


def device_rate(device: str, shapes) -> tuple[float, str]:
    """(FLOP/s, what was measured) of the device's dense matrix products."""
    import torch

    if device == "cuda":
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        reps, start = 20, time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        return 2.0 * 8192 ** 3 * reps / (time.perf_counter() - start), "bf16 8192x8192 products"
    from step import matmul_floor  # bench/personalize.py's, as bench/step.py loads it

    flop, seconds = matmul_floor(shapes, seconds_each=0.1)
    return flop / seconds, "float32 products of the step's own shapes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="qwen2.5-1.5b")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when present")
    args = parser.parse_args()

    import torch

    from tunechat.personalize import train
    from tunechat.personalize.reference import ReferenceCache

    device = args.device or train.pick_device()[0]
    if device == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    autocast = torch.bfloat16 if device == "cuda" else None
    start = time.perf_counter()
    model, recipe = build_model(args.shape, device)
    config = train._decoder(model).config
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = train.optimizer_for(params, recipe, device)
    reference = ReferenceCache().to(device)
    rng = random.Random(0)
    draws = [batch(config.vocab_size, rng) for _ in range(args.steps + 1)]
    total = sum(p.numel() for p in model.parameters())
    print(f"{args.shape}: {total / 1e9:.2f}B parameters ({sum(p.numel() for p in params) / 1e6:.1f}M trained), "
          f"on {device}{' (' + torch.cuda.get_device_name(0) + ')' if device == 'cuda' else ''}, "
          f"built in {time.perf_counter() - start:.1f} s", flush=True)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    times = []
    for i, (facts, negatives, replay) in enumerate(draws):
        sync()
        begin = time.perf_counter()
        train.train_step(model, optimizer, params, facts, negatives, replay, recipe, reference, 0, device, autocast)
        sync()
        if i:  # the first step also fills the references and picks kernels
            times.append(time.perf_counter() - begin)
    step = statistics.median(times)
    facts, negatives, replay = draws[0]
    one_pass = device == "cuda"
    passes = [[*facts, *negatives, *replay]] if one_pass else [[*facts, *negatives], replay]
    flop, shapes = counted_flop(passes, config)
    rate, measured = device_rate(device, shapes)
    print(f"step: {step:.3f} s (median of {len(times)}), {'one pass' if one_pass else 'two passes'}, "
          f">= {flop / 1e9:.1f} GFLOP counted")
    print(f"{flop / step / 1e12:.2f} TFLOP/s; the device's {measured}: {rate / 1e12:.2f} TFLOP/s; "
          f"MFU {flop / step / rate:.1%}")
    if device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
