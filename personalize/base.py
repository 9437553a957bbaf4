"""Base weights for training: a GGUF (dequantized once, cached as safetensors) or an HF folder.

transformers dequantizes a Q4_1 GGUF to float32 in ~20 s and refuses ``save_pretrained`` on
the result, so the first load writes the state dict with safetensors plus config and
tokenizer files into ``cache/base-<hash>/``; later runs load that folder in about a second.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tunechat.core import paths
from tunechat.core.fingerprint import file_fingerprint

CACHE_MARKER = "complete.json"


def require_hf_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json).")


def folder_fingerprint(folder: Path) -> str:
    """sha256 over an HF folder's config and weight files."""
    h = hashlib.sha256()
    for path in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        h.update(path.name.encode())
        h.update(file_fingerprint(path).encode())
    return h.hexdigest()


def gguf_of_folder(folder: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """The unmodified HF-folder base written once as an f16 GGUF (cached): the chat, the
    baseline answers and the converter's metadata all start from it, as from any GGUF base."""
    from tunechat.convert.architectures import spec_for
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
    spec = spec_for(str(config.get("model_type")))
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


def cached_base_folder(base: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """An HF model folder for ``base``: the folder itself, or the cache of a GGUF file."""
    if base.is_dir():
        require_hf_folder(base)
        return base
    folder = paths.cache_dir() / f"base-{file_fingerprint(base)[:16]}"
    if (folder / CACHE_MARKER).is_file():
        return folder
    progress("dequantizing the base model (first time only)")
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
    model = AutoModelForCausalLM.from_pretrained(base.parent, gguf_file=base.name, dtype=torch.float32)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    save_model(model, str(tmp / "model.safetensors"))
    tokenizer.save_pretrained(tmp)
    (tmp / CACHE_MARKER).write_text(json.dumps({"source": str(base)}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():  # 0.2 s instead of AutoTokenizer's ~5 s here
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def load_base(folder: Path, device: str, dtype_name: str):
    """Load model and tokenizer from an HF folder onto ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    tokenizer = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
    return model, tokenizer
