"""Quality of a personal model, measured on the GGUF through llama.cpp as the user meets it.

Three hard scores, each the share of questions whose greedy answer contains the expected key
(case-insensitive):
- reliability: the taught questions;
- generalization: paraphrases of them that were never trained;
- locality: unrelated questions that the base model answered right.
And specificity, on personal questions about things never taught (``borrows``, ``admits_not_knowing``):
the share of answers that borrow no taught answer's key ("no borrowing"), and the share that say
they do not know ("admits").
And a soft locality score: how much of the base model's answer text the personal model still
reproduces on general prompts (difflib's ratio, averaged); and, for benchmarks, answer drift:
how much less likely the personal model finds the base model's own answers (nats per token),
a continuous measure of forgetting that does not wait for a greedy answer to flip.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunechat.core.engine import Engine

EVAL_MAX_TOKENS = 48


@dataclass(frozen=True)
class Probe:
    question: str
    key: str


@dataclass
class ProbeSet:
    """What to ask. ``locality`` keys are checked only where the base answered right."""

    taught: list[Probe]
    paraphrases: list[Probe] = field(default_factory=list)
    locality: list[Probe] = field(default_factory=list)
    untaught: list[str] = field(default_factory=list)  # personal questions never taught (specificity)
    # What a borrowing answer to an untaught question would contain; empty: the taught keys.
    borrow_keys: list[str] = field(default_factory=list)

    def taught_keys(self) -> list[str]:
        return self.borrow_keys or [p.key for p in self.taught]


@dataclass
class Scores:
    reliability: float | None
    generalization: float | None
    locality: float | None
    soft_locality: float | None
    no_borrowing: float | None = None  # untaught questions answered without a taught key
    admits: float | None = None  # untaught questions answered "I don't know"
    details: dict[str, dict[str, str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalize(a), normalize(b)).ratio()


def contains_key(answer: str, key: str) -> bool:
    """The one rule for "this answer gives that": the answer holds the key (NFKC, case-folded);
    a long key (a whole taught answer) may also be reproduced near-verbatim. Scores, the verify
    gate's "taught answers survive" and the benchmarks all use it."""
    if normalize(key.strip()) in normalize(answer):
        return True
    return len(key) > 24 and similarity(answer, key) >= 0.8


def borrows(answer: str, keys: Iterable[str]) -> bool:
    """Whether an answer to an untaught question gives a taught answer's key (``contains_key``):
    "Your cat is called Pixel" when only the dog, Pixel, was taught. Strict on purpose: an
    answer that admits not knowing and then names a taught fact still borrows."""
    return any(contains_key(answer, key) for key in keys if key.strip())


def answer_keys(answers: Iterable[str]) -> list[str]:
    """Borrow keys for pairs that have no key of their own (the user's): the capitalized names
    of the taught answers (``tunechat.core.turns.taught_names``), their numbers ("42", "5:30"),
    and a whole answer of at most three words ("Pimiento.")."""
    from tunechat.core.turns import taught_names

    answers = list(answers)
    keys = set(taught_names(answers))
    for answer in answers:
        keys.update(_NUMBER.findall(answer))
        short = answer.strip().rstrip(".!?")
        if short and len(short.split()) <= 3:
            keys.add(short)
    return sorted(keys)


_NUMBER = re.compile(r"\d+(?:[:.,]\d+)*")
_ADMIT_WORD = re.compile(r"[^\W_]+")
# Said by a model that does not know; matched on whole words after ``_admission_text``
# (apostrophes dropped: "don't" and "dont" read the same). Hedges ("I'm not sure", "I think",
# "maybe") are not admissions: they come before a guess.
ADMISSIONS = (
    "i dont know", "i do not know", "i dont have", "i do not have", "i have no", "i cant know",
    "i cannot know", "i can not know", "im not aware", "i am not aware", "i dont remember",
    "i do not remember", "i dont recall", "i do not recall", "no information", "no record",
    "no way of knowing", "no way to know", "not been told", "wasnt told", "was not told",
    "werent told", "never told me", "havent told me", "have not told me", "didnt tell me",
    "did not tell me", "havent mentioned", "have not mentioned", "didnt mention", "did not mention",
    "never mentioned", "havent shared", "have not shared", "didnt share", "did not share",
    "not something you have told me", "not something youve told me",
)


def _admission_text(answer: str) -> str:
    text = normalize(answer).replace("’", "").replace("'", "")
    return " " + " ".join(_ADMIT_WORD.findall(text)) + " "


def admits_not_knowing(answer: str) -> bool:
    """Whether the answer says it does not know, was not told or has no information: one of
    ``ADMISSIONS`` anywhere in it, as whole words, case and apostrophes aside ("I don't know
    your cat's name, but you can tell me" admits; "I'm not sure, but I think it's Luna" does
    not, being a guess)."""
    text = _admission_text(answer)
    return any(f" {phrase} " in text for phrase in ADMISSIONS)


def builtin_locality_probes() -> list[Probe]:
    """Held-out general questions shipped with the package (never trained on)."""
    text = (Path(__file__).parent / "data" / "locality_probes.json").read_text(encoding="utf-8")
    return [Probe(q, k) for q, k in json.loads(text)["probes"].items()]


def load_persona(path: Path) -> ProbeSet:
    """A persona file as in bench/data/persona-public.json."""
    data = json.loads(path.read_text(encoding="utf-8"))
    keys = data.get("locality_keys", {})
    return ProbeSet(
        taught=[Probe(f["q"], f["key"]) for f in data["facts"]],
        paraphrases=[Probe(p["q"], p["key"]) for p in data.get("paraphrases", [])],
        locality=[Probe(q, keys[q]) for q in data.get("locality", []) if q in keys],
        untaught=list(data.get("untaught", [])),
    )


def persona_pairs(path: Path) -> list[tuple[str, str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [(f["q"], f["a"]) for f in data["facts"]]


Answerer = Callable[[str], str]
# (question, answer) -> the log-probability of each answer token, teacher-forced.
AnswerScorer = Callable[[str, str], list[float]]
DRIFT_TOKENS = 24  # the opening of an answer, as replayed in training


def answers(ask: Answerer, questions: Sequence[str]) -> dict[str, str]:
    return {q: ask(q) for q in questions}


def score(
    ask: Answerer,
    probes: ProbeSet,
    base_answers: dict[str, str] | None = None,
) -> Scores:
    """Score one model. ``base_answers`` (the base model's answers to the locality questions)
    decides which locality questions count and feeds the soft score; without it, every
    locality question counts and the soft score is left out. Untaught questions give the two
    specificity shares (``borrows`` against ``ProbeSet.taught_keys``, ``admits_not_knowing``)."""
    details: dict[str, dict[str, str]] = {"taught": {}, "paraphrases": {}, "locality": {}, "untaught": {}}

    def share(kind: str, items: Sequence[Probe]) -> float | None:
        if not items:
            return None
        hits = 0
        for probe in items:
            answer = ask(probe.question)
            details[kind][probe.question] = answer
            hits += contains_key(answer, probe.key)
        return hits / len(items)

    counted = [p for p in probes.locality
               if base_answers is None or contains_key(base_answers.get(p.question, ""), p.key)]
    reliability = share("taught", probes.taught)
    generalization = share("paraphrases", probes.paraphrases)
    locality = share("locality", counted)
    soft = None
    if base_answers is not None and probes.locality:
        ratios = []
        for p in probes.locality:
            mine = details["locality"].get(p.question)
            if mine is None:
                mine = ask(p.question)
            ratios.append(similarity(mine, base_answers.get(p.question, "")))
        soft = sum(ratios) / len(ratios)
    for question in probes.untaught:
        details["untaught"][question] = ask(question)
    untaught = list(details["untaught"].values())
    keys = probes.taught_keys()
    no_borrowing = _ratio([not borrows(a, keys) for a in untaught])
    admits = _ratio([admits_not_knowing(a) for a in untaught])
    return Scores(reliability, generalization, locality, soft, no_borrowing, admits, details)


def _ratio(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


@dataclass(frozen=True)
class Drift:
    """How the base model's own answers fare under the personal model, teacher-forced, in nats
    per answer token: ``mean`` is the signed change in likelihood (negative: more confident,
    as replay makes it on answers like those it rehearsed); ``damage`` counts only the tokens
    that lost likelihood, which is what flips a greedy answer once its margin is used up, so it
    moves before locality does."""

    mean: float
    damage: float


def answer_drift(personal: AnswerScorer, base: AnswerScorer, base_answers: dict[str, str],
                 questions: Sequence[str]) -> Drift | None:
    """Drift over ``questions``: per question the mean over its answer tokens, then the mean
    over questions; questions without a base answer are left out."""
    means, damages = [], []
    for question in questions:
        answer = base_answers.get(question, "")
        if not answer:
            continue
        drops = [theirs - mine for mine, theirs in zip(personal(question, answer), base(question, answer))]
        if drops:
            means.append(sum(drops) / len(drops))
            damages.append(sum(max(0.0, d) for d in drops) / len(drops))
    if not means:
        return None
    return Drift(sum(means) / len(means), sum(damages) / len(damages))


def greedy_answer(engine: Engine, question: str, system: str | None = None) -> str:
    """A model's answer as every score reads it: greedy, up to ``EVAL_MAX_TOKENS``."""
    return engine.greedy(question, EVAL_MAX_TOKENS, system)


def engine_scorer(engine: Engine) -> AnswerScorer:
    """Teacher-forced answer log-probabilities from a loaded ``tunechat.core.engine.Engine``."""
    return lambda question, answer: engine.answer_logprobs([{"role": "user", "content": question}], answer,
                                                           DRIFT_TOKENS)


def engine_answerer(model_path: Path, system_prompt: str | None = None) -> tuple[Answerer, Callable[[], None]]:
    """Greedy answers from a GGUF through the chat's own engine; returns (ask, close)."""
    from tunechat.core.engine import Engine

    engine = Engine(model_path)
    return (lambda question: greedy_answer(engine, question, system_prompt)), engine.close
