"""Whether the personal model's own likelihoods could answer a rewording it refuses: per
version, every reworded and untaught question asked alone in the chat (greedy), and where the
chat says "not told", the mean log-probability per token the personal model (adapter on) gives
each taught answer after the question. The rule read: answer with the taught answer the
personal model finds likeliest there, when that likelihood is above -t.

    python bench/refusal_recall.py --personas public second third --seeds 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from conversation import PERSONAS, SETTINGS, persona_turns, scoped_version, version, version_arguments  # noqa: E402

from tunechat.core.turns import says_untold  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    version_arguments(parser, ["public", "second", "third"])
    args = parser.parse_args()
    # per threshold (None: as shipped): [rewordings right, untaught without a taught key, untaught "not told"]
    totals = {t: [0, 0, 0] for t in (None, *THRESHOLDS)}
    asked = [0, 0]
    for persona in args.personas:
        by_kind, _ = persona_turns(PERSONAS[persona])
        keys = [t.key for t in by_kind["taught"]]
        for seed in args.seeds:
            engine = scoped_version(version(persona, seed, args.versions, base=args.base), args.base)
            answers = [a for _, a in engine.taught.pairs]
            personal = engine.engine_for("personal")
            try:
                for kind in ("reworded", "untaught"):
                    for turn in by_kind[kind]:
                        message = [{"role": "user", "content": turn.question}]
                        chat = engine.complete(message, SETTINGS)
                        fits = [personal.answer_likelihood(turn.question, a)
                                for a in answers] if says_untold(chat) else [float("-inf")]
                        best = max(range(len(fits)), key=fits.__getitem__)
                        asked[kind == "untaught"] += 1
                        for t, cells in totals.items():
                            said = answers[best] if t is not None and fits[best] > -t else chat
                            if kind == "reworded":
                                cells[0] += turn.key.casefold() in said.casefold()
                            else:
                                cells[1] += not any(k.casefold() in said.casefold() for k in keys)
                                cells[2] += says_untold(said)
            finally:
                engine.close()
    print(f"{'rule':22} {'reworded':>10} {'untaught':>10} {'not told':>10}   ({' '.join(args.personas)}; "
          f"seeds {' '.join(map(str, args.seeds))})")
    for t, (reworded, kept_apart, untold) in totals.items():
        name = "as shipped" if t is None else f"recall above -{t}"
        print(f"{name:22} {reworded:>4}/{asked[0]:<5} {kept_apart:>4}/{asked[1]:<5} {untold:>4}/{asked[1]:<5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
