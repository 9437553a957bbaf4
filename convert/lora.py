"""Write a peft LoRA adapter as a llama.cpp LoRA GGUF, applied at run time over the untouched base.

llama.cpp's adapter format: ``general.type = "adapter"``, ``adapter.type = "lora"``,
``adapter.lora.alpha``, and for every adapted weight ``<gguf name>.lora_a`` (rank x in, as
peft's ``lora_A``) and ``<gguf name>.lora_b`` (out x rank, as peft's ``lora_B``). llama.cpp
scales the product by alpha / rank, as peft does. The llama q/k row permutation applies to
``lora_b``, the factor whose rows are the weight's output rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np

from tunechat.convert.architectures import gguf_arch_name, spec_for_config
from tunechat.convert.writer import ConversionError, base_header, gguf_tensor_name, permute_for_llama_cpp

LORA_OUTTYPES = {"f16": np.float16, "f32": np.float32}
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")


def write_lora_gguf(
    adapter: Mapping[str, np.ndarray],
    alpha: float,
    config: Mapping,
    base_gguf: Path,
    out_path: Path,
    outtype: str = "f16",
) -> int:
    """Write ``adapter`` (peft's safetensors keys -> arrays) for the base model ``base_gguf``
    (whose architecture it must match; ``config`` is the base's HF config). Returns the number
    of adapted weights."""
    spec = spec_for_config(config)
    if outtype not in LORA_OUTTYPES:
        raise ConversionError(f"Unknown adapter type {outtype!r}; choose one of {', '.join(LORA_OUTTYPES)}.")
    base_header(base_gguf, spec, "the adapter is for")
    n_blocks = int(config["num_hidden_layers"])
    heads = {"q_proj": int(config["num_attention_heads"]),
             "k_proj": int(config.get("num_key_value_heads") or config["num_attention_heads"])}

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in adapter.items():
        match = _PEFT_KEY.match(key)
        if match is None:
            raise ConversionError(f"Not a LoRA weight: {key!r} (only lora_A / lora_B matrices are supported).")
        pairs.setdefault(match["module"], {})[match["part"]] = np.asarray(value, dtype=np.float32)

    tensors: list[tuple[str, np.ndarray]] = []
    for module, parts in sorted(pairs.items()):  # every check before the file is created
        if set(parts) != {"A", "B"}:
            raise ConversionError(f"LoRA weight {module!r} lacks its lora_{'B' if 'A' in parts else 'A'} matrix.")
        a, b = parts["A"], parts["B"]
        if a.shape[0] != b.shape[1]:
            raise ConversionError(f"LoRA weight {module!r}: rank of A ({a.shape[0]}) and B ({b.shape[1]}) differ.")
        short = module.rsplit(".", 1)[-1]
        if spec.permute_qk and short in heads:
            b = permute_for_llama_cpp(b, heads[short])
        name = gguf_tensor_name(module + ".weight", spec, n_blocks)
        tensors += [(f"{name}.lora_a", a), (f"{name}.lora_b", b)]

    writer = gguf.GGUFWriter(out_path, arch=gguf_arch_name(spec))
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, data in tensors:
        writer.add_tensor(name, data.astype(LORA_OUTTYPES[outtype]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(pairs)
