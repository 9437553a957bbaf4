"""Borrowed answers: a personal answer that repeats a taught answer to a question it does not fit.

For each persona's personal version (trained once by bench/conversation.py's ``version``, kept
under --versions), every taught, reworded, untaught and first-person general question is asked
alone through the chat's own engine (tunechat.core.scope.ScopedEngine), greedy, with the
borrowing check off and on (tunechat.core.turns.borrowed_from). Printed per persona: taught and
reworded questions answered with their key, untaught ones answered without a taught key and
ones that say they were not told; then every answer that repeats a taught answer, with how much
less likely the base model finds that answer after the question asked than after its own (the
drop the check compares with BORROWED_DROP).

    python bench/borrowing.py --personas public second third          # tuned: where the threshold was read
    python bench/borrowing.py --personas fourth fifth sixth            # held out
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from conversation import HELD_OUT, PERSONAS, SETTINGS, persona_turns, scoped_version, version, version_arguments  # noqa: E402

from tunechat.core import turns  # noqa: E402
from tunechat.personalize.evaluate import admits_not_knowing, borrows, contains_key  # noqa: E402

KINDS = ("taught", "reworded", "untaught", "first-person general")


def run(persona: str, seed: int, versions: Path, base: Path | None = None) -> None:
    folder = version(persona, seed, versions, base=base)
    engine = scoped_version(folder, base)
    by_kind, _ = persona_turns(PERSONAS[persona])
    keys = [t.key for t in by_kind["taught"]]
    shipped = turns.BORROWED_DROP
    counts: dict[str, dict[str, list[int]]] = {}
    repeats = []
    try:
        for check, drop in (("off", float("inf")), ("on", shipped)):
            turns.BORROWED_DROP = drop
            for kind in KINDS:
                for turn in by_kind[kind]:
                    answer = engine.complete([{"role": "user", "content": turn.question}], SETTINGS)
                    right = not borrows(answer, keys) if kind == "untaught" else contains_key(answer, turn.key)
                    row = counts.setdefault(kind, {}).setdefault(check, [0, 0, 0])
                    row[0] += right
                    row[1] += kind == "untaught" and admits_not_knowing(answer)
                    row[2] += 1
                    if check == "off":
                        for q, a in turns.repeats_taught_answer(answer, engine.taught):
                            if turns._plain_text(q) != turns._plain_text(turn.question):
                                gap = engine.base_likelihood(q, a) - engine.base_likelihood(turn.question, a)
                                repeats.append((kind, right, gap, turn.question, q))
    finally:
        turns.BORROWED_DROP = shipped
        engine.close()
    held = "held out" if persona in HELD_OUT else "tuned"
    print(f"\n{persona} (seed {seed}, {held}): right / said not told / asked, check off → on")
    for kind, row in counts.items():
        off, on = row["off"], row["on"]
        told = f"  not told {off[1]} → {on[1]}" if kind == "untaught" else ""
        print(f"  {kind:22} {off[0]:2}/{off[2]} → {on[0]:2}/{on[2]}{told}")
    print("  answers that repeat another question's taught answer (drop in nats a token; fires above "
          f"{shipped}):")
    for kind, right, gap, question, source in sorted(repeats, key=lambda r: -r[2]):
        print(f"    {gap:5.2f} {'right' if right else 'wrong'} {kind:10} {question!r} ← {source!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    version_arguments(parser, ["public", "second", "third"])
    args = parser.parse_args()
    for persona in args.personas:
        for seed in args.seeds:
            run(persona, seed, args.versions, args.base)


if __name__ == "__main__":
    main()
