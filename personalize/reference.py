"""The base model's next-token distribution on each replay answer, kept for the KL term.

The KL term pulls the tuned model toward the base model on replayed general answers. Running
the base model (adapter off) over the replay batch every step costs a fifth of the step. The
base model never changes, so its distribution on an example is computed the first time the
example is drawn and kept: the top ``TOP_K`` log-probabilities per answer token, in memory
and, through ``save``, in a safetensors file per base model (a few MB for the built-in set).
The KL is then taken over those tokens and one bucket for the rest.

For the embedded model, the references of every built-in replay example ship with the package
(``data/base_references.safetensors``, for the base whose sha256 its metadata names), so a new
user's first personalization does not compute them. ``tests/test_reference.py`` recomputes a
sample; regenerate the file with ``python -m tunechat.personalize.shipped_references``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tunechat.personalize.data import Example
from tunechat.personalize.tensor_file import read_metadata, read_tensors, write_tensors

TOP_K = 64
SHIPPED_FILE = Path(__file__).parent / "data" / "base_references.safetensors"


def example_key(example: Example) -> str:
    blob = ",".join(map(str, example.input_ids)) + "|" + ",".join(map(str, example.labels))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ReferenceCache:
    """Top-k base log-probs per example: ``(indices [n, k] int64, logprobs [n, k] float32)``
    for the example's n answer positions, in order."""

    def __init__(self, path: Path | None = None, fingerprint: str | None = None) -> None:
        """``path``: this base's cache file; ``fingerprint``: its sha256, to start from the
        shipped references when they are this base's."""
        self.path = path
        self.device = "cpu"
        self._items: dict[str, tuple[Any, Any]] = {}  # torch tensors
        self._dirty = False
        self._shipped: set[str] = set()
        if fingerprint is not None and shipped_for(SHIPPED_FILE) == fingerprint:
            self._read(SHIPPED_FILE)
            self._shipped = set(self._items)
        self._read(path)

    def _read(self, path: Path | None) -> None:
        tensors = read_tensors(path)
        for name, idx in tensors.items():
            key = name.removesuffix(".idx")
            if key != name and f"{key}.lp" in tensors:
                self._items[key] = (idx.long(), tensors[f"{key}.lp"].float())

    def __len__(self) -> int:
        return len(self._items)

    def to(self, device: str) -> ReferenceCache:
        """Keep every reference on ``device`` (the training's): a step then gathers its
        examples' references there instead of copying them from the host each step."""
        self.device = device
        self._items = {key: (idx.to(device), lp.to(device)) for key, (idx, lp) in self._items.items()}
        return self

    def get(self, example: Example):
        return self._items.get(example_key(example))

    def put(self, example: Example, base_logits) -> None:
        """Keep the top-k of ``base_logits`` ([n, vocab], the example's answer positions)."""
        import torch

        logprobs = torch.log_softmax(base_logits.float(), -1)
        lp, idx = logprobs.topk(min(TOP_K, logprobs.size(-1)), -1)
        # Stored as float16: round now, so a first run and a cached run use the same numbers.
        self._items[example_key(example)] = (idx.to(self.device), lp.half().float().to(self.device))
        self._dirty = True

    def save(self) -> None:
        """Write what this base's cache file lacks (the shipped references stay in the package)."""
        if self.path is None or not self._dirty:
            return
        write_tensors(self.path, self.tensors(exclude=self._shipped))
        self._dirty = False

    def tensors(self, exclude: Collection[str] = ()) -> dict:
        """The references as the file stores them: ``KEY.idx`` int32 and ``KEY.lp`` float16."""
        import torch

        tensors = {}
        for key, (idx, lp) in self._items.items():
            if key not in exclude:
                tensors[f"{key}.idx"] = idx.to("cpu", torch.int32).contiguous()
                tensors[f"{key}.lp"] = lp.to("cpu", torch.float16).contiguous()
        return tensors


def shipped_for(path: Path) -> str | None:
    """The sha256 of the base whose references ``path`` holds (None: no such file)."""
    return read_metadata(path).get("base_sha256")


def topk_kl(tuned_logits, idx, ref_logprobs):
    """Per-position KL(base || tuned) over the base's top-k tokens plus one bucket for all
    the others: exact where the base puts (nearly) all its mass in its top k, never more
    than the full KL. ``tuned_logits`` [n, vocab]; ``idx``, ``ref_logprobs`` [n, k]."""
    import torch

    return topk_kl_of_logprobs(torch.log_softmax(tuned_logits.float(), -1), idx, ref_logprobs)


def topk_kl_of_logprobs(tuned_logprobs, idx, ref_logprobs):
    """``topk_kl`` from the tuned model's log-probabilities (a log-softmax the caller shares
    with its cross entropy)."""
    import torch

    tuned = tuned_logprobs.gather(-1, idx)
    ref_rest = torch.log1p(-ref_logprobs.exp().sum(-1).clamp(max=1 - 1e-6))
    tuned_rest = torch.log1p(-tuned.exp().sum(-1).clamp(max=1 - 1e-6))
    head = (ref_logprobs.exp() * (ref_logprobs - tuned)).sum(-1)
    return head + ref_rest.exp() * (ref_rest - tuned_rest)
