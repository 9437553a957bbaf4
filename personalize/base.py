"""Base weights for training: a GGUF (dequantized once, cached as safetensors) or an HF folder.

transformers dequantizes a Q4_1 GGUF to float32 in ~20 s and refuses ``save_pretrained`` on
the result, so the first load writes the state dict with safetensors plus config and
tokenizer files into ``cache/base-<hash>/``; later runs load that folder in about a second.
transformers' GGUF loader reads only part of what llama.cpp computes with (llama 3 RoPE
scaling, gemma2 soft-capping, ...): ``restore_config`` puts the rest back from the header, so
the model trained is the model llama.cpp runs (tests/test_families.py measures it per family).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tunechat.core import paths
from tunechat.core.fingerprint import base_fingerprint

if TYPE_CHECKING:
    from tunechat.convert.header import GGUFHeader

CACHE_MARKER = "complete.json"


def require_hf_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json).")


def folder_fingerprint(folder: Path) -> str:
    """sha256 over an HF folder's config and weight files."""
    h = hashlib.sha256()
    for path in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        h.update(path.name.encode())
        h.update(base_fingerprint(path).encode())
    return h.hexdigest()


def gguf_of_folder(folder: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """The unmodified HF-folder base written once as an f16 GGUF (cached): the chat, the
    baseline answers and the converter's metadata all start from it, as from any GGUF base."""
    from tunechat.convert.architectures import spec_for_config
    from tunechat.convert.hf_metadata import choose_pre_tokenizer
    from tunechat.convert.verify import TOKENIZER_PROBE
    from tunechat.convert.writer import write_gguf
    from tunechat.core.atomic import atomic_path
    from tunechat.core.engine import tokenize_with_vocab

    require_hf_folder(folder)
    target = paths.cache_dir() / f"gguf-{folder_fingerprint(folder)[:16]}" / "base.gguf"
    if target.is_file():
        return target
    progress("writing the base model as GGUF (first time only)")
    import torch
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    spec = spec_for_config(config)
    tokenizer = load_tokenizer(folder)
    reference = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    plain, framed = tokenizer("x", add_special_tokens=False)["input_ids"], tokenizer("x")["input_ids"]
    add_bos = len(framed) > len(plain) and framed[0] == tokenizer.bos_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    pre = choose_pre_tokenizer(folder, config, spec, reference, tokenize_with_vocab, target.parent, add_bos)
    state: dict = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update({k: v.to(torch.float32).numpy() for k, v in load_file(str(shard)).items()})
    with atomic_path(target) as tmp:
        write_gguf(state, config, folder, tmp, "f16", pre_tokenizer=pre, add_bos=add_bos)
    return target


# Bumped whenever what a cached folder holds changes, so older caches are rebuilt (3: a
# sentencepiece tokenizer with llama.cpp's space prefix; 4: Llama 3's BPE looking words up
# before merging; 5: Phi-3's special tokens stripping the whitespace after them).
CACHE_VERSION = 5


def cached_base_folder(base: Path, progress: Callable[[str], None] = lambda _: None,
                       dtype: str = "float32") -> Path:
    """An HF model folder for ``base``: the folder itself, or the cache of a GGUF file, its
    weights in ``dtype``: "float32", or "float16" for the float16 form (matrices in float16,
    the rest float32: half the disk, 16 GB instead of 32 for an 8B base), which a float32 cache
    already there serves as well. The config is ``gguf_config``'s: transformers' reading of the
    header with what it loses put back, checked to be one the converter writes before anything
    is dequantized."""
    if base.is_dir():
        require_hf_folder(base)
        return base
    name = f"base-{base_fingerprint(base)[:16]}"
    folders = {"float32": paths.cache_dir() / name, "float16": paths.cache_dir() / f"{name}-float16"}
    for usable in ("float32",) if dtype == "float32" else ("float16", "float32"):
        marker = folders[usable] / CACHE_MARKER
        if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("version") == CACHE_VERSION:
            return folders[usable]
    folder = folders[dtype]
    config = gguf_config(base)
    require_cache_space(base, dtype)
    progress("dequantizing the base model (first time only)")
    from tunechat.personalize.dequantize import write_hf_folder

    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    write_hf_folder(base, tmp, dtype, config=config)  # gguf's dequantizers, streamed: no model is built
    (tmp / CACHE_MARKER).write_text(json.dumps({"source": str(base), "version": CACHE_VERSION}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def require_cache_space(base: Path, dtype: str) -> None:
    """Refuse to dequantize ``base`` into a cache the disk cannot hold (an 8B base: 32 GB in
    float32, 16 in float16) before a byte is written, instead of filling the disk on the way."""
    from tunechat.core import faults
    from tunechat.core.memory import shape_of
    from tunechat.personalize.dequantize import DTYPES

    need = shape_of(base).parameters * DTYPES[dtype][1]
    free = faults.free_bytes(paths.cache_dir())
    if free < need:
        raise faults.not_enough_disk(f"A {dtype} copy of {base.name} (dequantized once for training)",
                                     paths.cache_dir(), need, free)


def gguf_config(base: Path) -> dict[str, Any]:
    """The HF config of a GGUF base: transformers' reading of its header (``loader_config``)
    with what that reading loses put back (``restore_config``)."""
    from tunechat.convert.header import read_header

    header = read_header(base)
    return restore_config(loader_config(header), base, header)


def loader_config(header: GGUFHeader) -> dict[str, Any]:
    """The config transformers' GGUF loader builds from a header of a supported architecture:
    its own key table, read from the fast header reader (milliseconds, where its GGUFReader
    spends seconds on the vocabulary)."""
    import struct

    from transformers import AutoConfig
    from transformers.integrations import GGUF_CONFIG_MAPPING

    from tunechat.convert.architectures import UnsupportedArchitecture
    from tunechat.convert.header import decode_value

    arch = header.strings.get("general.architecture", "")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedArchitecture(_refused(f"a {arch!r} GGUF"))
    settings: dict[str, Any] = {"tie_word_embeddings": all(t.name != "output.weight" for t in header.tensors)}
    for key, raw in header.metadata_raw.items():
        prefix, _, rest = key.partition(".")
        table = cast(dict[str, Any], GGUF_CONFIG_MAPPING.get(prefix) or {})
        target = table.get(rest) if prefix in ("general", arch, "tokenizer") else None
        if target is None or target == -1:
            continue
        value = decode_value(raw)[0]
        settings[target] = value[0] if isinstance(value, list) and len(value) == 1 else value
    if "vocab_size" not in settings and "tokenizer.ggml.tokens" in header.metadata_raw:
        settings["vocab_size"] = struct.unpack_from("<Q", header.metadata_raw["tokenizer.ggml.tokens"], 8)[0]
    model_type = str(settings.pop("model_type"))
    return AutoConfig.for_model(model_type, **settings).to_dict()


def refusal(base: Path) -> str | None:
    """Why ``base`` cannot be personalized, judged from its config.json or GGUF header alone
    (no torch: the CLI asks before it starts a worker); None when it may be. The worker checks
    a GGUF's full config again (``restore_config``)."""
    from tunechat.convert.architectures import UnsupportedArchitecture, spec_for_config

    try:
        if base.is_dir():
            spec_for_config(json.loads((base / "config.json").read_text(encoding="utf-8")))
        else:
            from tunechat.convert.header import read_header

            arch = read_header(base).strings.get("general.architecture", "")
            if arch not in GGUF_ARCHITECTURES:
                return _refused(f"a {arch!r} GGUF")
    except UnsupportedArchitecture as exc:
        return str(exc)
    return None


def _refused(what: str) -> str:
    from tunechat.convert.architectures import SUPPORTED

    return f"Cannot personalize {what}: supported architectures are {', '.join(SUPPORTED)}."


# GGUF architecture names of the families the converter writes (mistral's is llama's).
GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma2", "phi3")


def _f32(value: Any) -> float:
    """A GGUF float32 as the decimal it was written from (1e-05, not 9.999999747378752e-06)."""
    import numpy as np

    return float(str(np.float32(value)))


def restore_config(config: dict[str, Any], base: Path, header: GGUFHeader | None = None) -> dict[str, Any]:
    """``config`` (transformers' reading of a GGUF header) with every field llama.cpp computes
    by that transformers' loader drops or guesses, taken from the header as
    ``tunechat.convert.hf_metadata`` writes it; then checked with the converter's own rules
    (``spec_for_config``), so a base the converter would refuse is refused before training.

    Lost by transformers 5.2x's loader, per family: llama 3 RoPE scaling (only the
    ``rope_freqs`` tensor carries it), gemma2's soft-capping (defaults 50/30 instead of the
    file's) and its query scale, qwen3's head size (its default 128 stands in), phi3's sliding
    window; a mistral file is read as llama (the same graph in llama.cpp; named mistral here
    when ``general.name`` says so). A RoPE scaling the header names (``rope.scaling.type``,
    phi3's ``rope_factors_long``) is carried into the config, where the check refuses it.
    """
    from tunechat.convert.architectures import UnsupportedArchitecture, spec_for_config
    from tunechat.convert.header import decode_value, read_header

    header = header or read_header(base)
    out = dict(config)
    arch = header.strings.get("general.architecture", "")
    meta = {k[len(arch) + 1:]: decode_value(raw)[0] for k, raw in header.metadata_raw.items()
            if k.startswith(arch + ".")}
    tensors = {t.name for t in header.tensors}
    name = header.strings.get("general.name", "")
    model_type = str(out.get("model_type"))
    if model_type == "llama" and "mistral" in name.lower():
        model_type = out["model_type"] = "mistral"
        out["sliding_window"] = None  # llama.cpp's llama graph attends to the whole context
    for key, field_name in (("attention.layer_norm_rms_epsilon", "rms_norm_eps"),):
        if key in meta:
            out[field_name] = _f32(meta[key])
    rope = {k: v for k, v in (out.get("rope_parameters") or {}).items()}
    rope.update(out.pop("rope_scaling", None) or {})
    if "rope.freq_base" in meta:
        rope["rope_theta"] = _f32(meta["rope.freq_base"])
    rope.setdefault("rope_type", "default")
    n_head = int(out["num_attention_heads"])
    if "attention.key_length" in meta:
        dim = int(meta["attention.key_length"])
        if model_type == "phi3":  # phi3 has no head size of its own: hidden / heads
            if dim != int(out["hidden_size"]) // n_head:
                raise UnsupportedArchitecture(f"Cannot personalize this phi3 GGUF: its head size {dim} is not "
                                              "hidden size / heads.")
        else:
            out["head_dim"] = dim
    dim = int(out.get("head_dim") or int(out["hidden_size"]) // n_head)
    n_rot = meta.get("rope.dimension_count")
    if n_rot is not None and int(n_rot) != dim:
        raise UnsupportedArchitecture(f"Cannot personalize this {model_type!r} GGUF: it rotates {n_rot} of its "
                                      f"{dim} head dimensions (partial RoPE).")
    scaling = str(meta.get("rope.scaling.type") or "none")
    if scaling != "none":
        rope["rope_type"] = scaling
        if "rope.scaling.factor" in meta:
            rope["factor"] = float(meta["rope.scaling.factor"])
    if {"rope_factors_long.weight", "rope_factors_short.weight"} & tensors:
        rope["rope_type"] = "longrope"
    if "rope_freqs.weight" in tensors and model_type in ("llama", "mistral"):
        rope.update(_llama3_rope(base, header, rope, dim))
    out["rope_parameters"] = rope
    out.pop("rope_theta", None)
    if model_type == "gemma2":
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if key in meta:
                out[key] = _f32(meta[key])
        # llama.cpp scales gemma2 queries by 1/sqrt(head size), 1/sqrt(hidden / heads) for the 46-layer 27B.
        n_layers = int(out["num_hidden_layers"])
        out["query_pre_attn_scalar"] = int(out["hidden_size"]) // n_head if n_layers == 46 else dim
    if model_type in ("gemma2", "phi3") and "attention.sliding_window" in meta:
        out["sliding_window"] = int(meta["attention.sliding_window"])
    spec_for_config(out)
    return out


def _llama3_rope(base: Path, header: GGUFHeader, rope: dict[str, Any], dim: int) -> dict[str, Any]:
    """llama 3 RoPE scaling parameters whose frequencies are the file's ``rope_freqs`` (the
    divisor of each rotary frequency, all llama.cpp reads of the scaling).

    Only three ratios of the four parameters show in the divisors, so the usual
    low_freq_factor 1 and high_freq_factor 4 of every Llama 3.x release are tried first, then
    a fit of the transition band; a candidate counts when the converter's own
    ``llama3_rope_factors`` gives back the file's divisors."""
    import numpy as np

    from tunechat.convert.architectures import UnsupportedArchitecture
    from tunechat.convert.header import read_tensor_bytes
    from tunechat.convert.writer import llama3_rope_factors

    _, data = read_tensor_bytes(base, header, "rope_freqs.weight")
    factors = np.frombuffer(data, dtype=np.float32).astype(np.float64)
    if np.allclose(factors, 1.0, rtol=1e-6):
        return {}
    theta = float(rope.get("rope_theta") or 10000.0)
    wavelen = 2 * np.pi * theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    factor = float(factors.max())
    middle = (factors > 1 + 1e-4) & (factors < factor * (1 - 1e-4))
    # In the band, 1 / divisor = (1 - s) / factor + s with s = (old / wavelen - low) / (high - low).
    smooth = (1 / factors[middle] - 1 / factor) / (1 - 1 / factor)
    candidates: list[tuple[float, float, float]] = []
    if middle.any():  # low 1, high 4: old = wavelen * (3 s + 1)
        candidates.append((1.0, 4.0, float(np.median(wavelen[middle] * (3 * smooth + 1)))))
    if middle.sum() >= 2:  # s = a / wavelen + b, with low 1: high = 1 - 1 / b, old = -a / b
        a, b = np.polyfit(1 / wavelen[middle], smooth, 1)
        if b < 0:
            candidates.append((1.0, 1.0 - 1.0 / b, -a / b))
    unscaled, scaled = wavelen[factors < 1 + 1e-4], wavelen[factors > factor * (1 - 1e-4)]
    if not middle.any() and len(unscaled) and len(scaled):
        # No band: the old context between the last unscaled and the first scaled wavelength,
        # high_freq_factor small enough that the band holds none.
        old = float(np.sqrt(unscaled.max() * scaled.min()))
        candidates.append((1.0, float(np.sqrt(old / unscaled.max())), old))
    for low, high, old in candidates:
        # original_max_position_embeddings must be an integer: round it, and the factors with it.
        scale = round(old) / old
        params = {"rope_type": "llama3", "factor": _f32(factor), "low_freq_factor": _f32(low * scale),
                  "high_freq_factor": _f32(high * scale), "original_max_position_embeddings": int(round(old))}
        trial = {"rope_parameters": {**rope, **params}, "head_dim": dim, "hidden_size": dim,
                 "num_attention_heads": 1}
        if np.allclose(llama3_rope_factors(trial), factors, rtol=1e-3):
            return params
    raise UnsupportedArchitecture("Cannot personalize this GGUF: its rope_freqs are no llama 3 RoPE scaling "
                                  "that transformers computes.")
def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():  # 0.2 s instead of AutoTokenizer's ~5 s here
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def load_base(folder: Path, device: str, form: str = "float32"):
    """Load model and tokenizer from an HF folder onto ``device``, its weights in ``form``:
    "float32", or "float16" for a base whose float32 copy does not fit (tunechat.personalize.half:
    matrices held in float16, everything else float32, and so is the arithmetic).

    The safetensors files are read (pread), not mapped as transformers would: every page of a
    mapped file counts in the process's memory until loading ends, beside the weights
    converted from it (a 1.5B model's float32 copy plus its bf16 file: 3.1x its fp16 size;
    read, 2.1x). On the "meta" device, the model's shape alone: nothing is read or held (a rank
    whose weights come from the first one, tunechat.personalize.sharded)."""
    from contextlib import ExitStack

    import torch
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from tunechat.personalize.half import hold_in_half
    from tunechat.personalize.heap import map_large_blocks

    dtype = {"float32": torch.float32, "float16": torch.float16}[form]
    if form == "float16":
        map_large_blocks()
    tokenizer = load_tokenizer(folder)
    config = AutoConfig.from_pretrained(folder)
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # AutoModelForCausalLM would deepcopy the slices
    if device == "meta":
        if form != "float32":
            raise ValueError("only the float32 form is built on the meta device")
        with torch.device("meta"):
            return model_class._from_config(config, dtype=dtype), tokenizer
    with ExitStack() as stack:
        files = [stack.enter_context(safe_open(str(path), framework="pt", device="cpu", backend="pread"))
                 for path in sorted(folder.glob("*.safetensors"))]
        state = {key: fh.get_slice(key) for fh in files for key in fh.keys()}  # read when loaded
        exact = dict(state)  # what loading leaves of ``state`` is transformers' business
        if not state:
            model = model_class.from_pretrained(folder, config=config, dtype=dtype)
        else:
            model = model_class.from_pretrained(None, config=config, dtype=dtype, state_dict=state)
        if form == "float16":
            hold_in_half(model, lambda name: exact[name][:] if name in exact else None)
    model.config._name_or_path = model.name_or_path = str(folder)
    if (folder / "generation_config.json").is_file():  # what from_pretrained(folder) reads beside the weights
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.to(device), tokenizer
