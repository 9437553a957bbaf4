"""Sibling questions: what a user's taught pairs did not teach, asked the way they did.

A taught question with a slot word ("What is my dog's name?") gets the same question about the
slot's siblings ("What is my cat's name?", "... bird's ..."): personal, never taught, and the
likeliest to be answered with the taught fact (specificity, tunechat.personalize.evaluate).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from tunechat.core.slots import FAMILIES, FORMS, SLOT_TOKEN
from tunechat.core.turns import speaks_of_user

PER_PAIR = 3
TOTAL = 12

def _key(question: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", question.casefold().replace("’", "'")))


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def swaps(question: str) -> list[str]:
    """``question`` with its first slot word swapped for each sibling, nearest first; the
    possessive ("dog's", "dogs'"), number and capitalization kept. No slot word: none."""
    for match in SLOT_TOKEN.finditer(question):
        found = FORMS.get(match.group(1).casefold())
        if found is None:
            continue
        f, m, plural = found
        family = FAMILIES[f]
        out = []
        for step in range(1, len(family)):
            word = family[(m + step) % len(family)][0][int(plural)]
            start, end = match.span(1)
            out.append(question[:start] + _cased(word, match.group(1)) + question[end:])
        return out
    return []


def sibling_questions(questions: Sequence[str], rewordings: Iterable[str] = (),
                      per_pair: int = PER_PAIR, total: int = TOTAL) -> list[str]:
    """Untaught sibling questions for the taught ``questions``: up to ``per_pair`` each, taken
    in turns (first siblings of every pair, then second ...) up to ``total``; none that is a
    taught question or a given rewording (case and punctuation aside), none twice, and only
    for questions that speak of the user."""
    taken = {_key(q) for q in questions} | {_key(q) for q in rewordings}
    per_question = []
    for question in questions:
        if not speaks_of_user(question):
            continue
        kept = []
        for candidate in swaps(question):
            if len(kept) < per_pair and _key(candidate) not in taken:
                kept.append(candidate)
                taken.add(_key(candidate))
        per_question.append(kept)
    out: list[str] = []
    for rank in range(per_pair):
        out.extend(kept[rank] for kept in per_question if rank < len(kept))
    return out[:total]

