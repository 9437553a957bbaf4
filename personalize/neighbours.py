"""The general prompts nearest to the taught facts, where a new fact bleeds into general answers.

Teaching "my favourite colour is teal" made the model say the sky is teal; teaching a birthday
made a week "approximately 31 days". Random replay of general prompts rarely lands next to a
fact, so the damage goes unchecked exactly where it happens. Each step therefore replays some
prompts chosen for being near a taught fact: near in the base model's own representation
(the mean hidden state of a middle layer over the question), which groups questions by what
they ask about (a name, a colour, a date; "your name" next to "my name") rather than by
shared words.

Vectors of the built-in prompts depend only on the base model, so they are cached per base.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from tunechat.personalize.tensor_file import read_tensors, write_tensors

EMBED_BATCH = 32


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def embed(model, tokenizer, texts: Sequence[str], device: str):
    """One unit vector per text: the mean hidden state of the middle decoder layer."""
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer = int(causal_lm.config.num_hidden_layers) // 2
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), EMBED_BATCH):
            encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
                       for t in texts[i:i + EMBED_BATCH]]
            width = max(map(len, encoded))
            ids = torch.tensor([e + [0] * (width - len(e)) for e in encoded], device=device)
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded], device=device)
            hidden = causal_lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weights).sum(1) / weights.sum(1)
            out.append(torch.nn.functional.normalize(mean.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros((0, int(causal_lm.config.hidden_size)))


class VectorCache:
    """Text -> vector, in a safetensors file per base model; a damaged file is rebuilt."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._items: dict[str, object] = read_tensors(path)
        self._dirty = False

    def vectors(self, model, tokenizer, texts: Sequence[str], device: str):
        import torch

        missing = [t for t in dict.fromkeys(texts) if _key(t) not in self._items]
        if missing:
            for text, vector in zip(missing, embed(model, tokenizer, missing, device)):
                self._items[_key(text)] = vector.contiguous()
            self._dirty = True
        return torch.stack([self._items[_key(t)] for t in texts]) if texts else embed(model, tokenizer, [], device)

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        write_tensors(self.path, self._items)
        self._dirty = False


def nearest(fact_vectors, pool_vectors, per_fact: int) -> list[int]:
    """Indices into the pool: the ``per_fact`` nearest prompts of each fact (cosine), once each,
    closest first."""
    if per_fact <= 0 or len(pool_vectors) == 0 or len(fact_vectors) == 0:
        return []
    import torch

    # Centred on the pool's mean: hidden states share a large common direction, which would
    # make a few generic prompts everyone's nearest (hubness).
    centre = pool_vectors.mean(0, keepdim=True)
    facts = torch.nn.functional.normalize(fact_vectors - centre, dim=-1)
    pool = torch.nn.functional.normalize(pool_vectors - centre, dim=-1)
    similarity = facts @ pool.T  # [facts, pool]
    k = min(per_fact, similarity.size(1))
    best: dict[int, float] = {}
    values, indices = similarity.topk(k, dim=1)
    for row_values, row_indices in zip(values.tolist(), indices.tolist()):
        for value, index in zip(row_values, row_indices):
            best[index] = max(best.get(index, -1.0), value)
    return sorted(best, key=best.__getitem__, reverse=True)
