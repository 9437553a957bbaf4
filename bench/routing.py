"""Where each kind of question goes, per persona, by the words of the chat's decision alone (no
model, no scope probe: bench/scope_probe.py adds it): ``tunechat.core.turns.decide`` on every
taught, reworded, untaught and general question of each persona, one question in an empty chat,
with the version taught that persona's facts; and the held-out routing questions in five
languages (tests/data/routing-languages.json) with nothing taught. A general question is right
when it goes to the base model, every other kind when it goes to the personal model.

    python bench/routing.py [-v]     # -v: every question routed the wrong way
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunechat.core.turns import Taught, decide  # noqa: E402

HELD = ("second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
        "twelfth", "thirteenth", "fourteenth", "fifteenth",
        "sixteenth", "seventeenth", "eighteenth", "nineteenth")
PERSONAS = {"public": ROOT / "bench" / "data" / "persona-public.json",
            **{n: ROOT / "tests" / "data" / f"persona-{n}.json" for n in HELD}}


def route(question: str, taught: Taught) -> str:
    return decide([{"role": "user", "content": question}], taught).route


def persona_rows(name: str, path: Path, verbose: bool) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    taught = Taught.from_pairs([(f["q"], f["a"]) for f in data["facts"]])
    kinds = {"taught": [f["q"] for f in data["facts"]], "reworded": [p["q"] for p in data.get("paraphrases", [])],
             "untaught": list(data.get("untaught", [])),
             "general": [item["q"] if isinstance(item, dict) else item for item in data.get("locality", [])]}
    row = {}
    for kind, questions in kinds.items():
        wanted = "base" if kind == "general" else "personal"
        wrong = [q for q in questions if route(q, taught) != wanted]
        row[kind] = f"{len(questions) - len(wrong)}/{len(questions)}"
        for question in wrong if verbose else ():
            print(f"    {name} {kind}: {question}")
    return row


def main() -> None:
    verbose = "-v" in sys.argv
    print(f"{'persona':<8} {'taught':>7} {'reworded':>9} {'untaught':>9} {'general':>8}")
    for name, path in PERSONAS.items():
        row = persona_rows(name, path, verbose)
        print(f"{name:<8} {row['taught']:>7} {row['reworded']:>9} {row['untaught']:>9} {row['general']:>8}")
    data = json.loads((ROOT / "tests" / "data" / "routing-languages.json").read_text(encoding="utf-8"))
    print(f"\n{'language':<8} {'personal':>9} {'general':>8}   (nothing taught)")
    for language, questions in data["languages"].items():
        personal = sum(route(q, Taught.from_pairs([])) == "personal" for q in questions["personal"])
        general = sum(route(q, Taught.from_pairs([])) == "base" for q in questions["general"])
        print(f"{language:<8} {personal:>6}/{len(questions['personal'])} {general:>5}/{len(questions['general'])}")


if __name__ == "__main__":
    main()
