"""A fact stated as a plain sentence, turned into the pair tunechat trains.

"My dog is called Biscuit." becomes "What is my dog called?" / "Your dog is called
Biscuit.": a question in the first person, as the user would ask it later, and an answer in
the second person, as the personal model should give it. The base model writes the pair
itself (few-shot, greedy, through llama.cpp), and the pair is kept only when it passes plain
checks: the answer keeps every name, number and date of the sentence, the question is a
question and does not give the answer away. When no pair passes, the caller asks the user
for the question instead: a wrong pair trained into the model is worse than a question asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunechat.core.engine import Engine

# The marks that make a text a question: Latin, full-width, Spanish opening, Arabic.
QUESTION_MARKS = "?？¿؟"
# A few opening words that make an English text a question even without its mark.
_QUESTION_WORDS = {
    "what", "what's", "where", "where's", "when", "who", "who's", "whom", "whose", "why", "which", "how",
    "do", "does", "did", "is", "are", "am", "was", "were", "can", "could", "would", "should", "will", "shall",
    "tell", "remind", "show", "give",
}

# A word: letters and digits, joined across an apostrophe or hyphen (Mary's, KX-482-B), and
# across : / . , between digits (6:45, 3/11/1988, 1,500).
_WORD = re.compile(r"\w+(?:(?:['’\-]|(?<=\d)[:/.,](?=\d))\w+)*")
_DAY = re.compile(r"^(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?$", re.IGNORECASE)
_MONTHS = {
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}
# Titles written with a period that does not end the sentence ("Dr. Okafor"); not details themselves.
_TITLES = {"dr", "mr", "mrs", "ms", "mx", "st", "jr", "sr", "mt", "prof", "rev"}
# "I" is capitalized wherever it stands: never a name.
_I_FORMS = {"i", "i'm", "i've", "i'd", "i'll"}
_FIRST_PERSON = _I_FORMS | {"my", "me", "mine", "myself", "we", "we're", "we've", "our", "ours", "us", "ourselves"}
_SECOND_PERSON = {"you", "you're", "you've", "you'd", "you'll", "your", "yours", "yourself", "yourselves"}
# Words that carry no fact of their own: a question or answer may add or leave them out.
_STOP = {
    "the", "a", "an", "is", "are", "am", "was", "were", "be", "been", "being", "to", "of", "in", "on", "at", "for",
    "and", "or", "it", "its", "this", "that", "with", "as", "by", "from", "have", "has", "had", "do", "does", "did",
    "what", "which", "who", "where", "when", "how", "why", "whose", "very", "really", "just", "also", "usually",
    "often", "always", "every", "each", "currently", "now", "called", "named", "name", "names", "get", "got",
    "there", "some", "any", "one", "s", "what's", "where's", "when's", "who's", "how's", "which's",
} | _FIRST_PERSON | _SECOND_PERSON
# People and animals a fact can be about: a question about "my son" must name him, and must
# not ask about anybody the sentence does not mention.
_PEOPLE = {
    "mother", "mom", "mum", "father", "dad", "parent", "parents", "brother", "sister", "sibling", "son", "daughter",
    "child", "children", "kid", "kids", "baby", "wife", "husband", "partner", "girlfriend", "boyfriend", "friend",
    "boss", "colleague", "grandmother", "grandma", "grandfather", "grandpa", "aunt", "uncle", "cousin", "niece",
    "nephew", "neighbor", "neighbour", "dog", "cat", "pet", "horse", "parrot", "rabbit",
}
# Words that ask for a name: the sentence must have a name the question does not hold.
_NAME_WORDS = {"name", "names", "called", "named", "who"}
# Words after which a capitalized word is a place or a club, not a name ("lives in Kraków").
_PREPOSITIONS = {"in", "at", "for", "from", "to", "on", "near", "with", "by", "of", "into", "the", "a", "an"}
# What a question may ask by, beyond the sentence's own words ("How old am I?" for "I am 41
# years old", "What is my job?"): any other new word changes the fact ("my favorite food").
_ASKING_WORDS = {
    "age", "old", "job", "living", "work", "time", "date", "day", "year", "birthday", "number", "much", "many",
    "long", "often", "kind", "type", "sort", "language", "city", "country", "place", "address", "live", "pay",
    "cost", "price", "happen", "go", "make", "birth", "birthdate", "wedding", "anniversary", "start", "begin",
}

# A sentence with none of these is not English: the checks on English words are skipped.
_ENGLISH = {"i", "i'm", "my", "the", "is", "am", "are", "was", "were", "we", "our", "and", "have", "has", "to", "of"}

MAX_QUESTION_WORDS = 25
# "What's my name?" asks for the speaker's own name: only a sentence that says it answers it.
_OWN_NAME = re.compile(r"\bmy\s+(?:full\s+|first\s+|last\s+)?name\b|\bwho\s+am\s+i\b", re.IGNORECASE)
_GIVES_OWN_NAME = re.compile(r"\bmy\s+(?:\w+\s+)?name\b|\bi\s+am\s+called\b|\bi['’]?m\s+called\b"
                             r"|\bcall\s+me\b|\b(?:i\s+am|i['’]?m)\s+(?-i:[A-Z])", re.IGNORECASE)


@dataclass(frozen=True)
class FactPair:
    """A question and its answer, written from a stated fact. ``swapped``: the answer is the
    sentence itself with its person swapped (the model's own answer fell short)."""

    question: str
    answer: str
    swapped: bool = False


def _fold(text: str) -> str:
    return text.replace("’", "'").casefold()


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text))


def _is_title(text: str, word: re.Match[str]) -> bool:
    return _fold(word.group()) in _TITLES and text[word.end():word.end() + 1] == "."


def details_of(text: str) -> list[str]:
    """The names, numbers and dates ``text`` holds, in order, each once: what an answer
    restating it must keep.

    - a word with a digit in it, whole (2023, 6:45, 3/11/1988, 9th, 11pm, KX-482-B); digit
      groups parted by single spaces are one (07700 900123);
    - a day next to an English month name, with it (June 2nd, 3 May, 3rd of May);
    - a capitalized word (any script with case) that does not start a sentence and is not "I"
      nor a title such as "Dr."; capitalized words in a row are one (New York, Mary's Hospital).

    A name that opens the sentence ("Biscuit is my dog.") is not found: in many languages
    every sentence starts capitalized, and nothing else tells it apart.
    """
    words = _words(text)
    gap = [text[words[i - 1].end():w.start()] if i else text[:w.start()] for i, w in enumerate(words)]

    def starts_sentence(i: int) -> bool:
        if i == 0:
            return True
        return bool(re.search(r"[.!?。！？]", gap[i])) and not _is_title(text, words[i - 1])

    def is_month(i: int) -> bool:
        return i < len(words) and _fold(words[i].group()) in _MONTHS and words[i].group()[0].isupper()

    def is_day(i: int) -> bool:
        return i < len(words) and bool(_DAY.match(words[i].group()))

    def spaced(i: int) -> bool:  # word i follows word i - 1 after plain spaces only
        return i < len(words) and gap[i] != "" and gap[i].isspace()

    def capital(i: int) -> bool:
        w = words[i].group()
        return (w[0].isupper() and _fold(w) not in _I_FORMS and not _is_title(text, words[i])
                and not any(c.isdigit() for c in w))

    found: list[str] = []
    i = 0
    while i < len(words):
        last = None
        if is_month(i) and spaced(i + 1) and is_day(i + 1):
            last = i + 1
        elif is_day(i) and spaced(i + 1) and is_month(i + 1):
            last = i + 1
        elif (is_day(i) and spaced(i + 1) and _fold(words[i + 1].group()) == "of" and spaced(i + 2)
              and is_month(i + 2)):
            last = i + 2
        elif any(c.isdigit() for c in words[i].group()):
            last = i
            while spaced(last + 1) and words[last].group().isdigit() and words[last + 1].group().isdigit():
                last += 1
        elif capital(i) and not starts_sentence(i):
            last = i
            while spaced(last + 1) and capital(last + 1):
                last += 1
        if last is None:
            i += 1
            continue
        detail = text[words[i].start():words[last].end()]
        if _fold(detail) not in {_fold(d) for d in found}:
            found.append(detail)
        i = last + 1
    return found


def looks_like_fact(question: str, answer: str = "") -> bool:
    """Whether a text given without an answer is a statement to learn ("I moved to Porto in
    2023.") rather than a question the user forgot to answer: no answer, no question mark
    anywhere, and not opened by an English question word or request ("what", "do", "tell")."""
    text = question.strip()
    if answer.strip() or not text or any(mark in text for mark in QUESTION_MARKS):
        return False
    words = _words(text)
    return len(words) >= 2 and _fold(words[0].group()) not in _QUESTION_WORDS


def _word_set(text: str) -> set[str]:
    return {_fold(w.group()) for w in _words(text)}


def _stem(word: str) -> str:
    """Crude English stemming, enough to make one of live, lives, lived and living."""
    word = word.removesuffix("'s").removesuffix("'")
    if any(c.isdigit() for c in word):
        return word
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
            word = word[:-len(suffix)]
            if suffix != "s" and len(word) > 2 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]  # swimming -> swim
            break
    return word.removesuffix("e") if len(word) > 3 else word


_PEOPLE_STEMS = {_stem(w) for w in _PEOPLE}


def _content(text: str) -> set[str]:
    """The words of ``text`` that carry meaning, stemmed."""
    return {_stem(w) for w in _word_set(text) - _STOP}


def _normal(text: str) -> str:
    return " ".join(_fold(w.group()) for w in _words(text))


def _people(text: str) -> set[str]:
    return {w for w in map(_stem, _word_set(text)) if w in _PEOPLE_STEMS}


def _names(sentence: str) -> list[str]:
    """The capitalized details that can be someone's name: not right after a preposition or
    article ("lives in Kraków", "plays for the Riverside Rovers"), titles passed over."""
    words = _words(sentence)
    starts = {w.start(): i for i, w in enumerate(words)}
    out = []
    for detail in details_of(sentence):
        i = starts.get(sentence.find(detail))
        if i is None or not detail[0].isupper():
            continue
        before = [w for w in words[:i] if not _is_title(sentence, w)]
        if not before or _fold(before[-1].group()) not in _PREPOSITIONS:
            out.append(detail)
    return out


def _words_of(text: str, stems: set[str]) -> str:
    """The words of ``text`` with one of ``stems``, as written, for saying why."""
    return ", ".join(dict.fromkeys(w for w in _normal(text).split() if _stem(w) in stems))


def rejection(sentence: str, question: str, answer: str) -> str | None:
    """Why ``question``/``answer`` is not a pair to train for ``sentence``, or None when it is.

    - the answer keeps every detail of the sentence (``details_of``, case aside) and every
      meaning word (crudely stemmed, English function words aside): it restates the fact;
    - neither brings in a detail the sentence does not hold (another date, a new name);
    - the question ends with a question mark, is not the sentence itself, and holds neither
      every detail nor every meaning word of the sentence (it would give the answer away);
      when it asks for a name, the sentence has one the question does not hold; it brings in
      no meaning word of its own beyond a few that ask (age, job, time, ...); when it asks
      for the speaker's own name, the sentence says it;
    - a sentence about someone ("my sister") gets a question about them, and nobody else;
    - a sentence in the English first person gets a question in the first person and an
      answer in the second.

    The checks on words are English: a sentence without an English function word ("I", "my",
    "the", "is", ...) is checked for its details, the question mark and the length alone.
    """
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        return "the question or the answer is empty"
    if question[-1] not in QUESTION_MARKS:
        return "the question does not end with a question mark"
    if answer[-1] in QUESTION_MARKS:
        return "the answer is a question"
    if len(_words(question)) > MAX_QUESTION_WORDS or len(_words(answer)) > 2 * len(_words(sentence)) + 10:
        return "too long"
    if _normal(question) == _normal(sentence):
        return "the question is the sentence itself"
    details = details_of(sentence)
    lost = [d for d in details if _fold(d) not in _fold(answer)]
    if lost:
        return f"the answer drops {', '.join(lost)}"
    for text, which in ((question, "question"), (answer, "answer")):
        new = [d for d in details_of(text) if _fold(d).removesuffix("'s") not in _fold(sentence)]
        if new:
            return f"the {which} brings in {', '.join(new)}"
    if details and all(_fold(d) in _fold(question) for d in details):
        return "the question gives the answer away"
    if not _word_set(sentence) & _ENGLISH:
        return None
    said, asked = _content(sentence), _content(question)
    left_out = said - _content(answer)
    if left_out:
        return f"the answer drops {_words_of(sentence, left_out)}"
    if said <= asked:
        return "the question gives the answer away"
    if _word_set(question) & _NAME_WORDS and not any(_fold(d) not in _fold(question) for d in _names(sentence)):
        return "the question asks for a name the answer does not give"
    if _OWN_NAME.search(question) and not _GIVES_OWN_NAME.search(sentence):
        return "the question asks for your name, which the sentence does not give"
    people = _people(sentence)
    if (people and not people & _people(question)) or _people(question) - people:
        return "the question is about somebody else"
    new_words = asked - said - {_stem(w) for w in _ASKING_WORDS}
    if new_words:
        return f"the question brings in {_words_of(question, new_words)}"
    if _word_set(sentence) & _FIRST_PERSON:
        if not _word_set(question) & _FIRST_PERSON:
            return "the question is not in the first person"
        if _word_set(answer) & (_I_FORMS | {"my", "me", "mine", "myself"}):
            return "the answer is in the first person"
        if not _word_set(answer) & _SECOND_PERSON:
            return "the answer is not in the second person"
    return None


# First person -> second person, in this order (the verb after "I" first). "am" after a
# number is the time of day ("6 am").
_PERSON_SWAPS = [
    (r"\bI am\b", "you are"), (r"\bI was\b", "you were"), (r"\bI['’]m\b", "you're"), (r"\bI['’]ve\b", "you've"),
    (r"\bI['’]d\b", "you'd"), (r"\bI['’]ll\b", "you'll"), (r"\bI\b", "you"), (r"(?<!\d )\bam\b", "are"),
    (r"\bmyself\b", "yourself"), (r"\bmy\b", "your"), (r"\bmine\b", "yours"), (r"\bme\b", "you"),
    (r"\bwe were\b", "you were"), (r"\bwe['’]re\b", "you're"), (r"\bwe['’]ve\b", "you've"), (r"\bwe\b", "you"),
    (r"\bourselves\b", "yourselves"), (r"\bours\b", "yours"), (r"\bour\b", "your"), (r"\bus\b", "you"),
]


def second_person(sentence: str) -> str:
    """``sentence`` said back to its speaker: "I'm moving to Porto." -> "You're moving to
    Porto." (English pronouns and "am"/"was" only; other words stay, and so does a word in
    capitals such as "US")."""
    out = sentence.strip()
    for pattern, repl in _PERSON_SWAPS:

        def swap(m: re.Match[str], repl: str = repl) -> str:
            return m.group() if len(m.group()) > 1 and m.group().isupper() else repl

        out = re.sub(pattern, swap, out, flags=re.IGNORECASE)
    return re.sub(r"(^|[.!?]\s+)(\w)", lambda m: m.group(1) + m.group(2).upper(), out)


def shots() -> list[tuple[str, str, str]]:
    """The few-shot examples: (sentence, question, answer)."""
    text = (Path(__file__).parent / "data" / "fact_shots.json").read_text(encoding="utf-8")
    return [(s, q, a) for s, q, a in json.loads(text)["shots"]]


_HEADER = ("Each fact someone tells about themselves becomes a question they could ask about it, "
           "and the answer, which repeats every name, number and date of the fact.\n\n")
_STOPS = ["\n\n", "\nFact:"]


def few_shot_prompt(sentence: str, examples: Sequence[tuple[str, str, str]], answer_first: bool = False) -> str:
    """A plain-text completion prompt that ends where the model writes the question (or, with
    ``answer_first``, the answer); the shared prefix lets llama.cpp reuse its cache from one
    sentence to the next."""
    text = _HEADER
    for s, q, a in examples:
        pair = f"Answer: {a}\nQuestion: {q}" if answer_first else f"Question: {q}\nAnswer: {a}"
        text += f"Fact: {s}\n{pair}\n\n"
    return text + f"Fact: {sentence}\n" + ("Answer:" if answer_first else "Question:")


def _parse(completion: str, answer_first: bool = False) -> tuple[str, str]:
    """The question and answer a completion wrote ("" where one is missing)."""
    first, *rest = completion.strip().split("\n")
    label = "Question:" if answer_first else "Answer:"
    second = next((line.removeprefix(label).strip() for line in rest if line.startswith(label)), "")
    return (second, first.strip()) if answer_first else (first.strip(), second)


# The prompts tried in turn: (answer written first, shots in reverse order). Answer first keeps
# the answer closer to the fact; the other orders give the model other chances.
VARIANTS = ((True, False), (False, False), (True, True))


def candidates(engine: Engine, sentence: str) -> Iterator[tuple[str, str]]:
    """The model's greedy (question, answer) for ``sentence`` under each prompt of
    ``VARIANTS``, written one at a time as they are asked for."""
    examples = shots()
    max_tokens = 2 * engine.count_tokens(sentence) + 32
    for answer_first, reverse in VARIANTS:
        prompt = few_shot_prompt(sentence, examples[::-1] if reverse else examples, answer_first)
        completion = engine.continue_text_samples(prompt, max_tokens, temperature=0.0, top_p=1.0, seeds=[0],
                                                  stop=_STOPS)[0]
        yield _parse(completion, answer_first)


def as_sentence(text: str) -> str:
    """``text`` on one line, ending with a full stop (as the shots do)."""
    text = " ".join(text.split())
    return text + "." if text and text[-1] not in ".!。" else text


def pair_from_fact(engine: Engine, sentence: str, swap: bool = True) -> FactPair | None:
    """The pair for a stated fact, written by the model greedily (the same sentence always
    gives the same pair), or None when no candidate passes ``rejection``: the caller then asks
    for the question.

    The prompts of ``VARIANTS`` are tried in turn. When none passes, ``swap`` tries the
    sentence itself in the second person (``second_person``) as the answer to each question
    whose own answer fell short (dropped a detail or a word, or kept the first person)."""
    sentence = as_sentence(sentence)
    if not sentence:
        return None
    dropped: list[str] = []
    for question, answer in candidates(engine, sentence):
        why = rejection(sentence, question, answer)
        if why is None:
            return FactPair(question, answer)
        if why.startswith("the answer") and question not in dropped:
            dropped.append(question)
    if swap:
        answer = second_person(sentence)
        for question in dropped:
            if rejection(sentence, question, answer) is None:
                return FactPair(question, answer, swapped=True)
    return None
