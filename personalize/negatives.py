"""Negatives: personal questions the user never answered, trained to be answered "You haven't
told me ... yet." so a personal model does not answer them with a taught fact.

They are the siblings of the taught questions and of their rewordings
(tunechat.personalize.siblings: "What is my cat's name?" beside a taught "What is my dog's
name?"): the same question about another subject of the same kind, so what tells a taught
answer from "not told" is the subject, not the wording. A negative is left out when it names
anything taught (any slot word of it appears in a taught question, answer or rewording), and
when it is a question the evaluation asks. The siblings of reply-only words (qualifiers such
as "every winter" beside a taught "every summer", places) are left to the chat's untold reply:
as negatives they taught the model to refuse rewordings of the taught question. A bank of
differently worded personal questions did the same (both measured: docs/experiments.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from tunechat.core.slots import FORMS, reply_only, spellings, untold_answer
from tunechat.personalize import siblings

SIBLINGS_PER_QUESTION = 2  # per taught question and per rewording, nearest siblings first
_WORD = re.compile(r"[^\W\d_]+")


def _words(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text.replace("’", "'").replace("'s", ""))}


def _key(question: str) -> str:
    return " ".join(_WORD.findall(question.casefold().replace("’", "'")))


def negatives(pairs: Sequence[tuple[str, str]], rewordings: Iterable[str] = (),
              excluded: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(question, answer) negatives for the taught ``pairs``: up to ``SIBLINGS_PER_QUESTION``
    siblings of each taught question, then of each of the ``rewordings``; none that names a
    taught subject, none that is a taught question, a rewording or one of ``excluded`` (the
    evaluation's questions), none twice."""
    rewordings = list(rewordings)
    taught = set().union(*(_words(q) | _words(a) for q, a in pairs), *(_words(r) for r in rewordings))
    taken = {_key(q) for q, _ in pairs} | {_key(r) for r in rewordings} | {_key(q) for q in excluded}
    candidates = []
    taught_questions = set().union(*(_words(q) for q, _ in pairs))
    for question in [q for q, _ in pairs] + rewordings:
        # A rewording's siblings only where its slot word is one its taught question names: a
        # rewording that brings in a slot of its own ("What's my home town?" for "Where do I
        # live?") has siblings the taught answer may well answer ("...home country?").
        if not [w for w in _words(question) if w in FORMS and w in taught_questions]:
            continue
        # The nearest siblings whose own subject is untaught; only then are they checked
        # against what was taught and asked (as measured: docs/experiments.md).
        kept = 0
        for swapped in siblings.swaps(question):
            subject = sorted(_words(swapped) - _words(question))
            if (kept >= SIBLINGS_PER_QUESTION or not subject or reply_only(subject[0])
                    or taught & set(spellings(subject[0]))):
                continue
            candidates.append((swapped, untold_answer(swapped, subject[0])))
            kept += 1
    out: list[tuple[str, str]] = []
    for swapped, answer in candidates:
        slots = {w for w in _words(swapped) if w in FORMS}  # "my husband's job" beside a taught job
        if _key(swapped) in taken or taught & slots:
            continue
        taken.add(_key(swapped))
        out.append((swapped, answer))
    return out

