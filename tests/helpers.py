"""Test helpers: poll for a condition instead of sleeping a fixed time; a stand-in version."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path


def add_version(base_model: Path, name: str = "personal-test", **manifest) -> Path:
    """A personal version folder whose model is a copy of ``base_model`` (what the registry
    and the chat need from a version, without training one); returns its model file."""
    from tunechat.core import paths
    from tunechat.core.manifest import MANIFEST_FILE, Manifest

    version = paths.models_dir() / name
    version.mkdir()
    shutil.copy(base_model, version / "model.gguf")
    Manifest(base_path=str(base_model), created_at=1, **manifest).write(version / MANIFEST_FILE)
    return version / "model.gguf"


async def wait_until(condition: Callable[[], bool], pilot=None, timeout: float = 120.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        if pilot is not None:
            await pilot.pause(interval)
        else:
            await asyncio.sleep(interval)


# HF module → GGUF tensor of each block's linear projections.
PROJECTIONS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def random_lora_gguf(base_gguf: Path, out: Path, rank: int = 4, scale: float = 0.05, seed: int = 0,
                     modules: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj")) -> Path:
    """A llama.cpp LoRA adapter of random factors on ``modules`` of every block of ``base_gguf``
    (a llama-architecture GGUF): a personal side for the scoped chat without training one."""
    import numpy as np

    from tunechat.convert.header import decode_value, read_header
    from tunechat.convert.lora import write_lora_gguf

    header = read_header(base_gguf)
    meta = {k: decode_value(v)[0] for k, v in header.metadata_raw.items() if k.startswith("llama.")}
    config = {"model_type": "llama", "num_hidden_layers": meta["llama.block_count"],
              "num_attention_heads": meta["llama.attention.head_count"],
              "num_key_value_heads": meta["llama.attention.head_count_kv"],
              "hidden_size": meta["llama.embedding_length"]}
    shapes = {t.name: t.shape for t in header.tensors}  # GGUF order: (inputs, outputs)
    rng = np.random.default_rng(seed)
    adapter = {}
    for i in range(int(config["num_hidden_layers"])):
        for module in modules:
            n_in, n_out = shapes[f"blk.{i}.{PROJECTIONS[module]}.weight"]
            key = f"base_model.model.model.layers.{i}.{module}"
            adapter[f"{key}.lora_A.weight"] = (rng.standard_normal((rank, n_in)) * scale).astype(np.float32)
            adapter[f"{key}.lora_B.weight"] = (rng.standard_normal((n_out, rank)) * scale).astype(np.float32)
    write_lora_gguf(adapter, 2 * rank, config, base_gguf, out)
    return out
