"""The adapters folded into the weights, one weight at a time.

``merged_weights`` leaves the peft model as it is (its active adapters compute what the merged
weights do: W x + scale * B A x) and gives every weight by its HF name, a LoRA-wrapped one as
W + scale * B @ A in float32, computed when the GGUF writer asks for it and not kept; so no
second copy of the model is built, whatever dtype the base weights are held in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tunechat.convert.writer import LazyState


class MergeError(Exception):
    pass


def merged_weights(model: Any) -> LazyState:
    """Float32 weights of ``model`` (a peft LoRA model) with its active adapters folded in, keyed
    as the model without adapters names them (``model.layers.0.self_attn.q_proj.weight``)."""
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

    def load(name: str) -> np.ndarray:
        with torch.no_grad():
            weights = tensors[name].detach().float()
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
