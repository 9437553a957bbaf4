"""Which Hugging Face model types we can write as GGUF, and how."""

from __future__ import annotations

from dataclasses import dataclass

import gguf


class UnsupportedArchitecture(Exception):
    pass


@dataclass(frozen=True)
class ArchSpec:
    arch: gguf.MODEL_ARCH
    permute_qk: bool  # llama.cpp's llama graph expects q/k rows in its own RoPE order


SUPPORTED: dict[str, ArchSpec] = {
    "llama": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "mistral": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "qwen2": ArchSpec(gguf.MODEL_ARCH.QWEN2, permute_qk=False),
}


def spec_for(model_type: str) -> ArchSpec:
    try:
        return SUPPORTED[model_type]
    except KeyError:
        names = ", ".join(sorted(SUPPORTED))
        raise UnsupportedArchitecture(
            f"Cannot write a {model_type!r} model as GGUF: supported architectures are {names}."
        ) from None


def gguf_arch_name(spec: ArchSpec) -> str:
    return gguf.MODEL_ARCH_NAMES[spec.arch]
