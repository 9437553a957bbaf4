"""Which Hugging Face model types we can write as GGUF, and how.

Each family's spec says what llama.cpp's graph for it expects that the HF weights do not
already give: llama's q/k rows in its interleaved RoPE order, gemma's RMSNorm weights with
the +1 that transformers applies at run time, and which hyperparameters it reads. A config
whose features llama.cpp would silently compute differently (a RoPE scaling we do not carry,
a sliding-window layout its graph does not have) is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gguf


class UnsupportedArchitecture(Exception):
    pass


@dataclass(frozen=True)
class ArchSpec:
    arch: gguf.MODEL_ARCH
    permute_qk: bool  # llama.cpp's llama graph expects q/k rows in its own RoPE order
    norm_offset: float = 0.0  # added to every ``*norm.weight`` (gemma's RMSNorm scales by 1 + w)
    rope_types: frozenset[str] = frozenset({"default"})  # RoPE variants llama.cpp reproduces for it
    softcapping: bool = False  # writes attention and final logit soft-capping
    sliding_window: bool = False  # writes ``attention.sliding_window``
    original_context: bool = False  # writes ``rope.scaling.original_context_length`` (Phi-3's)


# Insertion order is the order the refusal message names them in.
SUPPORTED: dict[str, ArchSpec] = {
    "llama": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True, rope_types=frozenset({"default", "llama3"})),
    "mistral": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "qwen2": ArchSpec(gguf.MODEL_ARCH.QWEN2, permute_qk=False),
    "qwen3": ArchSpec(gguf.MODEL_ARCH.QWEN3, permute_qk=False),
    "gemma2": ArchSpec(gguf.MODEL_ARCH.GEMMA2, permute_qk=False, norm_offset=1.0, softcapping=True,
                       sliding_window=True),
    "phi3": ArchSpec(gguf.MODEL_ARCH.PHI3, permute_qk=False, sliding_window=True, original_context=True),
}


def _supported_names() -> str:
    return ", ".join(SUPPORTED)


def spec_for(model_type: str) -> ArchSpec:
    try:
        return SUPPORTED[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"Cannot write a {model_type!r} model as GGUF: supported architectures are {_supported_names()}."
        ) from None


def gguf_arch_name(spec: ArchSpec) -> str:
    return gguf.MODEL_ARCH_NAMES[spec.arch]


def rope_parameters(config: Mapping) -> dict:
    """The RoPE settings of a config as transformers 5 writes them (``rope_parameters``) or as
    older config.json files do (``rope_theta`` beside ``rope_scaling``, whose type may be
    spelled ``type``); ``rope_type`` is always set."""
    out: dict = {}
    if config.get("rope_theta") is not None:
        out["rope_theta"] = config["rope_theta"]
    for key in ("rope_scaling", "rope_parameters"):
        out.update(config.get(key) or {})
    out["rope_type"] = str(out.get("rope_type") or out.get("type") or "default")
    return out


def head_dim(config: Mapping) -> int:
    return int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))


def spec_for_config(config: Mapping) -> ArchSpec:
    """``spec_for`` the config's model type, once every feature it uses is one llama.cpp's graph
    for that family computes the way transformers does."""
    model_type = str(config.get("model_type"))
    spec = spec_for(model_type)
    rope_type = rope_parameters(config)["rope_type"]
    if rope_type not in spec.rope_types:
        raise UnsupportedArchitecture(
            f"Cannot write this {model_type!r} model as GGUF: its RoPE scaling {rope_type!r} is not supported "
            f"(supported for {model_type}: {', '.join(sorted(spec.rope_types))})."
        )
    if model_type in ("qwen2", "qwen3") and config.get("use_sliding_window"):
        raise UnsupportedArchitecture(
            f"Cannot write this {model_type!r} model as GGUF: it uses sliding-window attention, which llama.cpp's "
            f"{model_type} graph does not have (it would attend to the whole context)."
        )
    if model_type == "gemma2":
        _check_gemma2(config)
    return spec


def _check_gemma2(config: Mapping) -> None:
    # llama.cpp scales gemma2 queries by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 46-layer
    # 27B) and alternates sliding and global layers, the first sliding.
    n_layers = int(config["num_hidden_layers"])
    dim = head_dim(config)
    expected = int(config["hidden_size"]) // int(config["num_attention_heads"]) if n_layers == 46 else dim
    scalar = config.get("query_pre_attn_scalar")
    if scalar is not None and int(scalar) != expected:
        raise UnsupportedArchitecture(
            f"Cannot write this 'gemma2' model as GGUF: llama.cpp scales its queries by 1/sqrt({expected}), the model "
            f"by 1/sqrt({scalar}) (query_pre_attn_scalar)."
        )
    layer_types = config.get("layer_types")
    alternating = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    if layer_types is not None and list(layer_types) != alternating:
        raise UnsupportedArchitecture(
            "Cannot write this 'gemma2' model as GGUF: llama.cpp alternates sliding and global attention layers "
            "(the first sliding); this model's layer_types differ."
        )
