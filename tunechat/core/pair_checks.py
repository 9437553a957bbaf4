"""Checks on the training pairs before they are trained: one list of problems for the pairs
screen, ``tunechat pairs check``, ``tunechat personalize`` and import.

What trains well is consistent, varied and free of doubles. Each check names the pairs it is
about and what to do:

- ``duplicate``: the same question and answer, case, spacing and punctuation aside;
- ``contradiction``: one fact with two answers: the same question (case, spacing and
  punctuation aside) with different answers. Rewordings of one question are not found: the
  embedded model's likelihoods do not tell them from unrelated questions, and the questions
  the grammar rules of ``tunechat.core.facts`` make from two answers meet only where both are
  worded alike (docs/experiments.md);
- ``overlong``: an answer longer than the chat lets an answer run;
- ``no_question``: a "question" that asks nothing (a statement about oneself, a fragment);
- ``nothing_new``: an answer the current model already gives greedily. Training on it only
  costs time; it is a note, not a fault (``Problem.blocking`` is False).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunechat.core.facts import QUESTION_MARKS
from tunechat.core.store import Pair, pair_key
from tunechat.core.turns import FIRST_PERSON, words_of
from tunechat.core.wording import count

KINDS = ("contradiction", "duplicate", "no_question", "overlong", "nothing_new")  # the order they are said in
NOTHING_NEW_TOKENS = 96  # an answer the model gives within this many tokens
FRAGMENT_WORDS = 2  # a "question" this short without a question mark is a fragment ("gym membership")


@dataclass(frozen=True)
class Problem:
    kind: str  # "duplicate", "contradiction", "overlong", "no_question", "nothing_new"
    pair_ids: tuple[int, ...]
    text: str  # one line: the pairs, what is wrong, what to do

    @property
    def blocking(self) -> bool:
        """Whether training should wait until the user has looked at it."""
        return self.kind != "nothing_new"


def check_pairs(pairs: Sequence[Pair], *, count_tokens: Callable[[str], int] | None = None,
                max_answer_tokens: int = 512,
                greedy_answer: Callable[[str], str] | None = None) -> list[Problem]:
    """Every problem found in ``pairs`` (the pairs in use), in the order of the pairs.

    ``count_tokens``: the model's tokenizer (without it, answers are not measured);
    ``greedy_answer``: the current model's greedy answer to a question (the ``nothing_new`` check).
    """
    problems = duplicates(pairs) + contradictions(pairs)
    for pair in pairs:
        if not asks_something(pair.question):
            problems.append(Problem("no_question", (pair.id,), (
                f'Pair {pair.id}\'s question "{_short(pair.question)}" asks nothing: write it as the question '
                "this answer answers (with a question mark).")))
        if count_tokens is not None and (n := count_tokens(pair.answer)) > max_answer_tokens:
            problems.append(Problem("overlong", (pair.id,), (
                f"Pair {pair.id}'s answer is {n} tokens, longer than an answer in the chat can run "
                f"({max_answer_tokens}): shorten it to what you want said.")))
    if greedy_answer is not None:
        for pair in pairs:
            if pair_key("", greedy_answer(pair.question))[1] == pair_key("", pair.answer)[1]:
                problems.append(Problem("nothing_new", (pair.id,), (
                    f"Pair {pair.id} teaches nothing new: the model already answers it this way. "
                    "Keeping it only costs training time.")))
    return sorted(problems, key=lambda p: (min(p.pair_ids), p.kind))


def duplicates(pairs: Sequence[Pair]) -> list[Problem]:
    """Pairs that say the same as an earlier one, case, spacing and punctuation aside."""
    first: dict[tuple[str, str], Pair] = {}
    problems = []
    for pair in pairs:
        key = pair_key(pair.question, pair.answer)
        if key in first:
            problems.append(Problem("duplicate", (first[key].id, pair.id), (
                f"Pairs {first[key].id} and {pair.id} are the same pair: delete {pair.id}.")))
        else:
            first[key] = pair
    return problems


def contradictions(pairs: Sequence[Pair]) -> list[Problem]:
    """Pairs that give one fact two answers: the same question with different answers. The
    newer is taken as the update. Grouped by question, so the pairs screen can run it on every
    keystroke of its search however many pairs there are."""
    keys = [pair_key(p.question, p.answer) for p in pairs]
    asked: dict[str, list[int]] = {}
    for i, (question, _) in enumerate(keys):
        asked.setdefault(question, []).append(i)
    problems = []
    for i, older in enumerate(pairs):
        for j in asked[keys[i][0]]:
            newer = pairs[j]
            if j <= i or keys[j][1] == keys[i][1]:
                continue
            problems.append(Problem("contradiction", (older.id, newer.id), (
                f'Pairs {older.id} and {newer.id} answer the same question differently ("{_short(older.answer)}" '
                f'and "{_short(newer.answer)}"): if the fact changed, retire {older.id} for {newer.id}; '
                "else word the questions apart.")))
    return problems


def asks_something(question: str) -> bool:
    """Whether a pair's question asks: a question mark in any script, or a request of a few
    words ("Tell me my name.") that is not a statement about oneself ("I'm allergic to
    penicillin.", "My favourite coffee")."""
    text = question.strip()
    if any(mark in text for mark in QUESTION_MARKS):
        return True
    words = words_of(text)
    return len(words) > FRAGMENT_WORDS and words[0] not in FIRST_PERSON


def summary(problems: Sequence[Problem]) -> str:
    """One line: how many problems of which kinds."""
    if not problems:
        return "No problems found in the pairs."
    kinds = {kind: n for kind in KINDS if (n := sum(p.kind == kind for p in problems))}
    names = {"duplicate": ("duplicate", None), "contradiction": ("contradiction", None),
             "overlong": ("overlong answer", None),
             "no_question": ("question that asks nothing", "questions that ask nothing"),
             "nothing_new": ("pair that teaches nothing new", "pairs that teach nothing new")}
    return "Found " + ", ".join(count(n, *names[k]) for k, n in kinds.items()) + "."


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def model_checks(model_path: Path, adapter: Path | None = None) -> dict[str, Any]:
    """``check_pairs``'s model-backed arguments, from a model file (and a version's adapter):
    its tokenizer for answer lengths, its greedy answers for ``nothing_new``."""
    from tunechat.core.engine import Engine

    engine = Engine(model_path, lora_path=adapter)
    return {"count_tokens": lambda text: len(engine.tokenize(text, special=False)),
            "greedy_answer": lambda question: engine.greedy(question, NOTHING_NEW_TOKENS)}
