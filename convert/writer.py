"""Write a (merged) Hugging Face state dict of a supported family as a GGUF file.

Metadata, tokenizer and chat template are copied field by field from the base GGUF, so the
result chats exactly like the base. Tensor names come from gguf's tensor map; llama q/k are
permuted back into llama.cpp's RoPE layout (transformers un-permutes them when it loads a
GGUF); gemma's norms get back the +1 transformers subtracts; 1-D tensors (norms, biases) stay
F32; a tied embedding stays tied (no output.weight). Tensors that are no weights of the HF
model (llama 3's ``rope_freqs``) are copied from the base GGUF, or computed from the config
when the base is an HF folder.

Tensors are written as they come: ``write_gguf`` asks its mapping for one tensor at a time and
writes it before asking for the next, so a ``LazyState`` (values computed on access, as the
merged weights are) is never held whole, and neither is the written file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path

import gguf
import numpy as np

from tunechat.convert.architectures import ArchSpec, gguf_arch_name, head_dim, rope_parameters, spec_for_config
from tunechat.convert.header import GGUFHeader, decode_value, read_header, read_tensor_bytes
from tunechat.convert.hf_metadata import add_hf_metadata

OUTTYPES = {
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
}
# What personalize writes unless told otherwise, by measurement (docs/design.md; the same
# trained adapter stored several ways, 9 runs): q8_0 is half the size of f16 and chats 27-48 %
# faster on the 2-core CPU; its scores differ from f16's by a knife-edge question in 5 runs of
# 9, as often as the exact weights (adapter over the base) do.
DEFAULT_OUTTYPE = "q8_0"
# Written by GGUFWriter itself or describing the old tensors: never copied from the base.
_NOT_COPIED = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE}
# GGUF tensors with no counterpart among the HF model's weights (transformers drops them when
# it loads a GGUF): carried over from the base as they are.
COPIED_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


# Rows quantized at a time: a large matrix (the embedding) is never copied whole in float32.
QUANTIZE_ROWS = 4096


class ConversionError(Exception):
    pass


class LazyState(Mapping[str, np.ndarray]):
    """Float32 tensors by HF name, each computed by ``load(name)`` when asked for and not kept:
    what ``write_gguf`` writes one at a time. ``shapes`` gives every name (in order) and shape."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], load: Callable[[str], np.ndarray]) -> None:
        self.shapes = dict(shapes)
        self._load = load

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.shapes:
            raise KeyError(name)
        return self._load(name)

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def _shapes(state: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    if isinstance(state, LazyState):
        return dict(state.shapes)
    return {name: tuple(np.shape(value)) for name, value in state.items()}


def permute_for_llama_cpp(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF's q/k row order -> llama.cpp's (interleaved RoPE halves), as convert_hf_to_gguf does."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@lru_cache(maxsize=4)
def _name_map(arch: gguf.MODEL_ARCH, n_blocks: int) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(arch, n_blocks)  # slow to build: once per architecture


def gguf_tensor_name(hf_name: str, spec: ArchSpec, n_blocks: int) -> str:
    name = _name_map(spec.arch, n_blocks).get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise ConversionError(f"No GGUF name for tensor {hf_name!r}.")
    return name


def base_header(base_gguf: Path, spec: ArchSpec, what: str = "the weights are") -> GGUFHeader:
    """The base GGUF's header, once its architecture is checked to be ``spec``'s."""
    header = read_header(base_gguf)
    base_arch = header.strings.get(gguf.Keys.General.ARCHITECTURE)
    if base_arch != gguf_arch_name(spec):
        raise ConversionError(f"The base GGUF is {base_arch!r} but {what} {gguf_arch_name(spec)!r}.")
    return header


def _writer_copying_metadata(header: GGUFHeader, out_path: Path, spec: ArchSpec) -> gguf.GGUFWriter:
    """A writer holding every metadata field of the base GGUF ``header`` (but the file type)."""
    # The fast header reader, not gguf.GGUFReader: the latter spends seconds on numpy views
    # of a large vocabulary that is only copied through.
    writer = gguf.GGUFWriter(out_path, arch=gguf_arch_name(spec))
    for key, raw in header.metadata_raw.items():
        if key in _NOT_COPIED:
            continue
        value, val_type, sub_type = decode_value(raw)
        writer.add_key_value(key, value, gguf.GGUFValueType(val_type),
                             sub_type=gguf.GGUFValueType(sub_type) if sub_type is not None else None)
    return writer


def llama3_rope_factors(config: Mapping) -> np.ndarray:
    """llama.cpp's ``rope_freqs`` for a llama 3 RoPE scaling: the divisor of each rotary
    frequency, as convert_hf_to_gguf.py computes it from transformers' llama3 rule."""
    rope = rope_parameters(config)
    dim = head_dim(config)
    base = float(rope.get("rope_theta") or 10000.0)
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factors = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _extra_tensors(config: Mapping, base_gguf: Path, header: GGUFHeader | None) -> dict[str, np.ndarray]:
    """The non-weight tensors the GGUF needs: the base's own, else those the config implies."""
    out: dict[str, np.ndarray] = {}
    if header is not None:
        for info in header.tensors:
            if info.name in COPIED_TENSORS:
                if info.type_id != gguf.GGMLQuantizationType.F32:
                    raise ConversionError(f"The base's {info.name} is not stored as F32.")
                _, data = read_tensor_bytes(base_gguf, header, info.name)
                out[info.name] = np.frombuffer(data, dtype=np.float32).reshape(tuple(reversed(info.shape)))
    if "rope_freqs.weight" not in out and rope_parameters(config)["rope_type"] == "llama3":
        out["rope_freqs.weight"] = llama3_rope_factors(config)
    return out


def write_gguf(
    state_dict: Mapping[str, np.ndarray],
    config: Mapping,
    base_gguf: Path,
    out_path: Path,
    outtype: str = "f16",
    progress: Callable[[int, int], None] = lambda done, total: None,
    pre_tokenizer: str = "default",
    add_bos: bool | None = None,
) -> None:
    """Write ``state_dict`` (float32 numpy arrays keyed by HF names, or a ``LazyState``) as GGUF
    at ``out_path``, one tensor at a time.

    ``base_gguf`` is the GGUF whose metadata is copied, or an HF model folder whose config
    and tokenizer give the metadata (then ``pre_tokenizer`` names llama.cpp's pre-tokenizer,
    see ``tunechat.convert.hf_metadata.choose_pre_tokenizer``, and ``add_bos`` says whether the
    tokenizer starts a text with BOS). Every check runs before the file is created."""
    spec = spec_for_config(config)
    if outtype not in OUTTYPES:
        raise ConversionError(f"Unknown output type {outtype!r}; choose one of {', '.join(OUTTYPES)}.")
    tensor_type, file_type = OUTTYPES[outtype]
    n_blocks = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    tied = bool(config.get("tie_word_embeddings"))

    shapes = _shapes(state_dict)
    source = {name: name for name in shapes}  # GGUF-bound HF name -> the key it is read from
    if tied:  # one matrix serves both; safetensors may have kept it under either name
        if "lm_head.weight" in source:
            del source["lm_head.weight"]
            source.setdefault("model.embed_tokens.weight", "lm_head.weight")
    names = {hf_name: gguf_tensor_name(hf_name, spec, n_blocks) for hf_name in source}
    from_folder = Path(base_gguf).is_dir()
    header = None if from_folder else base_header(base_gguf, spec)
    extra = _extra_tensors(config, Path(base_gguf), header)

    if header is None:
        writer = gguf.GGUFWriter(out_path, arch=gguf_arch_name(spec))
        add_hf_metadata(writer, Path(base_gguf), config, spec, pre_tokenizer, add_bos)
    else:
        writer = _writer_copying_metadata(header, out_path, spec)
    writer.add_file_type(file_type)

    # Every tensor's name, shape and type first (the header), then the data one tensor at a time.
    for name, data in extra.items():
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes)
    for hf_name, name in names.items():
        shape = shapes[source[hf_name]]
        stored = gguf.GGMLQuantizationType.F32 if len(shape) <= 1 else tensor_type
        if stored == gguf.GGMLQuantizationType.F32:
            writer.add_tensor_info(name, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
        elif stored == gguf.GGMLQuantizationType.F16:
            writer.add_tensor_info(name, shape, np.dtype(np.float16), 2 * int(np.prod(shape)))
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, stored)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    for data in extra.values():
        writer.write_tensor_data(data)
    for i, hf_name in enumerate(names):
        data = np.asarray(state_dict[source[hf_name]], dtype=np.float32)
        if spec.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute_for_llama_cpp(data, n_head)
        elif spec.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute_for_llama_cpp(data, n_head_kv)
        if spec.norm_offset and hf_name.endswith("norm.weight"):
            data = data + np.float32(spec.norm_offset)
        if data.ndim <= 1 or tensor_type == gguf.GGMLQuantizationType.F32:
            writer.write_tensor_data(np.ascontiguousarray(data))
        elif tensor_type == gguf.GGMLQuantizationType.F16:
            writer.write_tensor_data(data.astype(np.float16))
        else:
            writer.write_tensor_data(_quantized(data, tensor_type))
        del data
        progress(i + 1, len(names))
    writer.close()


def _quantized(data: np.ndarray, tensor_type: gguf.GGMLQuantizationType) -> np.ndarray:
    """``gguf.quants.quantize`` of a 2-D tensor, ``QUANTIZE_ROWS`` rows at a time (the types
    written quantize each row on its own, so the bytes are the same)."""
    if data.shape[0] <= QUANTIZE_ROWS:
        return gguf.quants.quantize(data, tensor_type)
    return np.concatenate([gguf.quants.quantize(data[i:i + QUANTIZE_ROWS], tensor_type)
                           for i in range(0, data.shape[0], QUANTIZE_ROWS)])
