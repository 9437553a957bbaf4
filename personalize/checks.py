"""Verify a written GGUF against the merged torch model (the torch side of tunechat.convert.verify)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from tunechat.convert import verify
from tunechat.convert.verify import CheckResult
from tunechat.core.engine import Engine
from tunechat.personalize.evaluate import contains_key


def torch_last_logits(model, token_lists: Sequence[list[int]], device: str) -> np.ndarray:
    import torch

    rows = []
    with torch.no_grad():
        for ids in token_lists:
            out = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float().cpu().numpy()
            rows.append(out)
    return np.stack(rows)


def relative_delta_to_folder(merged: dict[str, np.ndarray], folder: Path) -> float:
    """||merged - base|| / ||base|| over the 2-D weights, the base read one tensor at a time
    from the folder's safetensors files."""
    from safetensors import safe_open

    num = den = 0.0
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as fh:
            for key in fh.keys():
                if key in merged and merged[key].ndim == 2:
                    base = fh.get_tensor(key).float().numpy()
                    num += float(np.linalg.norm(merged[key] - base) ** 2)
                    den += float(np.linalg.norm(base) ** 2)
    return (num / max(den, 1e-12)) ** 0.5


def run_checks(
    *, base_gguf: Path, new_gguf: Path | None, engine: Engine, model, tokenizer, device: str, outtype: str,
    prompts: Sequence[str], taught: Sequence[tuple[str, str]], gguf_answers: Sequence[str],
    torch_reproduced: Sequence[bool], delta: float, adapter_engine: Engine | None = None,
) -> list[CheckResult]:
    """Every check a new version must pass before it can be used; ``prompts`` are rendered
    taught questions and ``torch_reproduced`` says which taught answers the merged torch model
    gives greedily. ``adapter_engine``: the base with the version's llama.cpp adapter, which the
    scoped chat runs; its logits must match the merged torch model's too. Without a merged file
    (``new_gguf`` None), ``engine`` is the base with the adapter and is checked as such."""
    results = [verify.check_metadata(base_gguf, new_gguf)] if new_gguf is not None else []
    llama_ids = engine.tokenize(verify.TOKENIZER_PROBE)
    ref_ids = tokenizer(verify.TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    results.append(verify.check_token_ids(llama_ids, list(ref_ids), verify.TOKENIZER_PROBE))
    token_lists = [engine.tokenize(p) for p in prompts]
    reference = torch_last_logits(model, token_lists, device)
    merged_engine, adapted_engine = (engine, adapter_engine) if new_gguf is not None else (None, engine)
    if merged_engine is not None:
        results.append(verify.check_logits(merged_engine.next_token_logits(token_lists), reference, outtype))
    if adapted_engine is not None:
        # The base is quantized (the embedded one Q4_1), so llama.cpp rounds activations to
        # 8 bits as it does for q8_0: the same tolerance.
        adapted = verify.check_logits(adapted_engine.next_token_logits(token_lists), reference, "q8_0")
        results.append(replace(adapted, name="adapter logits", detail=f"base + adapter: {adapted.detail}"))
    results.append(verify.check_weights_changed(delta))
    torch_hits = sum(torch_reproduced)
    gguf_hits = sum(contains_key(a, exp) for a, (_, exp) in zip(gguf_answers, taught))
    results.append(verify.check_answers_survive(gguf_hits, torch_hits, len(taught)))
    return results
