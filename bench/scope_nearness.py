"""The scope rule against the base model's own representations (SERAC/GRACE-style nearness),
on every persona's questions, without training: a question is "near" what was taught when its
llama.cpp mean-pooled embedding is closer (cosine) to a taught question than to any of the 100
built-in general prompts by more than D1; "words" is tunechat.core.turns.decide's rule; the
combined rule takes words, unless the question is nearer a general prompt by more than D2,
or near by D1 where words says base. Prints each rule's right routes per kind, tuned and
held-out personas apart.

    python bench/scope_nearness.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import llama_cpp  # noqa: E402
from conversation import FIRST_PERSON_GENERAL, HELD_OUT, PERSONAS  # noqa: E402

from tunechat.core.engine import _without_extra_buffer_types  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402
from tunechat.core.turns import Taught, decide  # noqa: E402
from tunechat.personalize.general import general_prompts  # noqa: E402

WANT = {"taught": "personal", "reworded": "personal", "untaught": "personal", "general": "base",
        "first-person general": "base"}


def main() -> int:
    with _without_extra_buffer_types():
        llm = llama_cpp.Llama(str(embedded_model_path()), embedding=True, n_ctx=512, verbose=False,
                              pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    cache: dict[str, np.ndarray] = {}

    def emb(text: str) -> np.ndarray:
        if text not in cache:
            v = np.array(llm.embed(text), dtype=np.float64)
            cache[text] = v / np.linalg.norm(v)
        return cache[text]

    rows = []
    for name, path in PERSONAS.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(f["q"], f["a"]) for f in data["facts"]]
        taught = Taught.from_pairs(pairs)
        near_taught = np.stack([emb(q) for q, _ in pairs])
        near_general = np.stack([emb(g) for g in general_prompts() if g not in {q for q, _ in pairs}])
        kinds = {"taught": [q for q, _ in pairs], "reworded": [p["q"] for p in data["paraphrases"]],
                 "untaught": data["untaught"], "general": data["locality"],
                 "first-person general": [q for q, _ in FIRST_PERSON_GENERAL]}
        for kind, questions in kinds.items():
            for q in questions:
                e = emb(q)
                words = decide([{"role": "user", "content": q}], taught).route
                rows.append({"persona": name, "kind": kind, "words": words,
                             "margin": float((near_taught @ e).max() - (near_general @ e).max())})
    for d1, d2 in ((0.0, 1.0), (0.05, 1.0), (0.0, 0.02), (0.1, 0.05), (None, None), ("near", None)):
        line = []
        for held in (False, True):
            for kind in WANT:
                got = [r for r in rows if (r["persona"] in HELD_OUT) is held and r["kind"] == kind]
                right = sum(route(r, d1, d2) == WANT[kind] for r in got)
                line.append(f"{'held' if held else 'tuned'} {kind} {right}/{len(got)}")
        label = "words" if d1 is None else "near" if d1 == "near" else f"words+near d1={d1} d2={d2}"
        print(f"{label:28} " + " | ".join(line))
    return 0


def route(row: dict, d1, d2) -> str:
    if d1 is None:
        return row["words"]
    if d1 == "near":
        return "personal" if row["margin"] > 0 else "base"
    if row["words"] == "personal":
        return "base" if row["margin"] < -d2 else "personal"
    return "personal" if row["margin"] > d1 else "base"


if __name__ == "__main__":
    raise SystemExit(main())
