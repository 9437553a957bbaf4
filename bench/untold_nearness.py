"""Whether nearness in the base model's representations could say "not told" (GRACE's radius):
per persona, the embedded model's llama.cpp mean-pooled embedding (``Engine.embed``) of each
rewording against its own taught question, and of each untaught question against its nearest
taught question. A radius could only work if rewordings sat nearer their taught question than
untaught questions sit to any. Then the likelihood check of borrowed answers in Spanish
(``turns.borrowed_from``): how much less likely the base model finds a taught answer after a
rewording and after untaught questions than after its own question.

    python bench/untold_nearness.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from routing import PERSONAS  # noqa: E402

from tunechat.core.engine import Engine  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402
from tunechat.core.turns import BORROWED_DROP  # noqa: E402


def main() -> int:
    engine = Engine(embedded_model_path())
    print("persona   rewording~own taught (median, min)  own is the nearest   untaught~nearest taught (median)  "
          "untaught nearer than the median rewording")
    for name, path in PERSONAS.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        taught = [f["q"] for f in data["facts"]]
        keys = [f["key"] for f in data["facts"]]
        vectors = engine.embed(taught)
        reworded = [(p["q"], keys.index(p["key"])) for p in data.get("paraphrases", []) if p["key"] in keys]
        r = engine.embed([q for q, _ in reworded])
        own = np.array([r[i] @ vectors[j] for i, (_, j) in enumerate(reworded)])
        nearest_own = sum(int((r[i] @ vectors.T).argmax() == j) for i, (_, j) in enumerate(reworded))
        untaught = (engine.embed(list(data["untaught"])) @ vectors.T).max(1)
        print(f"{name:9} {np.median(own):.3f}, {own.min():.3f}{'':22} {nearest_own:>2}/{len(reworded):<2}{'':14} "
              f"{np.median(untaught):.3f}{'':31} {(untaught > np.median(own)).mean():.0%}")
    answer, own = "Tocas el acordeón.", "¿Qué instrumento toco?"
    print(f"\nlikelihood drop of {answer!r} (taught for {own!r}); above {BORROWED_DROP} counts as borrowed:")
    for question in ("¿Qué instrumento musical practico?", "¿Qué coche conduzco?", "¿Cuántos hermanos tengo?"):
        drop = engine.answer_likelihood(own, answer) - engine.answer_likelihood(question, answer)
        print(f"  {drop:5.2f}  {question}")
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
