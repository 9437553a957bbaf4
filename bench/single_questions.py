"""Every question of a persona asked alone, in a new chat, through the chat's own decision and
engine (tunechat.core.turns.decide, tunechat.core.scope.ScopedEngine, the borrowed check),
greedy: per kind, how many are right as the user sees them and how many say "not told".

Right, as in bench/conversation.py: a taught, reworded or general question gives its key; an
untaught question gives no taught key. The versions are bench/conversation.py's (trained once
per persona and seed with the default method, kept under --versions and reused).

    python bench/single_questions.py --personas eleventh --seeds 0 1 2 [-v]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from conversation import KINDS, PERSONAS, SETTINGS, persona_turns, right, scoped_version, version, version_arguments  # noqa: E402

UNTOLD = ("haven't told", "have not told")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    version_arguments(parser, ["eleventh"])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                        help="train the versions with these recipe fields changed "
                             "(a variant: give it --versions of its own)")
    parser.add_argument("-v", action="store_true", help="print every question, its answer and who gave it")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    print(f"{'persona':9} {'seed':>4}  " + "  ".join(f"{k:>22}" for k in KINDS if k != "follow-up")
          + "   (right / asked; says not told)")
    for persona in args.personas:
        by_kind, _ = persona_turns(PERSONAS[persona])
        taught_keys = [t.key for t in by_kind["taught"]]
        for seed in args.seeds:
            folder = version(persona, seed, args.versions, overrides, args.base)
            engine = scoped_version(folder, args.base)
            cells = []
            try:
                for kind, turns in by_kind.items():
                    good = untold = 0
                    for turn in turns:
                        answer = engine.complete([{"role": "user", "content": turn.question}], SETTINGS)
                        good += right(turn, answer, taught_keys)
                        untold += any(u in answer for u in UNTOLD)
                        if args.v:
                            by = engine.last.answered_by if engine.last else "?"
                            print(f"    {kind:20} {by:8} {turn.question!r} -> {answer!r}")
                    cells.append(f"{good:>3}/{len(turns):<3}; {untold:>2}")
            finally:
                engine.close()
            print(f"{persona:9} {seed:>4}  " + "  ".join(f"{c:>22}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
