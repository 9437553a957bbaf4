"""The adapters folded into the weights, one weight at a time.

``merged_weights`` leaves the peft model as it is (its active adapters compute what the merged
weights do: W x + scale * B A x) and gives every weight by its HF name, a LoRA-wrapped one as
W + scale * B @ A in float32, computed when the GGUF writer asks for it and not kept; so no
second copy of the model is built. W is read from the base's own files when ``base_weights``
gives it: exact, whatever form training held the base in (tunechat.personalize.half).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tunechat.convert.header import safetensors_index
from tunechat.convert.writer import LazyState

BaseWeights = Callable[[str], "np.ndarray | None"]


class MergeError(Exception):
    pass


def folder_weights(folder: Path) -> BaseWeights:
    """A weight of an HF folder by name, as float32 (None when its files do not hold it), read
    (pread) when asked for."""
    from safetensors import safe_open

    where = {key: path for path in sorted(folder.glob("*.safetensors")) for key in safetensors_index(path)[1]}

    def read(name: str) -> np.ndarray | None:
        path = where.get(name)
        if path is None:
            return None
        with safe_open(str(path), framework="pt", device="cpu", backend="pread") as fh:
            return fh.get_tensor(name).float().numpy()

    return read


def merged_weights(model: Any, base_weights: BaseWeights | None = None) -> LazyState:
    """Float32 weights of ``model`` (a peft LoRA model) with its active adapters folded in, keyed
    as the model without adapters names them (``model.layers.0.self_attn.q_proj.weight``); the
    base part from ``base_weights`` where it gives one, else from the model."""
    import torch
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted: dict[str, Any] = {f"{name}.weight": module for name, module in base.named_modules()
                               if isinstance(module, LoraLayer)}
    tensors: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict(keep_vars=True).items():
        if ".lora_" in key:
            continue
        tensors[key.replace(".base_layer.", ".")] = value
    for name, module in adapted.items():
        for adapter in module.active_adapters:
            if adapter in module.lora_A and (module.use_dora.get(adapter) or module.fan_in_fan_out):
                raise MergeError(f"{name}: only plain LoRA adapters are folded in here (no DoRA, fan-in-fan-out).")

    shared: dict[int, list[str]] = {}  # a tied output head is the embedding under another name
    for key, value in tensors.items():
        shared.setdefault(value.data_ptr(), []).append(key)

    def exact(name: str) -> np.ndarray | None:
        if base_weights is None:
            return None
        for alias in shared[tensors[name].data_ptr()]:
            weights = base_weights(alias)
            if weights is not None:
                return weights
        return None

    def load(name: str) -> np.ndarray:
        with torch.no_grad():
            read = exact(name)
            weights = torch.from_numpy(read).to(tensors[name].device) if read is not None else \
                tensors[name].detach().float()
            module = adapted.get(name)
            if module is not None and not module.merged:
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        b = module.lora_B[adapter].weight.detach().float()
                        a = module.lora_A[adapter].weight.detach().float()
                        # peft's own arithmetic (get_delta_weight, then +=): the same float32 sums
                        weights = weights + (b @ a) * module.scaling[adapter]
            return weights.cpu().numpy()

    return LazyState({name: tuple(t.shape) for name, t in tensors.items()}, load)
