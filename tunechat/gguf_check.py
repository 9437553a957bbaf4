"""Cheap checks that a file is a whole, readable GGUF before llama.cpp is handed it.

``gguf.GGUFReader`` parses every tokenizer string into numpy objects (seconds for a 49k
vocabulary), too slow for start-up. This reads only the header, skips the metadata values and
reads the tensor index, which is enough to catch a wrong file, a truncated download or a
half-written model in milliseconds.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class ModelFileError(Exception):
    """A model file that is missing, not a GGUF, or damaged."""


def check_gguf_file(path: Path) -> None:
    """Raise ModelFileError with a clear reason unless ``path`` is a complete GGUF file."""
    if not path.exists():
        raise ModelFileError(f"Model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"Not a file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelFileError(f"{path.name} is not a GGUF model (it does not start with 'GGUF').")
        try:
            end = _data_end(fh)
        except (struct.error, ValueError, KeyError, UnicodeDecodeError, OverflowError) as exc:
            raise ModelFileError(f"{path.name} is damaged: its header cannot be read ({exc}).") from None
    if end > size:
        raise ModelFileError(
            f"{path.name} is truncated: it should be at least {end:,} bytes but is {size:,}."
        )


def _read(fh: BinaryIO, fmt: str):
    data = fh.read(struct.calcsize(fmt))
    return struct.unpack("<" + fmt, data)[0]


def _skip_string(fh: BinaryIO) -> None:
    fh.seek(_read(fh, "Q"), 1)


def _read_string(fh: BinaryIO) -> str:
    n = _read(fh, "Q")
    if n > 1 << 20:
        raise ValueError("implausible string length")
    return fh.read(n).decode("utf-8")


def _skip_value(fh: BinaryIO, vtype: int) -> None:
    if vtype in _SCALAR_SIZES:
        fh.seek(_SCALAR_SIZES[vtype], 1)
    elif vtype == _STRING:
        _skip_string(fh)
    elif vtype == _ARRAY:
        item_type, count = _read(fh, "I"), _read(fh, "Q")
        if item_type in _SCALAR_SIZES:
            fh.seek(_SCALAR_SIZES[item_type] * count, 1)
        else:
            for _ in range(count):
                _skip_value(fh, item_type)
    else:
        raise ValueError(f"unknown metadata type {vtype}")


def _data_end(fh: BinaryIO) -> int:
    """Byte offset where the last tensor's data ends, from the header alone."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    version = _read(fh, "I")
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    n_tensors, n_kv = _read(fh, "Q"), _read(fh, "Q")
    alignment = 32
    for _ in range(n_kv):
        key = _read_string(fh)
        vtype = _read(fh, "I")
        if key == "general.alignment" and vtype == 4:
            alignment = _read(fh, "I")
        else:
            _skip_value(fh, vtype)
    if n_tensors == 0:
        raise ValueError("no tensors")
    end_of_data = 0
    for _ in range(n_tensors):
        _skip_string(fh)
        n_dims = _read(fh, "I")
        elements = 1
        for _ in range(n_dims):
            elements *= _read(fh, "Q")
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(_read(fh, "I"))]
        offset = _read(fh, "Q")
        end_of_data = max(end_of_data, offset + elements // block * type_size)
    header_end = fh.tell()
    data_start = (header_end + alignment - 1) // alignment * alignment
    return data_start + end_of_data
