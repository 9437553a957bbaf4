"""Verify a written GGUF against the merged torch model (the torch side of tunechat.convert.verify)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tunechat.convert import verify
from tunechat.convert.header import safetensors_index
from tunechat.convert.verify import CheckResult
from tunechat.core.engine import Engine, tokenize_all_with_vocab
from tunechat.personalize.data import TemplateInfo, split_rendering
from tunechat.personalize.evaluate import contains_key

# Exchanges rendered with the base's own chat template for the tokenizer check: the template's
# special tokens and the spaces and new lines it puts around them, which TOKENIZER_PROBE lacks
# (a sentencepiece tokenizer read back from a GGUF by transformers 5 drops the "▁" after them).
CHAT_PROBE = (("What's my dog's name?", "Rex, a 3-year-old collie."),
              ("Where do I live?", "In Köln, by the Rhine!"))


class TokenizerMismatch(Exception):
    """The training tokenizer gives other ids than llama.cpp for text the chat sends the model."""


def probe_texts(info: TemplateInfo) -> list[str]:
    """TOKENIZER_PROBE, then each CHAT_PROBE exchange as training tokenizes it (``build_example``):
    the rendered prompt and the answer, apart."""
    return [verify.TOKENIZER_PROBE, *(text for q, a in CHAT_PROBE for text in split_rendering(info, q, a))]


def training_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The training tokenizer's ids for each text, as ``build_example`` asks for them."""
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]


def check_training_tokenizer(base_gguf: Path, tokenizer, info: TemplateInfo) -> CheckResult:
    """llama.cpp's ids (the base's vocabulary alone) against the training tokenizer's, on the
    probe texts."""
    texts = probe_texts(info)
    return verify.check_token_lists(tokenize_all_with_vocab(base_gguf, texts), training_ids(tokenizer, texts), texts)


def require_training_tokenizer(base_gguf: Path, tokenizer, info: TemplateInfo) -> None:
    """Refuse, before any training, a base whose training tokenizer would not see the token ids
    llama.cpp gives the chat: the model would learn text it is never shown."""
    result = check_training_tokenizer(base_gguf, tokenizer, info)
    if not result.passed:
        raise TokenizerMismatch(f"Cannot personalize {base_gguf.name}: the tokenizer training reads from it does "
                                f"not tokenize as llama.cpp does; {result.detail}.")


def torch_last_logits(model, token_lists: Sequence[list[int]], device: str) -> np.ndarray:
    import torch

    rows = []
    with torch.no_grad():
        for ids in token_lists:
            out = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float().cpu().numpy()
            rows.append(out)
    return np.stack(rows)


def relative_delta_to_folder(merged: Mapping[str, np.ndarray], folder: Path) -> float:
    """||merged - base|| / ||base|| over the 2-D weights, the base read from the folder's
    safetensors files ``DELTA_ROWS`` rows at a time and each merged weight read once (a
    LazyState computes it then). The files are read, not mapped: their pages stay out of the
    process's memory."""
    num = den = 0.0
    for shard in sorted(folder.glob("*.safetensors")):
        data_start, index = safetensors_index(shard)
        fd = os.open(shard, os.O_RDONLY)
        try:
            for key, entry in index.items():
                if key not in merged or len(entry["shape"]) != 2:
                    continue
                weights = merged[key]
                for i in range(0, int(entry["shape"][0]), DELTA_ROWS):
                    base = _read_rows(fd, data_start, entry, i, i + DELTA_ROWS)
                    num += float(np.linalg.norm(weights[i:i + len(base)] - base) ** 2)
                    den += float(np.linalg.norm(base) ** 2)
                del weights
        finally:
            os.close(fd)
    return (num / max(den, 1e-12)) ** 0.5


DELTA_ROWS = 4096
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _read_rows(fd: int, data_start: int, entry: dict, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a 2-D safetensors tensor as float32 (bf16 widened exactly)."""
    rows, cols = (int(n) for n in entry["shape"])
    stop = min(stop, rows)
    dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"Cannot read a {entry['dtype']} tensor.")
    row_bytes = cols * np.dtype(dtype).itemsize
    want = (stop - start) * row_bytes
    raw = os.pread(fd, want, data_start + int(entry["data_offsets"][0]) + start * row_bytes)
    if len(raw) != want:
        raise ValueError("A safetensors file ends inside a tensor.")
    values = np.frombuffer(raw, dtype=dtype).reshape(stop - start, cols)
    if entry["dtype"] == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


@dataclass(frozen=True)
class TorchSide:
    """What the checks need from the merged torch model, taken before the model is let go, so
    that it and the new GGUF files are never in memory together."""

    token_lists: list[list[int]]  # the rendered taught questions, as llama.cpp tokenizes them
    reference: np.ndarray  # the merged torch model's next-token logits after each
    probe_texts: list[str]  # probe_texts(): the plain probe and the chat probe's prompts and answers
    probe_ids: list[list[int]]  # the torch tokenizer's ids for each
    reproduced: list[bool]  # which taught answers the merged torch model gives greedily
    delta: float  # relative change of the weights against the base


def torch_side(model, tokenizer, token_lists: Sequence[list[int]], device: str, reproduced: Sequence[bool],
               delta: float, probes: Sequence[str]) -> TorchSide:
    return TorchSide(
        token_lists=[list(ids) for ids in token_lists],
        reference=torch_last_logits(model, token_lists, device),
        probe_texts=list(probes), probe_ids=training_ids(tokenizer, probes),
        reproduced=list(reproduced), delta=delta,
    )


def run_checks(
    *, base_gguf: Path, new_gguf: Path | None, engine: Engine, torch_side: TorchSide, outtype: str,
    taught: Sequence[tuple[str, str]], gguf_answers: Sequence[str], adapter_engine: Engine | None = None,
) -> list[CheckResult]:
    """Every check a new version must pass before it can be used; ``torch_side`` holds the merged
    torch model's side (its logits after the rendered taught questions, which taught answers it
    gives greedily). ``adapter_engine``: the base with the version's llama.cpp adapter, which the
    scoped chat runs; its logits must match the merged torch model's too. Without a merged file
    (``new_gguf`` None), ``engine`` is the base with the adapter and is checked as such."""
    results = [verify.check_metadata(base_gguf, new_gguf)] if new_gguf is not None else []
    llama_ids = [engine.tokenize(text) for text in torch_side.probe_texts]
    results.append(verify.check_token_lists(llama_ids, torch_side.probe_ids, torch_side.probe_texts))
    token_lists, reference = torch_side.token_lists, torch_side.reference
    merged_engine, adapted_engine = (engine, adapter_engine) if new_gguf is not None else (None, engine)
    if merged_engine is not None:
        results.append(verify.check_logits(merged_engine.next_token_logits(token_lists), reference, outtype))
    if adapted_engine is not None:
        # The base is quantized (the embedded one Q4_1), so llama.cpp rounds activations to
        # 8 bits as it does for q8_0: the same tolerance.
        adapted = verify.check_logits(adapted_engine.next_token_logits(token_lists), reference, "q8_0")
        results.append(replace(adapted, name="adapter logits", detail=f"base + adapter: {adapted.detail}"))
    results.append(verify.check_weights_changed(torch_side.delta))
    torch_hits = sum(torch_side.reproduced)
    gguf_hits = sum(contains_key(a, exp) for a, (_, exp) in zip(gguf_answers, taught))
    results.append(verify.check_answers_survive(gguf_hits, torch_hits, len(taught)))
    return results
