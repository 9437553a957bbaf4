"""Routing with each version's scope probe (tunechat.core.scope_probe) against the words alone,
on the embedded model, no training: per persona the probe is fitted as the worker fits it (the
bank, the built-in general prompts, the taught questions that speak of the user), and every
taught, reworded, untaught and general question goes through ``turns.decide`` with and without
it, each question also typed casually (lower case, no closing mark). A bank message or built-in
general prompt that is also one of the persona's questions is left out of that persona's fit,
so no question is scored by a probe that saw it. Also the held-out routing questions in
five languages (tests/data/routing-languages.json) with nothing taught.

    python bench/scope_probe.py [-v] [--zero]
    # -v: every question routed the wrong way with the probe; --zero: also the probe at threshold 0
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from routing import PERSONAS  # noqa: E402

from tunechat.core import scope_probe  # noqa: E402
from tunechat.core.engine import Engine  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402
from tunechat.core.turns import Taught, decide  # noqa: E402
from tunechat.personalize.frames import casual  # noqa: E402
from tunechat.personalize.general import general_prompts  # noqa: E402

TUNED = ("public", "second", "third")


class Embedder:
    """``Engine.embed``, remembered per text."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.known = engine, {}

    def __call__(self, texts) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.known]
        if missing:
            self.known.update(zip(missing, self.engine.embed(missing)))
        return np.stack([self.known[t] for t in texts]) if texts else np.zeros((0, self.engine._llm.n_embd()))


def plain(message: str) -> str:
    """``message`` as the bank is matched against the questions scored: a question's casual form
    is the question."""
    return " ".join(message.casefold().replace("¿", "").replace("?", "").replace("¡", "").rstrip("!. ").split())


def probe_without(scored: list[str], pairs: list[tuple[str, str]], taught: Taught, embed: Embedder,
                  slip: float | None = scope_probe.GENERAL_SLIP):
    """The probe as the worker fits it, but for bank messages among ``scored``."""
    left_out = {plain(q) for q in scored}
    personal, general = scope_probe.bank()
    vectors = (embed([m for m in personal if plain(m) not in left_out]),
               embed([m for m in general if plain(m) not in left_out]))
    general_left = [g for g in general_prompts() if plain(g) not in left_out]
    probe = scope_probe.fit_for([q for q, _ in pairs], taught, embed, general_left, vectors, slip)
    return lambda text: probe.about_user(embed([text])[0])


def route(question: str, taught: Taught, about_user=None) -> str:
    return decide([{"role": "user", "content": question}], taught, about_user=about_user).route


def main() -> int:
    verbose = "-v" in sys.argv
    engine = Engine(embedded_model_path())
    embed = Embedder(engine)
    columns = ("taught", "reworded", "untaught", "general")
    print(f"{'persona':12} {'rule':12} " + " ".join(f"{k:>8} {'casual':>8}" for k in columns)
          + "   ('*': held out; casual: the same questions in lower case, no closing mark)")
    for name, path in PERSONAS.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(f["q"], f["a"]) for f in data["facts"]]
        taught = Taught.from_pairs(pairs)
        kinds = {"taught": [q for q, _ in pairs], "reworded": [p["q"] for p in data.get("paraphrases", [])],
                 "untaught": list(data.get("untaught", [])),
                 "general": [i["q"] if isinstance(i, dict) else i for i in data.get("locality", [])]}
        scored = [q for qs in kinds.values() for q in qs]
        rules = (("words", None), ("words+probe", probe_without(scored, pairs, taught, embed)),
                 *((("probe t=0", probe_without(scored, pairs, taught, embed, None)),) if "--zero" in sys.argv else ()))
        for rule, probe in rules:
            cells = []
            for kind, questions in kinds.items():
                wanted = "base" if kind == "general" else "personal"
                for typed in (questions, [casual(q) for q in questions]):
                    wrong = [q for q in typed if route(q, taught, probe) != wanted]
                    cells.append(f"{len(typed) - len(wrong)}/{len(typed)}")
                    for question in wrong if verbose and probe else ():
                        print(f"      {name} {rule} {kind}: {question}")
            label = name + ("" if name in TUNED else "*")
            print(f"{label:12} {rule:12} " + " ".join(f"{c:>8}" for c in cells))
    data = json.loads((ROOT / "tests" / "data" / "routing-languages.json").read_text(encoding="utf-8"))
    asked = [q for questions in data["languages"].values() for kind in questions.values() for q in kind]
    nothing = Taught.from_pairs([])
    rules = (("words", None), ("words+probe", probe_without(asked, [], nothing, embed)),
             *((("probe t=0", probe_without(asked, [], nothing, embed, None)),) if "--zero" in sys.argv else ()))
    print(f"\n{'language':9} {'rule':12} {'personal':>8} {'general':>8} {'casual':>8} {'casual':>8}   (nothing taught; "
          "held out)")
    for language, questions in data["languages"].items():
        for rule, probe in rules:
            cells = []
            for typed in (lambda q: q, casual):
                personal = sum(route(typed(q), nothing, probe) == "personal" for q in questions["personal"])
                general = sum(route(typed(q), nothing, probe) == "base" for q in questions["general"])
                cells += [f"{personal}/{len(questions['personal'])}", f"{general}/{len(questions['general'])}"]
            print(f"{language:9} {rule:12} " + " ".join(f"{c:>8}" for c in cells))
    print_turn_cost(engine)
    engine.close()
    print_fit_cost()
    return 0


def print_fit_cost(rows: int = 620, widths: tuple[int, ...] = (576, 2048, 4096)) -> None:
    """One fit of the probe at a base's width (random rows, as many as the bank and the general
    prompts), against one Newton step in the full width, as the fit ran before it moved into the
    rows' span (``scope_probe.NEWTON_STEPS`` of them a fit; about a dozen fits a version)."""
    rng = np.random.default_rng(0)
    for width in widths:
        x, y = rng.normal(size=(rows, width)), (rng.random(rows) > 0.6).astype(float)
        start = time.perf_counter()
        scope_probe.fit(x, y, np.ones(rows))
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        z = np.hstack([x, np.ones((rows, 1))])
        np.linalg.solve(z.T @ z + np.eye(width + 1), np.ones(width + 1))
        step_s = time.perf_counter() - start
        print(f"width {width}: a fit {fit_s:.2f} s; in the full width one Newton step {step_s:.2f} s, "
              f"{scope_probe.NEWTON_STEPS} steps {scope_probe.NEWTON_STEPS * step_s:.0f} s")


def print_turn_cost(engine: Engine, rounds: int = 3) -> None:
    """What the probe adds to a chat turn: one new message embedded, against the answer's
    first token and a 24-token answer of the same engine, measured in the same run."""
    from tunechat.core.engine import GenerationSettings

    questions = ["¿Qué coche conduzco?", "What is the capital of Japan?", "Wie heißt meine Schwester?"]
    embed_s = first_s = answer_s = 0.0
    for _ in range(rounds):
        for question in questions:
            start = time.perf_counter()
            engine.embed([question])
            embed_s += time.perf_counter() - start
            chat = [{"role": "user", "content": question}]
            start = time.perf_counter()
            stream = engine.stream(chat, GenerationSettings(max_tokens=24))
            next(stream)
            first_s += time.perf_counter() - start
            for _ in stream:
                pass
            answer_s += time.perf_counter() - start
    n = rounds * len(questions)
    print(f"\nper turn (mean of {n}): the probe's embedding {1000 * embed_s / n:.0f} ms; the answer's first token "
          f"{1000 * first_s / n:.0f} ms ({embed_s / first_s:.2f}x); a 24-token answer {1000 * answer_s / n:.0f} ms "
          f"({embed_s / answer_s:.2f}x)")


if __name__ == "__main__":
    raise SystemExit(main())
