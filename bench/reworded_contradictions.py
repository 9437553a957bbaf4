"""Contradictions asked in other words, found by grammar alone (no model): a measurement.

Two pairs say one fact two ways when a question they both stand for is the same: each pair
stands for its own question (case, spacing and punctuation aside) and for the questions the
English rules of tunechat.core.facts make from its answer (``questions_from_answer``: "You live
in Bristol." -> "Where do I live?"). Different answers to a shared question are a contradiction
candidate. Three rules, each adding to the one before:

- ``shared``: any shared question;
- ``single``: a shared question that has one answer ("What is my X?", "When is my X?", "Where was
  I born?", "How old am I?"), not one with many ("What do I like?": pizza and jazz);
- ``canonical``: as ``single``, the questions first put in one form: contractions spelled out
  ("what's" -> "what is"), a name asked three ways made one ("What is my X's name?", "What is my
  X named?", "Who is my X?" -> "What is my X called?"; "Who am I?" -> "What is my name?").

Answers differ when both hold names, numbers or dates (``details_of``) and neither's contain
the other's, else when their text differs (case, spacing and punctuation aside). Pairs with the
same question are left out: the pair checks find those already.

For a pairs file with "problems" (tests/data/pairs-planted.json's form) it prints how many of
the contradictions asked in other words each rule finds, how many near misses it flags and how
many other pairs; for the persona files (their "facts") and the fact sentences (each said back,
asked by its first rule's question) every pair flagged is a false alarm.

    python bench/reworded_contradictions.py                       # planted pairs, personas, fact sentences
    python bench/reworded_contradictions.py --pairs FILE.json     # another file of planted pairs too
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunechat.core.facts import details_of, questions_from_answer, said_back  # noqa: E402
from tunechat.core.store import pair_key  # noqa: E402

RULES = ("shared", "single", "canonical")
_CONTRACTIONS = [(r"\bwhat s\b", "what is"), (r"\bwho s\b", "who is"), (r"\bwhen s\b", "when is"),
                 (r"\bwhere s\b", "where is"), (r"\bi m\b", "i am")]
_NAMED = [(r"^what is my (.+?) s name$", r"what is my \1 called"),
          (r"^what is my (.+?) named$", r"what is my \1 called"),
          (r"^who is my (.+)$", r"what is my \1 called"),
          (r"^(?:who am i|what am i called)$", "what is my name")]
_ONE_ANSWER = re.compile(r"^(?:(?:what|when|where) is my \S+(?: \S+)?(?: called)?"
                         r"|(?:when|where) was i born|how (?:old|tall) am i)$")


def _normal(question: str) -> str:
    return pair_key(question, "")[0]


def _canonical(question: str) -> str:
    text = _normal(question)
    for pattern, replacement in _CONTRACTIONS + _NAMED:
        text = re.sub(pattern, replacement, text)
    return text


def questions(question: str, answer: str, rule: str) -> set[str]:
    """The questions a pair stands for under ``rule``."""
    form = _canonical if rule == "canonical" else _normal
    asked = {form(question)} | {form(q) for q in questions_from_answer(answer)}
    return asked if rule == "shared" else {q for q in asked if _ONE_ANSWER.match(q)}


def differ(first: str, second: str) -> bool:
    a, b = ({d.casefold() for d in details_of(text)} for text in (first, second))
    if a and b:
        return not (a <= b or b <= a)
    return pair_key("", first)[1] != pair_key("", second)[1]


def flagged(pairs: list[tuple[str, str]], rule: str) -> list[tuple[int, int, list[str]]]:
    """The pairs of pairs (indices) that ``rule`` takes as one fact answered two ways."""
    asked = [questions(q, a, rule) for q, a in pairs]
    out = []
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            shared = asked[i] & asked[j]
            if (shared and _normal(pairs[i][0]) != _normal(pairs[j][0])
                    and differ(pairs[i][1], pairs[j][1])):
                out.append((i, j, sorted(shared)))
    return out


def planted(path: Path, show: bool) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    pairs = [(p["question"], p["answer"]) for p in data["pairs"]]
    kinds = {tuple(sorted(p["pairs"])): p["kind"] for p in data["problems"]}
    reworded = {k for k, kind in kinds.items()
                if kind == "contradiction" and _normal(pairs[k[0]][0]) != _normal(pairs[k[1]][0])}
    near = {k for k, kind in kinds.items() if kind == "near_miss"}
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(pairs)} pairs, "
          f"{len(reworded)} contradictions in other words, {len(near)} near misses")
    for rule in RULES:
        got = flagged(pairs, rule)
        found = {(i, j) for i, j, _ in got}
        print(f"  {rule:9}  found {len(found & reworded)}/{len(reworded)}, near misses flagged "
              f"{len(found & near)}/{len(near)}, other pairs flagged {len(found - reworded - near)}")
        for i, j, shared in got if show else []:
            print(f"      {i} {j} {shared}: {pairs[i][1]!r} / {pairs[j][1]!r}")


def clean(name: str, pairs: list[tuple[str, str]], show: bool) -> None:
    counts = []
    for rule in RULES:
        got = flagged(pairs, rule)
        counts.append(f"{rule} {len(got)}")
        for i, j, shared in got if show else []:
            print(f"      {rule}: {shared}: {pairs[i][1]!r} / {pairs[j][1]!r}")
    print(f"{name}: {len(pairs)} pairs, false alarms: " + ", ".join(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, action="append", default=[],
                        help="a further file of planted pairs (tests/data/pairs-planted.json's form)")
    parser.add_argument("--show", action="store_true", help="print each pair of pairs flagged")
    args = parser.parse_args()
    for path in [ROOT / "tests" / "data" / "pairs-planted.json", *args.pairs]:
        planted(path, args.show)
    data = ROOT / "tests" / "data"
    for path in [*sorted(data.glob("persona-*.json")), ROOT / "bench" / "data" / "persona-public.json"]:
        facts = json.loads(path.read_text(encoding="utf-8"))["facts"]
        clean(str(path.relative_to(ROOT)), [(f["q"], f["a"]) for f in facts], args.show)
    for path in [*sorted(data.glob("fact-sentences*.json")), ROOT / "bench" / "data" / "fact-dev.json"]:
        pairs = []
        for item in json.loads(path.read_text(encoding="utf-8"))["sentences"]:
            answer = said_back(item["sentence"])
            pairs.append(((questions_from_answer(answer) or [item["sentence"]])[0], answer))
        clean(str(path.relative_to(ROOT)), pairs, args.show)


if __name__ == "__main__":
    main()
