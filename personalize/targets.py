"""Which linear layers get LoRA adapters, per architecture: every projection of every block.

Most supported families name them as llama does (q/k/v/o, gate/up/down); phi3 fuses q, k and
v into ``qkv_proj`` and gate and up into ``gate_up_proj``. peft only refuses a target list
when no name matches, so llama's names on a phi3 model would silently adapt o_proj and
down_proj alone: ``target_modules`` given a model also checks that each name is there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEPARATE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FUSED = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
BY_MODEL_TYPE: dict[str, tuple[str, ...]] = {
    "llama": SEPARATE, "mistral": SEPARATE, "qwen2": SEPARATE, "qwen3": SEPARATE, "gemma2": SEPARATE,
    "phi3": FUSED,
}


class NoTargets(ValueError):
    pass


def _model_type(model_or_config: Any) -> str:
    if isinstance(model_or_config, Mapping):
        return str(model_or_config.get("model_type"))
    config = getattr(model_or_config, "config", model_or_config)
    return str(getattr(config, "model_type", None))


def target_modules(model_or_config: Any) -> list[str]:
    """The module names (last component) to adapt in a model of this architecture; a model, its
    config or a config dict. With a model, every name must be a linear layer of its blocks."""
    model_type = _model_type(model_or_config)
    if model_type not in BY_MODEL_TYPE:
        raise NoTargets(f"No LoRA targets for a {model_type!r} model: supported architectures are "
                        f"{', '.join(BY_MODEL_TYPE)}.")
    names = list(BY_MODEL_TYPE[model_type])
    if hasattr(model_or_config, "named_modules"):
        import torch

        found = {name.rsplit(".", 1)[-1] for name, module in model_or_config.named_modules()
                 if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"}
        missing = [n for n in names if n not in found]
        if missing:
            raise NoTargets(f"This {model_type} model has no linear layer named {', '.join(missing)}.")
    return names
