"""Cheap checks that a file is a whole, readable GGUF before llama.cpp is handed it."""

from __future__ import annotations

from pathlib import Path

from tunechat.convert.header import HeaderError, read_header


class ModelFileError(Exception):
    """A model file that is missing, not a GGUF, or damaged."""


def check_gguf_file(path: Path) -> None:
    """Raise ModelFileError with a clear reason unless ``path`` is a complete GGUF file.

    Catches a wrong file, a truncated download or a half-written model in milliseconds.
    """
    if not path.exists():
        raise ModelFileError(f"Model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"Not a file: {path}")
    try:
        header = read_header(path)
    except HeaderError as exc:
        if "GGUF" in str(exc):
            raise ModelFileError(f"{path.name} is not a GGUF model ({exc}).") from None
        raise ModelFileError(f"{path.name} is damaged: its header cannot be read ({exc}).") from None
    if not header.tensors:
        raise ModelFileError(f"{path.name} holds no tensors.")
    size = path.stat().st_size
    if header.data_end > size:
        raise ModelFileError(
            f"{path.name} is truncated: it should be at least {header.data_end:,} bytes but is {size:,}."
        )
