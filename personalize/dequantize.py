"""A GGUF base written straight into a Hugging Face folder: config.json, model.safetensors and
the tokenizer files, what training loads.

transformers can load a GGUF itself (``from_pretrained(..., gguf_file=...)``), but for the
families tunechat converts it walks the whole file with ``gguf.GGUFReader`` twice (config,
then weights; seconds each on a 49k vocabulary), builds the model, and cannot save the result.
This module does the same arithmetic directly: each tensor is dequantized by ``gguf``'s own
numpy dequantizers (the ones transformers calls), mapped back to its HF name by inverting the
writer's mapping (``tunechat.convert.writer``: llama q/k rows out of llama.cpp's RoPE order,
gemma's norm offset removed), cast to the training dtype and streamed into the safetensors
file, one tensor in memory at a time. The config comes from the GGUF header through
transformers' own key mapping, the tokenizer from transformers' GGUF tokenizer converter
(under a second), so the folder is what transformers' loader would have given; but for a
sentencepiece vocabulary, whose space prefix is put where llama.cpp puts it
(``space_prefix_as_llama_cpp``), a BPE one llama.cpp looks words up in before merging
(``merges_as_llama_cpp``: Llama 3's), and special tokens that strip the whitespace after them
where llama.cpp's do (``strips_as_llama_cpp``: Phi-3's).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from tunechat.convert.architectures import ArchSpec, spec_for
from tunechat.convert.header import GGUFHeader, TensorInfo, decode_value, read_header
from tunechat.convert.hf_metadata import PHI3_NAMES
from tunechat.convert.writer import COPIED_TENSORS, gguf_tensor_name

# safetensors dtype names and bytes per element, for the dtypes training loads. A folder in
# "float16" holds its matrices in float16 and its norms and biases in float32 (``tensor_dtype``):
# half the disk of float32 for what the float16 form trains from, the small tensors exact.
DTYPES: dict[str, tuple[str, int]] = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}
# Pre-tokenizers under which llama.cpp takes a word the vocabulary has whole as one token before
# merging (its vocabulary loader's ``ignore_merges``), as these models' tokenizer.json say
# ("ignore_merges": true): Llama 3's names, Mistral Nemo's tekken, GLM-4's and the others it lists.
IGNORE_MERGES_PRE_TOKENIZERS = frozenset({
    "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano",
    "tekken", "minicpm5", "youtu", "glm4", "glm5", "granite-embed-multi-97m",
})
# Metadata arrays that are the vocabulary, not the config: skipped when reading the config.
_TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
                     "tokenizer.ggml.token_type")


class DequantizeError(Exception):
    pass


def _metadata(header: GGUFHeader) -> dict[str, Any]:
    return {k: decode_value(raw)[0] for k, raw in header.metadata_raw.items() if k not in _TOKENIZER_ARRAYS}


def _model_type(header: GGUFHeader, metadata: dict[str, Any]) -> str:
    """transformers' name for the family: a llama-architecture file named "mistral" is mistral."""
    architecture = str(metadata["general.architecture"])
    if "llama" in architecture and "mistral" in str(metadata.get("general.name", "")):
        return "mistral"
    return architecture


def config_dict(header: GGUFHeader) -> dict[str, Any]:
    """The config keys transformers' GGUF loader reads from this header (its
    ``load_gguf_checkpoint``, for the families tunechat converts), without reading the vocabulary."""
    from transformers.integrations import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    metadata = _metadata(header)
    architecture = str(metadata["general.architecture"])
    model_type = _model_type(header, metadata)
    out: dict[str, Any] = {"tie_word_embeddings": all(t.name != "output.weight" for t in header.tensors)}
    for key, value in GGUF_CONFIG_DEFAULTS_MAPPING.get(model_type, {}).items():
        out.setdefault(key, value)
    for key, value in metadata.items():
        prefix, _, rest = key.replace(architecture, model_type).partition(".")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, str) and architecture in value:
            value = value.replace(architecture, model_type)
        target = GGUF_CONFIG_MAPPING.get(prefix, {}).get(rest, -1)
        if target is not None and target != -1:
            out[target] = value
    if "vocab_size" not in out:
        tokens = header.metadata_raw.get("tokenizer.ggml.tokens")
        if tokens is not None:
            out["vocab_size"] = struct.unpack_from("<Q", tokens, 8)[0]  # type id, item type, count
    return out


def _config_object(config: dict[str, Any]):
    from transformers import AutoConfig

    return AutoConfig.for_model(str(config["model_type"]), **{k: v for k, v in config.items() if k != "model_type"})


def hf_config(config: dict[str, Any], dtype: str = "float32", name_or_path: str = "") -> dict[str, Any]:
    """config.json for the dequantized folder: ``config`` (``config_dict``'s keys or a whole
    config dict) as transformers' config class completes it, in the folder's dtype."""
    built = _config_object(config)
    built._name_or_path = name_or_path
    built.dtype = dtype
    return built.to_dict()


def hf_parameters(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The model's state dict names and shapes, from the model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_config_object(config))
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def undo_llama_permutation(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order -> HF's (the inverse of ``convert.writer.permute_for_llama_cpp``)."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@dataclass(frozen=True)
class Plan:
    """What a GGUF holds, as the HF model names it."""

    header: GGUFHeader
    settings: dict[str, Any]  # config keys read from the header (``config_dict``)
    spec: ArchSpec
    names: dict[str, str]  # GGUF tensor name -> HF parameter name, in file order
    shapes: dict[str, tuple[int, ...]]  # HF parameter name -> shape, in the same order


def plan(gguf_path: Path, header: GGUFHeader | None = None, config: dict[str, Any] | None = None) -> Plan:
    """Map every weight of the GGUF to the parameter of the HF model ``config`` describes (by
    default transformers' reading of the header, ``config_dict``); a tied output matrix is
    stored once, under the embedding's name. Raises for a family tunechat does not convert, a
    weight of the model with no tensor in the file, or a tensor (other than llama.cpp's own RoPE
    factors) that is no weight of the model."""
    header = header or read_header(gguf_path)
    settings = dict(config) if config is not None else config_dict(header)
    spec = spec_for(str(settings["model_type"]))
    n_blocks = int(settings["num_hidden_layers"])
    parameters = hf_parameters(settings)
    tied = bool(settings.get("tie_word_embeddings"))
    by_gguf = {gguf_tensor_name(p, spec, n_blocks): p for p in parameters if not (tied and p == "lm_head.weight")}
    names = {}
    for info in header.tensors:
        if info.name in by_gguf:
            names[info.name] = by_gguf.pop(info.name)
        elif info.name not in COPIED_TENSORS:
            raise DequantizeError(f"The GGUF tensor {info.name!r} is no weight of a {settings['model_type']} model.")
    if by_gguf:
        raise DequantizeError(f"The GGUF has no tensor for {', '.join(sorted(by_gguf.values()))}.")
    return Plan(header, settings, spec, names, {hf: parameters[hf] for hf in names.values()})


def _dequantized(data: np.memmap, header: GGUFHeader, info: TensorInfo) -> np.ndarray:
    """One tensor as float32, shaped as HF holds it (GGUF lists dimensions the other way round)."""
    qtype = gguf.GGMLQuantizationType(info.type_id)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    shape = tuple(int(d) for d in reversed(info.shape))
    raw = data[header.data_start + info.offset: header.data_start + info.offset + info.n_bytes]
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.frombuffer(raw, dtype=np.float32).reshape(shape)
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.frombuffer(raw, dtype=np.float16).reshape(shape).astype(np.float32)
    blocks = np.asarray(raw).reshape(*shape[:-1], shape[-1] // block * type_size)
    return gguf.quants.dequantize(blocks, qtype).reshape(shape)


def iter_state(gguf_path: Path, mapping: Plan | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, float32 weights) for every weight of the GGUF, one tensor at a time."""
    mapping = mapping or plan(gguf_path)
    header, spec, settings = mapping.header, mapping.spec, mapping.settings
    n_head = int(settings["num_attention_heads"])
    n_head_kv = int(settings.get("num_key_value_heads") or n_head)
    infos = {info.name: info for info in header.tensors}
    data = np.memmap(gguf_path, dtype=np.uint8, mode="r")
    for gguf_name, hf_name in mapping.names.items():
        weights = _dequantized(data, header, infos[gguf_name])
        if spec.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            weights = undo_llama_permutation(weights, n_head)
        elif spec.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            weights = undo_llama_permutation(weights, n_head_kv)
        if spec.norm_offset and hf_name.endswith("norm.weight"):
            weights = weights - np.float32(spec.norm_offset)
        yield hf_name, weights


def _as_buffer(weights: np.ndarray, dtype: str) -> memoryview:
    """The tensor's bytes in ``dtype`` without a further copy (a float32 tensor is written as it is)."""
    if dtype == "bfloat16":  # numpy has no bfloat16; torch rounds to nearest even, as .to(torch.bfloat16) does
        import torch

        weights = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)).to(torch.bfloat16).view(
            torch.int16).numpy()
    else:
        weights = np.ascontiguousarray(weights, dtype=np.float32 if dtype == "float32" else np.float16)
    return memoryview(weights).cast("B")


def tensor_dtype(dtype: str, shape: tuple[int, ...]) -> str:
    """The dtype a tensor of ``shape`` is written in, in a folder of ``dtype``."""
    return "float32" if dtype == "float16" and len(shape) < 2 else dtype


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], tensors: Iterator[tuple[str, np.ndarray]],
                      dtype: str = "float32", progress: Callable[[int, int], None] = lambda done, total: None) -> None:
    """A safetensors file whose tensors (``shapes``, in that order) come one at a time from
    ``tensors``: the header is written first from the shapes, then each tensor's bytes."""
    entries: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        st_dtype, size = DTYPES[tensor_dtype(dtype, shape)]
        n = int(np.prod(shape, dtype=np.int64)) * size
        entries[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(entries, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for i, (name, weights) in enumerate(tensors):
            expected = shapes.get(name)
            if expected is None or tuple(weights.shape) != tuple(expected):
                raise DequantizeError(f"Tensor {name!r} has shape {weights.shape}, expected {expected}.")
            fh.write(_as_buffer(weights, tensor_dtype(dtype, expected)))
            progress(i + 1, len(shapes))
        if fh.tell() != 8 + len(blob) + offset:
            raise DequantizeError(f"{path.name} is incomplete: fewer tensors than its header names.")


def tokenizer_class(model_type: str) -> Any:
    """The tokenizer class ``AutoTokenizer`` picks for a GGUF of this family (with no tokenizer
    files beside it). ``AutoTokenizer`` itself first reads the whole config with
    ``gguf.GGUFReader`` (~4 s); the class alone builds the same tokenizer from the GGUF in under
    a second."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    name = TOKENIZER_MAPPING_NAMES.get(model_type) or "TokenizersBackend"
    if name == "MistralCommonBackend":  # only for mistral's own tokenizer files, which a GGUF is not
        name = "TokenizersBackend"
    return tokenizer_class_from_name(name) or PreTrainedTokenizerFast


def write_hf_folder(gguf_path: Path, folder: Path, dtype: str = "float32",
                    progress: Callable[[int, int], None] = lambda done, total: None,
                    config: dict[str, Any] | None = None) -> None:
    """config.json, model.safetensors (in ``dtype``) and the tokenizer files of ``gguf_path``
    into ``folder`` (created if needed): what transformers would load from the GGUF itself, or,
    given ``config`` (a config dict with ``model_type``: what transformers' reading of the header
    loses put back), what it would load with that config."""
    if dtype not in DTYPES:
        raise DequantizeError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    gguf_path = Path(gguf_path)
    mapping = plan(gguf_path, config=config)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", mapping.shapes, iter_state(gguf_path, mapping), dtype, progress)
    saved = hf_config(mapping.settings, dtype, str(gguf_path.parent))
    (folder / "config.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")
    tokenizer = tokenizer_class(str(mapping.settings["model_type"])).from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name)
    space_prefix_as_llama_cpp(tokenizer, mapping.header)
    merges_as_llama_cpp(tokenizer, mapping.header)
    tokenizer.save_pretrained(folder)
    strips_as_llama_cpp(folder, mapping.header)


def merges_as_llama_cpp(tokenizer: Any, header: GGUFHeader) -> None:
    """Look each word up whole before merging, as llama.cpp does for this file's pre-tokenizer
    (in place). transformers 5 reads a byte-level GGUF vocabulary into a BPE that always merges,
    which splits a word Llama 3's vocabulary has whole but no merge makes (its tokenizer.json
    says ``ignore_merges``); llama.cpp gives it as one token."""
    if header.strings.get("tokenizer.ggml.pre") in IGNORE_MERGES_PRE_TOKENIZERS:
        tokenizer.backend_tokenizer.model.ignore_merges = True


def strips_as_llama_cpp(folder: Path, header: GGUFHeader) -> None:
    """Make the saved tokenizer's special tokens eat the whitespace after them where llama.cpp's
    do (in place, in the folder's files). llama.cpp decides it by the model's name: under a name
    saying Phi-3, every special token but <unk>, <s> and <|endoftext|> strips, as Phi-3's own
    tokenizer.json says (``rstrip``); a GGUF keeps no such flag, so transformers reads none, and
    "<|user|>\nWhat" would train as <|user|> ▁ \n What where llama.cpp reads <|user|> ▁What."""
    if not any(k in header.strings.get("general.name", "").lower() for k in PHI3_NAMES):
        return
    kept = {"<unk>", "<s>", "<|endoftext|>"}
    path = folder / "tokenizer.json"
    layout = json.loads(path.read_text(encoding="utf-8"))
    for token in layout.get("added_tokens") or []:
        token["rstrip"] = token["content"] not in kept
    path.write_text(json.dumps(layout, ensure_ascii=False), encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    settings = json.loads(config_path.read_text(encoding="utf-8"))
    for token in (settings.get("added_tokens_decoder") or {}).values():
        token["rstrip"] = token["content"] not in kept
    config_path.write_text(json.dumps(settings, indent=2, ensure_ascii=False), encoding="utf-8")


def space_prefix_as_llama_cpp(tokenizer: Any, header: GGUFHeader) -> None:
    """Give a sentencepiece vocabulary's tokenizer llama.cpp's space prefix (in place).

    For an SPM vocabulary (``tokenizer.ggml.model`` "llama") with ``add_space_prefix`` (llama.cpp's
    default), llama.cpp puts "▁" in front of every text between special tokens, even one that
    starts with a space: ``<s>[INST]`` is <s> ▁[ INST ], `` Ada.`` is ▁ ▁Ada . (sentencepiece and
    transformers 4's Llama tokenizer alike). transformers 5 reads such a GGUF with a Metaspace
    pre-tokenizer that prepends only at the start of the whole text and never before a space,
    so training text would lose those tokens around the chat template's special tokens. The
    prefix becomes a normalizer, as in Llama 2's own tokenizer.json, which applies it to each
    text between special tokens."""
    from tokenizers import normalizers

    if header.strings.get("tokenizer.ggml.model") != "llama":
        return
    raw = header.metadata_raw.get("tokenizer.ggml.add_space_prefix")
    if raw is not None and not decode_value(raw)[0]:
        return
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
