"""A fast reader for a GGUF file's header: raw metadata bytes and the tensor index (and, for
the Hugging Face side, a safetensors file's index: ``safetensors_index``).

``gguf.GGUFReader`` builds numpy views for every tokenizer string (seconds for a 49k
vocabulary). Checks at start-up and byte-for-byte metadata comparisons need only the raw
bytes, which this reads in milliseconds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class HeaderError(ValueError):
    pass


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int
    n_bytes: int


@dataclass
class GGUFHeader:
    version: int
    metadata_raw: dict[str, bytes] = field(default_factory=dict)  # key -> type id + value bytes
    strings: dict[str, str] = field(default_factory=dict)  # the string-valued keys, decoded
    tensors: list[TensorInfo] = field(default_factory=list)
    data_start: int = 0

    @property
    def data_end(self) -> int:
        return self.data_start + max((t.offset + t.n_bytes for t in self.tensors), default=0)


def read_header(path: Path) -> GGUFHeader:
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise HeaderError("it does not start with 'GGUF'")
        try:
            return _read(fh)
        except (struct.error, KeyError, UnicodeDecodeError, OverflowError) as exc:
            raise HeaderError(str(exc) or type(exc).__name__) from None


def _unpack(fh: BinaryIO, fmt: str):
    return struct.unpack("<" + fmt, fh.read(struct.calcsize(fmt)))[0]


def _read_string(fh: BinaryIO) -> str:
    n = _unpack(fh, "Q")
    if n > 1 << 24:
        raise HeaderError("implausible string length")
    return fh.read(n).decode("utf-8")


def _skip_value(fh: BinaryIO, vtype: int) -> None:
    if vtype in _SCALAR_SIZES:
        fh.seek(_SCALAR_SIZES[vtype], 1)
    elif vtype == _STRING:
        fh.seek(_unpack(fh, "Q"), 1)
    elif vtype == _ARRAY:
        item_type, count = _unpack(fh, "I"), _unpack(fh, "Q")
        if item_type in _SCALAR_SIZES:
            fh.seek(_SCALAR_SIZES[item_type] * count, 1)
        else:
            for _ in range(count):
                _skip_value(fh, item_type)
    else:
        raise HeaderError(f"unknown metadata type {vtype}")


_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def decode_value(raw: bytes) -> tuple[object, int, int | None]:
    """(value, type id, array item type id or None) of one ``metadata_raw`` entry; what
    ``gguf.GGUFWriter.add_key_value`` takes to write the same field again."""
    import io

    fh = io.BytesIO(raw)
    vtype = _unpack(fh, "I")
    if vtype == _ARRAY:
        item_type, count = _unpack(fh, "I"), _unpack(fh, "Q")
        if item_type == _STRING:
            return [_read_string(fh) for _ in range(count)], vtype, item_type
        fmt = _SCALAR_FORMATS[item_type]
        return list(struct.unpack(f"<{count}{fmt}", fh.read(struct.calcsize(fmt) * count))), vtype, item_type
    if vtype == _STRING:
        return _read_string(fh), vtype, None
    return _unpack(fh, _SCALAR_FORMATS[vtype]), vtype, None


def _read(fh: BinaryIO) -> GGUFHeader:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    header = GGUFHeader(version=_unpack(fh, "I"))
    if header.version not in (2, 3):
        raise HeaderError(f"unsupported GGUF version {header.version}")
    n_tensors, n_kv = _unpack(fh, "Q"), _unpack(fh, "Q")
    spans: dict[str, tuple[int, int]] = {}
    alignment = 32
    for _ in range(n_kv):
        key = _read_string(fh)
        start = fh.tell()
        vtype = _unpack(fh, "I")
        if vtype == _STRING:
            header.strings[key] = _read_string(fh)
        elif key == "general.alignment" and vtype == 4:
            alignment = _unpack(fh, "I")
        else:
            _skip_value(fh, vtype)
        spans[key] = (start, fh.tell())
    for _ in range(n_tensors):
        name = _read_string(fh)
        dims = tuple(_unpack(fh, "Q") for _ in range(_unpack(fh, "I")))
        type_id = _unpack(fh, "I")
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
        elements = 1
        for d in dims:
            elements *= d
        header.tensors.append(TensorInfo(name, dims, type_id, _unpack(fh, "Q"), elements // block * type_size))
    header.data_start = (fh.tell() + alignment - 1) // alignment * alignment
    for key, (start, end) in spans.items():
        fh.seek(start)
        header.metadata_raw[key] = fh.read(end - start)
    return header


def read_tensor_bytes(path: Path, header: GGUFHeader, name: str) -> tuple[TensorInfo, bytes]:
    """One tensor's index entry and its stored bytes (in the tensor's own GGML type)."""
    info = next((t for t in header.tensors if t.name == name), None)
    if info is None:
        raise HeaderError(f"no tensor {name!r}")
    with open(path, "rb") as fh:
        fh.seek(header.data_start + info.offset)
        data = fh.read(info.n_bytes)
    if len(data) != info.n_bytes:
        raise HeaderError(f"tensor {name!r} is truncated")
    return info, data


def safetensors_index(path: Path) -> tuple[int, dict]:
    """(where the data starts, the header's tensor entries by name) of a safetensors file:
    its first 8 bytes give the JSON header's length."""
    import json

    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        index = json.loads(fh.read(size))
    index.pop("__metadata__", None)
    return 8 + size, index
