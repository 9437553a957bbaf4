"""Stated facts turned into training pairs by the embedded model (tunechat.core.facts).

For each sentence this prints the pair pair_from_fact wrote, or "asked for the question" when
none passed its checks; then how many sentences got a pair, how many of those pairs keep every
"keep" item of the sentence (case aside, a substring of the answer), how many answers came from
the person swap, how many questions a grammar rule made, and the seconds per sentence.

    python bench/facts.py                                        # tests/data/fact-sentences.json
    python bench/facts.py --sentences bench/data/fact-dev.json   # the sentences the prompt was written on
    python bench/facts.py --no-swap                              # the model's own answers only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunechat.core.engine import Engine  # noqa: E402
from tunechat.core.facts import pair_from_fact  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=Path, default=ROOT / "tests" / "data" / "fact-sentences.json")
    parser.add_argument("--no-swap", action="store_true", help="never use the sentence in the second person")
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp threads (default: every core; 1 is faster on a busy machine)")
    args = parser.parse_args()
    items = json.loads(args.sentences.read_text(encoding="utf-8"))["sentences"]
    engine = Engine(embedded_model_path(), n_threads=args.threads)
    produced = kept = swapped = ruled = 0
    seconds = 0.0
    try:
        for n, item in enumerate(items, 1):
            sentence, keep = item["sentence"], item.get("keep", [])
            start = time.perf_counter()
            pair = pair_from_fact(engine, sentence, swap=not args.no_swap)
            seconds += time.perf_counter() - start
            print(f"{n:3}. {sentence}")
            if pair is None:
                print("     asked for the question")
                continue
            produced += 1
            swapped += pair.swapped
            ruled += pair.ruled
            lost = [k for k in keep if k.casefold() not in pair.answer.casefold()]
            kept += not lost
            print(f"     Q: {pair.question}" + ("  (rule)" if pair.ruled else ""))
            print(f"     A: {pair.answer}" + ("  (swapped)" if pair.swapped else "")
                  + (f"  LOST: {', '.join(lost)}" if lost else ""))
    finally:
        engine.close()
    total = len(items)
    print(f"\npairs produced: {produced}/{total}")
    print(f"all keep items in the answer: {kept}/{produced} of the pairs")
    print(f"answers from the person swap: {swapped}")
    print(f"questions made by a rule: {ruled}")
    print(f"seconds per sentence: {seconds / max(total, 1):.2f} ({engine.n_threads} llama.cpp threads)")


if __name__ == "__main__":
    main()
