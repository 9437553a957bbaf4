"""Checks that a written GGUF is the model it should be, before anyone chats with it.

Pure comparisons on numbers and bytes; the caller supplies the reference (the merged torch
model's logits, the training tokenizer's ids), so this package needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunechat.convert.header import read_header

# Text on which llama.cpp and the training tokenizer must give the same ids: digits and
# number formats, symbols, accents, CJK, emoji, repeated spaces, tabs, newlines, contractions.
TOKENIZER_PROBE = ("Grüße 123,456.78 — naïve café ☕ <tag> x²+y² = z²; 東京 3.14159 \tdone! It's 42%. Hello world! "
                   "it's  two  spaces\tand a tab.\n\nNew lines, don't won't I'll 1000000 ")

# Keys that decide how text becomes tokens and how chats are rendered: must match the base.
TOKENIZER_PREFIX = "tokenizer."
# The only metadata a written model may differ from its base in: how its tensors are stored.
MAY_DIFFER = frozenset({"general.file_type", "general.quantization_version"})

# Tolerances for next-token logits, GGUF (llama.cpp) against the merged torch model in float32,
# worst prompt (docs/design.md, "The verify gate"). Good files on SmolLM2-135M: f16 0.001-0.002;
# q8_0 0.01-0.03 for the base, up to 0.35 for a model trained hard on 3 facts (peaked
# distributions on the taught prompts; llama.cpp rounds activations to 8 bits). Mapping bugs,
# which hit every layer alike, read 0.91 (q rows unpermuted), 1.30 (k), 2.04 (gate and up
# swapped), 1.63 (base weights instead of the merged ones), top-1 agreement 0-20 %. So q8_0's
# line is 0.5, under half the mildest of those bugs; a break in one last layer alone (0.12) is
# seen only at f16.
LOGIT_TOLERANCE = {"f16": 0.03, "q8_0": 0.5, "f32": 0.01}
TOP1_AGREEMENT_MIN = 0.9
# Top-1 agreement counts the prompts where the reference's first token leads the second by this
# many logits (7x the probability): on a near-tie, rounding that the tolerance allows may pick
# either token (seen on tiny random models: leads of 0.2 flipped at f16 and q8_0).
TOP1_MARGIN = 2.0


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def check_metadata(base: Path, new: Path) -> CheckResult:
    """Every metadata field (the chat template, the tokenizer, every hyperparameter llama.cpp
    reads: RoPE, norm epsilon, head sizes, sliding window, soft-capping) equals the base's byte
    for byte, but the file type; and the file holds the same tensors by name (a dropped
    ``rope_freqs`` changes the model as surely as a changed field)."""
    base_header, new_header = read_header(base), read_header(new)
    a, b = base_header.metadata_raw, new_header.metadata_raw
    keys = sorted(k for k in set(a) | set(b) if k not in MAY_DIFFER)
    different = [k for k in keys if a.get(k) != b.get(k)]
    base_names = {t.name for t in base_header.tensors}
    new_names = {t.name for t in new_header.tensors}
    problems = []
    if different:
        problems.append("differs from the base: " + ", ".join(different))
    if base_names - new_names:
        problems.append("lacks the base's tensors " + ", ".join(sorted(base_names - new_names)))
    if new_names - base_names:
        problems.append("has tensors the base lacks: " + ", ".join(sorted(new_names - base_names)))
    if problems:
        return CheckResult("metadata", False, "; ".join(problems))
    n_tokenizer = sum(k.startswith(TOKENIZER_PREFIX) for k in keys)
    return CheckResult("metadata", True, f"{len(keys)} metadata fields ({n_tokenizer} tokenizer and template) "
                                         f"and {len(base_names)} tensor names equal the base's")


def check_token_ids(llama_ids: list[int], reference_ids: list[int], probe: str) -> CheckResult:
    if llama_ids == reference_ids:
        return CheckResult("tokenizer", True, f"same {len(llama_ids)} token ids on the probe text")
    shorter = min(len(llama_ids), len(reference_ids))
    first = next((i for i, (x, y) in enumerate(zip(llama_ids, reference_ids)) if x != y), shorter)
    return CheckResult("tokenizer", False,
                       f"llama.cpp and the training tokenizer disagree from token {first} of {probe!r} "
                       f"(llama.cpp {llama_ids[first:first + 4]}, training {reference_ids[first:first + 4]})")


def check_token_lists(llama_ids: Sequence[list[int]], reference_ids: Sequence[list[int]],
                      probes: Sequence[str]) -> CheckResult:
    """``check_token_ids`` on several texts (the plain probe and a chat the template renders, whose
    special tokens the plain probe lacks): the first that differs, else all the same."""
    for llama, reference, probe in zip(llama_ids, reference_ids, probes, strict=True):
        result = check_token_ids(list(llama), list(reference), probe)
        if not result.passed:
            return result
    total = sum(len(ids) for ids in llama_ids)
    return CheckResult("tokenizer", True, f"same {total} token ids on the {len(probes)} probe texts")


def logit_errors(gguf_logits: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, worst normalized error ||a - b|| / ||b||) over the rows."""
    agree = float(np.mean(gguf_logits.argmax(-1) == reference.argmax(-1)))
    errors = np.linalg.norm(gguf_logits - reference, axis=-1) / np.maximum(np.linalg.norm(reference, axis=-1), 1e-9)
    return agree, float(errors.max())


def decisive_top1(gguf_logits: np.ndarray, reference: np.ndarray, margin: float = TOP1_MARGIN) -> tuple[float, int]:
    """(top-1 agreement, rows counted) over the rows where the reference's top token leads the
    next by ``margin`` logits or more; 1.0 when no row is that decisive."""
    top2 = np.sort(reference, axis=-1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] >= margin
    if not decisive.any():
        return 1.0, 0
    return float(np.mean(gguf_logits.argmax(-1)[decisive] == reference.argmax(-1)[decisive])), int(decisive.sum())


def check_logits(gguf_logits: np.ndarray, reference: np.ndarray, outtype: str) -> CheckResult:
    agree, counted = decisive_top1(gguf_logits, reference)
    _, worst = logit_errors(gguf_logits, reference)
    tolerance = LOGIT_TOLERANCE.get(outtype, 0.08)
    passed = agree >= TOP1_AGREEMENT_MIN and worst <= tolerance
    top1 = (f"top-1 agreement {agree:.0%} (min {TOP1_AGREEMENT_MIN:.0%}) on the {counted} of {len(reference)} "
            f"prompts with a lead of {TOP1_MARGIN:g} logits" if counted else
            f"no top-1 to compare (none of {len(reference)} prompts has a lead of {TOP1_MARGIN:g} logits)")
    return CheckResult("logits", passed, f"{top1}, worst normalized error {worst:.4f} (max {tolerance})")


def check_weights_changed(relative_delta: float, minimum: float = 1e-4) -> CheckResult:
    passed = relative_delta > minimum
    return CheckResult("changed", passed, f"merged weights differ from the base by {relative_delta:.2e} (relative norm)"
                       + ("" if passed else ": the adapter did nothing"))


def check_answers_survive(gguf_hits: int, torch_hits: int, total: int) -> CheckResult:
    """The taught answers the merged model gives must survive writing and quantization."""
    passed = gguf_hits >= torch_hits - max(1, total // 10) and total > 0
    return CheckResult("answers", passed,
                       f"GGUF gives {gguf_hits}/{total} taught answers, the merged torch model {torch_hits}/{total}")
