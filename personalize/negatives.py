"""Negatives: personal questions the user never answered, trained to be answered "You haven't
told me ... yet." so a personal model does not answer them with a taught fact.

Two sources, both built from the taught pairs alone so every user's pairs get them:
- siblings of the taught questions (tunechat.personalize.siblings: "What is my cat's name?"
  beside a taught dog), answered about the swapped-in subject;
- a built-in bank of personal questions (data/untold_questions.json), each with its answer.
A negative is left out when it is about something taught (one of its subject words, or any slot
word it names, appears in a taught question, answer or rewording: a taught car never gets "You
haven't told me about a car"), and when it is a question the evaluation asks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tunechat.core.slots import FAMILIES, FORMS, untold_answer
from tunechat.personalize import siblings

SIBLINGS_PER_PAIR = 2
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class Untold:
    question: str
    answer: str
    subjects: tuple[str, ...]


def _words(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text.replace("’", "'").replace("'s", ""))}


def _key(question: str) -> str:
    return " ".join(_WORD.findall(question.casefold().replace("’", "'")))


def bank() -> list[Untold]:
    text = (Path(__file__).parent / "data" / "untold_questions.json").read_text(encoding="utf-8")
    return [Untold(e["q"], e["a"], tuple(e["subjects"])) for e in json.loads(text)["questions"]]


def _sibling_negatives(questions: Sequence[str], taught: set[str]) -> list[Untold]:
    out = []
    for question in questions:
        kept = 0
        for swapped in siblings.swaps(question):
            subject = sorted(_words(swapped) - _words(question))
            if not subject or kept >= SIBLINGS_PER_PAIR:
                continue
            subjects = tuple(_forms(subject[0]))
            if taught & set(subjects):
                continue
            out.append(Untold(swapped, untold_answer(swapped, subject[0]), subjects))
            kept += 1
    return out


def _forms(word: str) -> list[str]:
    """Every spelling of ``word``'s sibling slot (singular and plural; "mom", "mother", ...)."""
    for family in FAMILIES:
        for member in family:
            if any(word in spelling for spelling in member):
                return [form for spelling in member for form in spelling]
    return [word]


def negatives(pairs: Sequence[tuple[str, str]], rewordings: Iterable[str] = (),
              excluded: Iterable[str] = (), with_bank: bool = True) -> list[tuple[str, str]]:
    """(question, answer) negatives for the taught ``pairs``: the siblings of their questions,
    then of the ``rewordings``, then the bank; none about a taught subject, none that is a taught
    question, a rewording or one of ``excluded`` (the evaluation's questions), none twice."""
    rewordings = list(rewordings)
    taught = set().union(*(_words(q) | _words(a) for q, a in pairs), *(_words(r) for r in rewordings))
    taken = {_key(q) for q, _ in pairs} | {_key(r) for r in rewordings} | {_key(q) for q in excluded}
    out: list[tuple[str, str]] = []
    found = _sibling_negatives([q for q, _ in pairs] + rewordings, taught) + (bank() if with_bank else [])
    for item in found:
        slots = {w for w in _words(item.question) if w in FORMS}  # "my husband's job" beside a taught job
        if _key(item.question) in taken or taught & (set(item.subjects) | slots):
            continue
        taken.add(_key(item.question))
        out.append((item.question, item.answer))
    return out
