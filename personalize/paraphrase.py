"""Paraphrases of the taught questions, written by the base model itself.

A tiny model that learns "What is my name?" -> "Ada" does not by itself answer "What am I
called?". Training each fact under several wordings fixes much of that. The wordings come
from the base GGUF through llama.cpp (few-shot, sampled), then pass strict filters: a
question in the first person, about the same thing, that does not give the answer away
and names nobody new. They are cached per base file and pair, so a fact pays once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from tunechat.core import paths
from tunechat.core.atomic import write_json_atomic

SAMPLES_PER_FACT = 6
MAX_TOKENS = 24

# Second person -> first person, for candidates that drift into "What is your ...?".
_SWAPS = [
    (r"\bare you\b", "am I"), (r"\byou are\b", "I am"), (r"\byou're\b", "I'm"), (r"\bwere you\b", "was I"),
    (r"\byou were\b", "I was"), (r"\byou have\b", "I have"), (r"\byourself\b", "myself"),
    (r"\byours\b", "mine"), (r"\byour\b", "my"),
    (r"\b(do|does|did|can|could|will|would|should|have|had)\s+you\b", r"\1 I"), (r"^you\b", "I"),
]
_FIRST_PERSON = re.compile(r"\b(I|I'm|my|me|mine|myself)\b")
_WORD = re.compile(r"[\w']+", re.UNICODE)
_STOP = {
    "the", "a", "an", "is", "are", "am", "was", "were", "be", "to", "of", "in", "on", "at", "for", "and", "or",
    "my", "your", "you", "i", "me", "it", "its", "what", "which", "who", "where", "when", "how", "do", "does",
    "did", "named", "called", "name", "s", "this", "that", "with", "as", "by", "from", "have", "has",
}


# People a question can be about: a paraphrase must not swap one for another ("sister" ->
# "daughter") or bring one in that the pair does not mention.
_PEOPLE = {
    "mother", "mom", "mum", "father", "dad", "parent", "brother", "sister", "sibling", "son", "daughter",
    "child", "children", "kid", "baby", "wife", "husband", "partner", "girlfriend", "boyfriend", "friend",
    "boss", "colleague", "family", "grandmother", "grandfather", "aunt", "uncle", "cousin", "neighbor",
    "dog", "cat", "pet",
}


def shots() -> list[tuple[str, str, str]]:
    text = (Path(__file__).parent / "data" / "paraphrase_shots.json").read_text(encoding="utf-8")
    return [tuple(s) for s in json.loads(text)["shots"]]


def few_shot_prompt(question: str, answer: str) -> str:
    """A plain-text completion prompt; the shared prefix lets llama.cpp reuse its cache."""
    text = "Each question is asked again in different words, with the same meaning.\n\n"
    for q, a, p in shots():
        text += f"Question: {q}\nAnswer: {a}\nSame question, other words: {p}\n\n"
    return text + f"Question: {question}\nAnswer: {answer}\nSame question, other words:"


def to_first_person(text: str) -> str:
    out = text
    for pattern, repl in _SWAPS:
        out = re.sub(pattern, repl, out, flags=re.IGNORECASE)
    return out


def _stem(word: str) -> str:
    w = word.lower().removesuffix("'s")
    return w[:-1] if len(w) > 3 and w.endswith("s") else w


def _stems(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text)}


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text) if w.lower() not in _STOP}


def normalize_question(text: str) -> str:
    """Lower case, words only: two wordings that differ in case or punctuation are one."""
    return " ".join(_WORD.findall(text.lower()))


def clean(candidate: str, question: str, answer: str) -> str | None:
    """The candidate as a usable paraphrase of ``question``, or None."""
    text = to_first_person(candidate.strip().strip('"').strip())
    words = _WORD.findall(text)
    if not text.endswith("?") or not 3 <= len(words) <= 14 or not _FIRST_PERSON.search(text):
        return None
    if re.search(r"\byou\b|\b(call|calls|to|for|with) I\b", text, re.IGNORECASE) or words[0].lower() == "how":
        return None  # an object "you" the swap cannot place; "how" asks for a procedure, not a fact
    if normalize_question(text) == normalize_question(question):
        return None
    known = {w.lower() for w in _WORD.findall(question + " " + answer)}
    for i, w in enumerate(words):
        # Nobody and nothing new: no numbers or proper names the pair does not contain.
        named = i > 0 and w[0].isupper() and w not in ("I", "I'm")
        if (any(c.isdigit() for c in w) or named) and w.lower() not in known:
            return None
    if (_stems(text) & _PEOPLE) - _stems(question + " " + answer):
        return None
    # A question that contains the answer gives it away ("How do I learn Japanese?").
    if (_content_words(answer) - _content_words(question)) & _content_words(text):
        return None
    return text[0].upper() + text[1:]


def generate(complete: Callable[[str, Sequence[int]], list[str]], question: str, answer: str,
             samples: int = SAMPLES_PER_FACT) -> list[str]:
    """Distinct cleaned paraphrases from ``samples`` sampled completions; ``complete(prompt,
    seeds)`` returns one line of model text per seed."""
    prompt = few_shot_prompt(question, answer)
    found: dict[str, str] = {}  # normalized wording -> the first text that had it
    for candidate in complete(prompt, range(samples)):
        text = clean(candidate, question, answer)
        if text:
            found.setdefault(normalize_question(text), text)
    return list(found.values())


def keep_distinct(found: dict[str, list[str]], pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Drop paraphrases that look more like another taught pair than their own (a model asked
    to reword "What is my job?" sometimes writes "What is my name?") or that another pair got
    too: two facts must never be trained on the same wording."""
    taught = {normalize_question(q) for q, _ in pairs}
    # A wording the model wrote for two facts ("Where do I live?" for a wake-up time and for a
    # summer holiday) would be trained with two answers: greedy decoding could never give both,
    # and the stop, which waits for every wording, never fired.
    owners: dict[str, set[str]] = {}
    for q, _ in pairs:
        for text in found.get(q, []):
            owners.setdefault(normalize_question(text), set()).add(q)
    words = [(_content_words(q), _content_words(q + " " + a)) for q, a in pairs]
    kept: dict[str, list[str]] = {}
    for i, (q, _) in enumerate(pairs):
        own_q, _own_qa = words[i]
        mine = []
        for text in found.get(q, []):
            cw = _content_words(text)
            if normalize_question(text) in taught or len(owners[normalize_question(text)]) > 1:
                continue
            own = len(cw & own_q)
            if any(len(cw & other_qa) > own for j, (_, other_qa) in enumerate(words) if j != i):
                continue
            mine.append(text)
        kept[q] = mine
    return kept


def without_questions(found: dict[str, list[str]], questions: Sequence[str], limit: int) -> dict[str, list[str]]:
    """At most ``limit`` rewordings per taught question, none of them one of ``questions``
    (the evaluation's: a held-out paraphrase must never be trained on)."""
    asked = {normalize_question(q) for q in questions}
    return {q: not_asked(forms, asked)[:limit] for q, forms in found.items()}


def not_asked(forms: Sequence[str], asked: Collection[str]) -> list[str]:
    """``forms`` that are none of ``asked`` (questions as ``normalize_question`` writes them)."""
    return [f for f in forms if normalize_question(f) not in asked]


def paraphrases(
    base_gguf: Path,
    fingerprint: str,
    pairs: Sequence[tuple[str, str]],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, list[str]]:
    """Paraphrases per taught question, from the cache where possible."""
    # The few-shot examples are part of the key: new examples mean new rewordings.
    shots_key = hashlib.sha256(json.dumps(shots()).encode()).hexdigest()[:8]
    cache = paths.cache_dir() / f"paraphrases-{fingerprint[:16]}-{shots_key}.json"
    known: dict[str, list[str]] = {}
    if cache.is_file():
        try:
            known = dict(json.loads(cache.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            known = {}
    key = lambda q, a: f"{q}\n{a}"  # noqa: E731
    missing = [(q, a) for q, a in pairs if key(q, a) not in known]
    if missing:
        from tunechat.core.engine import Engine

        engine = Engine(base_gguf)

        def complete(prompt: str, seeds: Sequence[int]) -> list[str]:
            return engine.continue_text_samples(prompt, MAX_TOKENS, temperature=0.8, top_p=0.95, seeds=seeds,
                                                stop=["\n"])

        try:
            for i, (q, a) in enumerate(missing):
                known[key(q, a)] = generate(complete, q, a)
                progress(i + 1, len(missing))
        finally:
            engine.close()
        write_json_atomic(cache, known)
    return keep_distinct({q: known[key(q, a)] for q, a in pairs}, pairs)
