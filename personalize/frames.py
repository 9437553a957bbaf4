"""Taught questions, and untold ones, inside the ways people wrap a question ("quick question:
...", "... I can never remember."): how a question is wrapped should tell the model nothing,
only what it asks. The frames are data, one file per language (``data/question_frames.*.json``);
a question is wrapped only in the frames of its own language (``turns.language_of``)."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Collection
from pathlib import Path

from tunechat.core.turns import FUNCTION_WORDS, language_of, words_of
from tunechat.personalize.paraphrase import normalize_question, not_asked

_DATA = Path(__file__).parent / "data"


@functools.cache
def frames() -> dict[str, tuple[str, ...]]:
    """Each language's frames (its file's ``language``); each holds ``{q}`` once."""
    out: dict[str, tuple[str, ...]] = {}
    for path in sorted(_DATA.glob("question_frames.*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[data["language"]] = out.get(data["language"], ()) + tuple(data["frames"])
    return out


def framed(question: str, frame: str) -> str:
    """``question`` inside ``frame``. Where the frame leads into it mid-sentence ("hey, {q}"),
    its first word is lowered when that is a function word ("What", "Where"; not "I" or a name)."""
    at = frame.index("{q}")
    leads_in = at > 0 and not frame[:at].rstrip().endswith((".", "!", "?"))
    first = words_of(question)[:1]
    inner = question[:1].lower() + question[1:] if leads_in and first and first[0] in FUNCTION_WORDS else question
    text = frame.replace("{q}", inner)
    return text[:1].upper() + text[1:] if at == 0 else text


def casual(question: str) -> str:
    """``question`` typed as in a quick message: lower case, no closing punctuation."""
    return question.lower().rstrip("?!. ")


def wrapped(question: str, count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` other forms of ``question``: the casual one, then framed ones (frames of
    its language drawn by ``rng``); none for a question in a language without frames."""
    pool = frames().get(language_of(question) or "", ())
    if count <= 0 or not pool:
        return []
    forms = [casual(question)] + [framed(question, f) for f in rng.sample(pool, min(count - 1, len(pool)))]
    return [f for i, f in enumerate(forms) if f != question and f not in forms[:i]]


def forms_of(question: str, count: int, rng: random.Random, asked: Collection[str] = ()) -> list[str]:
    """``wrapped`` forms of ``question`` that are none of the evaluation's questions (``asked``,
    as ``normalize_question`` writes them): a held-out wording must never be trained on. The
    casual form reads as the question itself there, and stays."""
    return not_asked(wrapped(question, count, rng), set(asked) - {normalize_question(question)})
