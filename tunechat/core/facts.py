"""A fact stated as a plain sentence, turned into the pair tunechat trains.

"My dog is called Biscuit." becomes "What is my dog called?" / "Your dog is called
Biscuit.": a question in the first person, as the user would ask it later, and an answer in
the second person, as the personal model should give it. The base model writes the pair
itself (few-shot, greedy, through llama.cpp), or English grammar rules make the question from
the sentence said back ("I drive a Civic." -> "What do I drive?", "We moved to Leeds in
2019." -> "When did I move to Leeds?"), and the pair is kept only when it passes plain checks:
the answer keeps every name, number and date of the sentence, the question is a question and
does not give the answer away. When no pair passes, the caller asks
the user for the question instead: a wrong pair trained into the model is worse than a
question asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunechat.core.engine import Engine

# The marks that make a text a question: Latin, full-width, Spanish opening, Arabic.
QUESTION_MARKS = "?？¿؟"


@cache
def _english_data() -> dict[str, Any]:
    """data/fact_questions.en.json: the English words, notes and rules of this module."""
    return json.loads((Path(__file__).parent / "data" / "fact_questions.en.json").read_text(encoding="utf-8"))


_WORDS: dict[str, list[str]] = _english_data()["words"]
# A few opening words that make an English text a question even without its mark.
_QUESTION_WORDS = set(_WORDS["question_words"])
# Those that are English alone ("Do que ...?" opens a Portuguese question).
_WH_WORDS = {w for w in _QUESTION_WORDS if w.startswith(("wh", "how"))}

# A word: letters and digits, joined across an apostrophe or hyphen (Mary's, KX-482-B), and
# across : / . , between digits (6:45, 3/11/1988, 1,500).
_WORD = re.compile(r"\w+(?:(?:['’\-]|(?<=\d)[:/.,](?=\d))\w+)*")
_DAY = re.compile(r"^(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?$", re.IGNORECASE)
_MONTHS = set(_WORDS["months"])
# Titles written with a period that does not end the sentence ("Dr. Okafor"); not details themselves.
_TITLES = set(_WORDS["titles"])
# "I" is capitalized wherever it stands: never a name.
_I_FORMS = set(_WORDS["i_forms"])
_FIRST_PERSON = _I_FORMS | set(_WORDS["first_person"])
_SECOND_PERSON = set(_WORDS["second_person"])
# Words that carry no fact of their own: a question or answer may add or leave them out.
_STOP = set(_WORDS["stop"]) | _FIRST_PERSON | _SECOND_PERSON
# People and animals a fact can be about: a question about "my son" must name him, and must
# not ask about anybody the sentence does not mention. The rules ask "Who is my X?" of people.
_HUMANS = set(_WORDS["humans"])
_PEOPLE = _HUMANS | set(_WORDS["animals"])
# Words that ask for a name: the sentence must have a name the question does not hold.
_NAME_WORDS = set(_WORDS["name_words"])
# Words after which a capitalized word is a place or a club, not a name ("lives in Kraków").
_PREPOSITIONS = set(_WORDS["prepositions"])
# What a question may ask by, beyond the sentence's own words ("How old am I?" for "I am 41
# years old", "What is my job?"): any other new word changes the fact ("my favorite food").
_ASKING_WORDS = set(_WORDS["asking_words"])

# A sentence with none of these is not English: the checks on English words are skipped.
_ENGLISH = set(_WORDS["english_markers"])

MAX_QUESTION_WORDS = 25
# "What's my name?" asks for the speaker's own name: only a sentence that says it answers it.
_OWN_NAME = re.compile(r"\bmy\s+(?:full\s+|first\s+|last\s+)?name\b|\bwho\s+am\s+i\b", re.IGNORECASE)
_GIVES_OWN_NAME = re.compile(r"\bmy\s+(?:\w+\s+)?name\b|\bi\s+am\s+called\b|\bi['’]?m\s+called\b"
                             r"|\bcall\s+me\b|\b(?:i\s+am|i['’]?m)\s+(?-i:[A-Z])", re.IGNORECASE)


# "What is my passport?" asks what a thing is (``_what_is_unsaid``), and so does "What is my
# blood pressure?".
_WHAT_IS_MY = re.compile(r"^what(?:'s| is) (?:my|our) ((?:\w+ )?(\w+))$")
# "How tall is I?": a verb that does not go with "I".
_DISAGREES = re.compile(r"\b(?:is|are|does|has) i\b|\bi (?:is|are|does|has)\b")


@dataclass(frozen=True)
class FactPair:
    """A question and its answer, written from a stated fact. ``swapped``: the answer is the
    sentence itself with its person swapped (the model's own answer fell short); ``ruled``: the
    question was made from the answer by a rule (none of the model's passed)."""

    question: str
    answer: str
    swapped: bool = False
    ruled: bool = False


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
    """The words of ``text`` that carry meaning, stemmed; a word with digits also gives its
    letters apart ("50mg" gives "mg": "How many mg ...?" asks with the sentence's own unit)."""
    words = _word_set(text) - _STOP
    units = {u for w in words if any(c.isdigit() for c in w) for u in re.findall(r"[^\W\d_]+", w)}
    return {_stem(w) for w in words | units}


def _normal(text: str) -> str:
    return " ".join(_fold(w.group()) for w in _words(text))


def _people(text: str, subject: bool = False) -> set[str]:
    """The people and animals ``text`` names; ``subject``: only those among its first three
    words, and not after "a" or "an": what the fact is about ("My sister Ana ..."), not whom it
    mentions ("... to see my cousin", "since I was a kid")."""
    words = [_fold(w.group()) for w in _words(text)]
    return {_stem(w) for i, w in enumerate(words)
            if _stem(w) in _PEOPLE_STEMS and not (subject and (i > 2 or (i and words[i - 1] in {"a", "an"})))}


def _names(sentence: str) -> list[str]:
    """The capitalized details that can be someone's name: not right after a preposition or
    article ("lives in Kraków", "plays for the Riverside Rovers"), nor joined by "and" or "or"
    to one that is not ("on Mondays and Thursdays"), titles passed over."""
    words = _words(sentence)
    starts = {w.start(): i for i, w in enumerate(words)}
    out: list[str] = []
    not_names: set[int] = set()  # the end of each capitalized detail that is no name
    for detail in details_of(sentence):
        i = starts.get(sentence.find(detail))
        if i is None or not detail[0].isupper():
            continue
        before = [w for w in words[:i] if not _is_title(sentence, w)]
        joined = len(before) >= 2 and _fold(before[-1].group()) in {"and", "or"} and before[-2].end() in not_names
        if before and (_fold(before[-1].group()) in _PREPOSITIONS or joined):
            not_names.add(sentence.find(detail) + len(detail))
        else:
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
      when it asks for a name, the sentence has one and the question holds none; it brings in
      no meaning word of its own beyond a few that ask (age, job, time, ...); when it asks
      for the speaker's own name, the sentence says it; "What is my X?" with X from the
      sentence gets an answer that says what X is; "How many X" an answer that counts X, "How
      long" one that says a length of time, "What is my job?" one that names a role, and a
      birthday or wedding is asked about only when the sentence names it;
    - a sentence about someone ("My sister ...") gets a question about them, and nobody else;
    - the question is in the first person and the answer in the second.

    The checks on words are English: a sentence and pair without an English function word
    ("I", "my", "the", "is", ...) are checked for details, the question mark and the length
    alone.
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
    if details and all(_holds(question, d) for d in details):
        return "the question gives the answer away"
    if not _english(sentence, question, answer):
        return None
    said, asked = _content(sentence), _content(question)
    left_out = said - _content(answer)
    if left_out:
        return f"the answer drops {_words_of(sentence, left_out)}"
    if said <= asked:
        return "the question gives the answer away"
    if _word_set(question) & _NAME_WORDS:
        names = _names(sentence)
        if not any(_fold(d) not in _fold(question) for d in names):
            return "the question asks for a name the answer does not give"
        if any(_names_named(question, d) for d in names):
            return "the question asks for a name it holds"
    if _OWN_NAME.search(question) and not _GIVES_OWN_NAME.search(sentence):
        return "the question asks for your name, which the sentence does not give"
    people, asked_about = _people(sentence, subject=True), _people(question)
    if (people and not people & asked_about) or asked_about - _people(sentence):
        return "the question is about somebody else"
    unsaid = _what_is_unsaid(said, question, answer)
    if unsaid:
        return f"the answer does not say what your {unsaid} is"
    uncounted = _uncounted(question, answer)
    if uncounted:
        return f"the answer does not count your {uncounted}"
    occasion = _unsaid_occasion(sentence, question)
    if occasion:
        return f"the question asks about {occasion}, which the sentence does not mention"
    if _no_duration(question, answer):
        return "the question asks how long, which the answer does not say"
    if _ASKS_JOB.search(question) and not _NAMES_ROLE.search(answer):
        return "the question asks for a job the answer does not name"
    # "When did I meet ...?" asks by the base form of the sentence's "met".
    new_words = asked - said - {_stem(w) for w in _ASKING_WORDS} - {_stem(base_form(w)) for w in _word_set(sentence)}
    if new_words:
        return f"the question brings in {_words_of(question, new_words)}"
    if not _word_set(question) & _FIRST_PERSON:
        return "the question is not in the first person"
    if _DISAGREES.search(_normal(question)):
        return "the question's verb does not go with I"
    if _word_set(answer) & (_I_FORMS | {"my", "me", "mine", "myself"}):
        return "the answer is in the first person"
    if not _word_set(answer) & _SECOND_PERSON:
        return "the answer is not in the second person"
    return None


def _names_named(question: str, name: str) -> bool:
    """Whether ``question`` asks for the name of ``name`` itself: "What is my friend Kenji's
    name?", "the name of Kenji", "What is Kenji called?" (not "Who does Kenji live with?")."""
    held = re.escape(_fold(name))
    return re.search(rf"(?<!\w){held}(?:'s name\b|\s+(?:is\s+)?(?:called|named)\b)|\bname of {held}(?!\w)",
                     _fold(question)) is not None


def _holds(text: str, detail: str) -> bool:
    """Whether ``text`` holds ``detail`` as whole words ("D" of "vitamin D" is not in "do")."""
    return re.search(rf"(?<!\w){re.escape(_fold(detail))}(?!\w)", _fold(text)) is not None


def _what_is_unsaid(said: set[str], question: str, answer: str) -> str | None:
    """The X of "What is my X?", X ending in a meaning word of the sentence, when the answer
    never says "X ... is": "What is my passport?" is not answered by "Your passport expires on
    ...", nor "What is my blood pressure?" by "You take X for your blood pressure."."""
    thing = _WHAT_IS_MY.match(_normal(question))
    if not thing or _stem(thing[2]) not in said:
        return None
    # "your number at the bank is ...", not "your flat is on the 4th floor" (where it is).
    said_is = rf"\b{re.escape(thing[1])}\b[^,;]*?\b(?:is|are|was)\b(?! (?:on|at|in|near|by)\b)"
    return None if re.search(said_is, _fold(answer)) else thing[1]


# "What is my job?" is answered by a role ("You're a nurse", "You work as a nurse"), not by
# where or when one works ("You work from home on Fridays").
_ASKS_JOB = re.compile(r"\b(?:job|occupation|profession|for a living)\b", re.IGNORECASE)
_NAMES_ROLE = re.compile(r"\b(?:am|are|is|was|were|as)\s+(?:a|an)\b|['’]re\s+(?:a|an)\b", re.IGNORECASE)
# "How many X ...?": the X asked for.
_HOW_MANY = re.compile(r"\bhow many (\w+)")
_ORDINAL = re.compile(r"^\d+(?:st|nd|rd|th)$")
# What answers "How long ...?": "since 2011", "for 6 years", "40 minutes", "two years ago".
_DURATION = re.compile(r"\b(?:since|for|ago|seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?)\b")
# Words that count what follows them ("two cats", "a dozen eggs").
_NUMBER_WORDS = {
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "dozen",
    "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "few", "several", "couple",
}


def _uncounted(question: str, answer: str) -> str | None:
    """The X of "How many X ...?" when the answer has no number before X (two words between at
    most: "two black cats") nor X as the unit of a number ("50mg"): "How many phone numbers
    does my phone have?" is not answered by "Your new phone number is 07700 900461."."""
    asked = _HOW_MANY.search(_normal(question))
    if not asked:
        return None
    thing = _stem(asked[1])
    words = _normal(answer).split()
    for i, word in enumerate(words):
        if _is_count(word) and _stem(re.sub(r"^[\d,.:/]+", "", word)) == thing:
            return None
        if _stem(word) == thing and any(_is_count(w) for w in words[max(0, i - 3):i]):
            return None
    return asked[1]


def _is_count(word: str) -> bool:
    """Whether ``word`` counts: a number in words or digits, not an ordinal ("the 4th floor")."""
    return word in _NUMBER_WORDS or (any(c.isdigit() for c in word) and not _ORDINAL.match(word))


# Asking words that name an occasion: a question may ask by one only when the sentence names it
# ("When is my birthday?" for "born on ...", not "What is my birthdate?" for a passport's expiry).
_OCCASIONS = {
    "a birthday": {"birth", "birthdate", "birthday", "born"},
    "a wedding": {"wedding", "anniversary", "married"},
}


def _unsaid_occasion(sentence: str, question: str) -> str | None:
    """The occasion ``question`` asks about by a word of ``_OCCASIONS`` that ``sentence`` has
    none of, if any."""
    asked, said = _content(question), _content(sentence)
    for occasion, words in _OCCASIONS.items():
        stems = {_stem(w) for w in words}
        if asked & stems and not said & stems:
            return occasion
    return None


def _no_duration(question: str, answer: str) -> bool:
    """Whether ``question`` asks "How long ...?" and ``answer`` says no length of time: "How
    long have I been a passport?" is not answered by "Your passport expires on 14/02/2031."."""
    return _normal(question).startswith("how long") and not _DURATION.search(_fold(answer))


def _english(sentence: str, question: str, answer: str) -> bool:
    """Whether the English checks apply: the sentence or the pair has an English function word
    (a note such as "lactose intolerant" has none, but its English pair does), or the question
    opens with an English wh-word or "how" ("How many inches tall?" for "Shoe size 10.5")."""
    opening = _words(question)[:1]
    return bool((_word_set(sentence) | _word_set(question) | _word_set(answer)) & _ENGLISH
                or (opening and _fold(opening[0].group()) in _WH_WORDS))


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


# Second person -> first person, for a question written to the user ("What is your dog's
# name?"): a verb before "you" first, "you" after any other word is "me".
_QUESTION_SWAPS = [
    (r"\bare you\b", "am I"), (r"\bwere you\b", "was I"), (r"\byou are\b", "I am"), (r"\byou were\b", "I was"),
    (r"\b(do|did|can|could|will|would|should|have|had|shall|may|might|must) you\b", r"\1 I"),
    (r"\byou['’]re\b", "I'm"), (r"\byou['’]ve\b", "I've"), (r"\byou['’]d\b", "I'd"), (r"\byou['’]ll\b", "I'll"),
    (r"\byourself\b", "myself"), (r"\byours\b", "mine"), (r"\byour\b", "my"), (r"^you\b", "I"), (r"\byou\b", "me"),
]


def first_person(text: str) -> str:
    """``text`` said by the user: "Where do you live?" -> "Where do I live?" (English
    pronouns and the verb before "you" only)."""
    out = text
    for pattern, repl in _QUESTION_SWAPS:
        out = re.sub(pattern, repl, out, flags=re.IGNORECASE)
    return out


def _as_asked(question: str) -> str:
    """A question the model wrote to the user ("What is your dog's name?") as the user asks it;
    any other question as written."""
    words = _word_set(question)
    return first_person(question) if words & _SECOND_PERSON and not words & _FIRST_PERSON else question


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


# Emoji and pictographs (and the joiners, variation selectors, keycaps and tags that build
# them; music's flats and sharps stay), and a chat aside ("lol", "LOL", not the name "Lol") or an
# emoticon: a fact's answer leaves them out. "<3" only where a clause ends ("<3 cats" counts).
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u2668\u2670-\u27BF\u2B00-\u2BFF\uFE0F\u200D\u20E3"
                    "\U000E0020-\U000E007F]+")
_ASIDES = "|".join(form for word in _WORDS["asides"] for form in (word, word.upper()))
_CLAUSE_END = r"(?=\s*(?:[.!?,;)]|$))"
_ASIDE = re.compile(rf"(?:\s+(?:{_ASIDES})\b)+{_CLAUSE_END}")
_EMOTICON = re.compile(rf"(?<!\S)(?:[:;]-?[()DPp](?=\s|[.!?,;)]|$)|<3{_CLAUSE_END})")
# Words to the assistant around the fact: "Just so you know, ...", "..., don't let me forget".
_BEFORE = "|".join(map(re.escape, _WORDS["said_to_you_before"]))
_AFTER = "|".join(map(re.escape, _WORDS["said_to_you_after"]))
_TO_YOU_BEFORE = re.compile(rf"^\s*(?:{_BEFORE})\b\s*[,:]?\s*", re.IGNORECASE)
_TO_YOU_AFTER = re.compile(rf"\s*[,;.]?\s*(?:{_AFTER})\b\s*(?=[.!?]*\s*$)", re.IGNORECASE)


def tidy(text: str) -> str:
    """``text`` without emoji, without a chat aside closing a clause ("my partner is vegan lol")
    or words to the assistant around the fact ("Just so you know, ...", "..., don't let me
    forget"), with one "!" or "?" where several stood, and no space left before a stop."""
    text = _ASIDE.sub("", _EMOTICON.sub(" ", _EMOJI.sub(" ", text)))
    text = _TO_YOU_AFTER.sub("", _TO_YOU_BEFORE.sub("", text))
    text = re.sub(r"([!?])[!?]+", r"\1", text)
    return re.sub(r"\s+([.!?,;)])", r"\1", text)


def as_sentence(text: str) -> str:
    """``text`` on one line, ending with a full stop (as the shots do)."""
    text = " ".join(text.split())
    return text + "." if text and text[-1] not in ".!。" else text


_Rules = tuple[tuple[re.Pattern[str], str], ...]


def base_form(verb: str) -> str:
    """The base form of an English verb in the past: "moved" -> "move", "stopped" -> "stop",
    "studied" -> "study", "graduated" -> "graduate", "went" -> "go" (irregular forms from the
    rules' data). Regular forms by spelling alone: wrong for a few ("visited" is right,
    "competed" gives "compet")."""
    word = verb.casefold()
    irregular = _english_data()["irregular_past"]
    if word in irregular:
        return str(irregular[word])
    if word.endswith("ied"):
        return word[:-3] + "y" if len(word) > 4 else word[:-1]  # studied; died
    if not word.endswith("ed"):
        return word
    stem = word[:-2]
    one_syllable = len(re.findall(r"[aeiouy]+", stem)) == 1
    doubled = len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "aeiou"
    if doubled and (stem[-1] not in "lsfz" or (stem[-1] == "l" and not one_syllable)):
        return stem[:-1]  # stopped, travelled; not called, passed
    one_vowel_last = re.search(r"(?:^|[^aeiou])[aeiou][^aeiouwxy]$", stem)  # hat, retir; not treat, visit
    if re.search(r"(?:[cvzu]|ang|(?<![eo])at)$", stem) or (one_vowel_last and (
            one_syllable or re.search(r"(?:id|ir|ur|ar|os|us|as|um|in|ib|ok)$", stem))):
        return stem + "e"  # danced, moved, changed, graduated; hated, used; decided, retired
    return stem


class _Word(str):
    """A word a rule matched; its template may ask for it in the base form ("{1:base}") or said
    by the user ("{2:asked}": "your flat" -> "my flat")."""

    def __format__(self, spec: str) -> str:
        if spec == "base":
            return base_form(self)
        if spec == "asked":
            return first_person(self)
        return super().__format__(spec)


def _placeholders(data: dict[str, Any]) -> dict[str, str]:
    """What each name in capitals stands for in the rules' patterns (their data's "about")."""
    def either(words: Sequence[str]) -> str:
        return "|".join(sorted(words, key=len, reverse=True))

    months = either([m.capitalize() for m in _MONTHS])
    # An ordinal is a day unless a noun follows it ("the 4th floor").
    ordinal = r"\d{1,2}(?:st|nd|rd|th)\b(?! (?!(?:of|at|and|to|in|on|from|every|each)\b)[a-z])"
    date = (rf"(?:\d{{1,2}}(?:st|nd|rd|th)?(?: of)? (?:{months})\b|{ordinal}|\d{{1,4}}[/.-]\d{{1,2}}\b"
            rf"|\d{{1,2}}(?::\d\d)? ?(?:am|pm)\b|\d{{1,2}}:\d\d\b|(?:{months}|{either(data['weekdays'])})s?\b)")
    # "in 2019", not "in 3 months" (how long it took).
    duration = r"[\d,.]* (?:seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b"
    time = (rf"(?:(?:in|on|at|since|by) (?:the )?(?:early |late |mid-?)?(?:\d(?!{duration})|(?:{months})\b)"
            rf"|(?:last|this|next) \w+\b|\d+ \w+ ago\b|when\b|back in\b)")
    return {
        "VERB": rf"(?!(?:{either(data['not_verbs'])})\b)(?!\w+ed\b|\w{{3,}}ly\b)\w+",
        "PAST": rf"(?!used to\b)(?:\w+[^e\W]ed|{either(data['irregular_past'])})",
        "NO_OBJECT": either(data["no_object"]), "NO_OBJECT_PAST": either(data["no_object_past"]),
        "NOT_DOING": either(data["not_doing"]), "ING_NOUNS": either(data["ing_nouns"]),
        "DATE": date, "TIME": time, "HUMANS": either(list(_HUMANS)),
        "COUNT": rf"(?:\d+|{either(list(_NUMBER_WORDS - {'few', 'several', 'couple', 'dozen'}))})\b",
        "TO_ADJECTIVES": either(data["to_adjectives"]),
        "PREFERENCE_VERBS": either(data["preference_verbs"]),
        "NOTE_VERBS": either(data["note_verbs"]),
    }


@cache
def _english_rules() -> tuple[_Rules, _Rules]:
    """The English rules of ``data/fact_questions.en.json``: the notes that become a sentence
    said to the user ("rent is $900" -> "Your rent is $900"), and the questions made from an
    answer. A small model copies its examples' questions ("What is my cat's name?") where a
    sentence fits none of them, but "You don't like X." is asked "What don't I like?" by
    grammar alone."""
    data = _english_data()
    words = _placeholders(data)
    names = re.compile("|".join(sorted(words, key=len, reverse=True)))  # NO_OBJECT_PAST before NO_OBJECT

    def compiled(pattern: str, flags: int = 0) -> re.Pattern[str]:
        return re.compile(names.sub(lambda m: words[m.group()], pattern), flags)

    notes = tuple((compiled(pattern, re.IGNORECASE), template) for pattern, template in data["notes"])
    rules = tuple((compiled(pattern), template) for pattern, template in data["rules"])
    return notes, rules


def said_back(sentence: str) -> str:
    """``sentence`` in the second person (``second_person``), and a note without a subject made
    a sentence said to the user ("born in Riga." -> "You were born in Riga.")."""
    answer = second_person(sentence)
    if _word_set(sentence) & (_I_FORMS | {"we", "we're", "we've", "me", "us"}):
        return answer
    for pattern, template in _english_rules()[0]:
        match = pattern.search(answer)
        if match:
            lowered = [g.lower() for g in match.groups()]
            return answer[:match.start()] + template.format(match.group(), *lowered) + answer[match.end():]
    return answer


# Where a later clause said to the user starts: "..., and you play ...", "... and your flat is ...".
_LATER_CLAUSE = re.compile(r"(?:[,;]|\s(?:and|but|so))\s+(?:(?:and|but|so)\s+)?(?=(?:you|your)\b)", re.IGNORECASE)


def clauses(answer: str) -> list[str]:
    """``answer``, then each part of it from a later clause that opens with "you" or "your", as
    a sentence of its own: "You're left-handed and you play the cello." gives "You play the
    cello." too, which a rule can ask about where it cannot ask about the whole."""
    text = answer.strip()
    rest = [text[m.end():] for m in _LATER_CLAUSE.finditer(text)]
    return [text, *(part[0].upper() + part[1:] for part in rest if part)]


# An adverb between "you" and its verb ("You just adopted ...") that a question leaves out (one
# in -ly, "usually", the rules keep in their questions).
_ADVERBS_AFTER_YOU = "|".join(_WORDS["adverbs_after_you"])
_ADVERB_AFTER_YOU = re.compile(rf"^(You(?:'re|'ve| are| have)?) (?:{_ADVERBS_AFTER_YOU}) ")


def questions_from_answer(answer: str) -> list[str]:
    """The questions the rules of ``_english_rules`` make from a second-person ``answer``, in
    order ("You take 50mg of X every morning." -> "What do I take?"): those for the whole
    answer first, then those for each of its later ``clauses``; an adverb after "you" is left
    out of what the rules read ("You just adopted a dog" asks "What did I adopt?")."""
    out = []
    for clause in clauses(answer.replace("’", "'")):
        clause = _ADVERB_AFTER_YOU.sub(r"\1 ", clause)
        for pattern, template in _english_rules()[1]:
            match = pattern.search(clause)
            if match:
                out.append(template.format(match.group(), *(_Word(g or "") for g in match.groups())))
    return list(dict.fromkeys(out))


def _ruled_pair(sentence: str, answers: Sequence[str]) -> FactPair | None:
    """The first pair of a rule's question and one of ``answers`` that passes ``rejection``."""
    for answer in dict.fromkeys(answers):
        for question in questions_from_answer(answer):
            if rejection(sentence, question, answer) is None:
                return FactPair(question, answer, swapped=answer == said_back(sentence), ruled=True)
    return None


def pair_from_fact(engine: Engine, sentence: str, swap: bool = True) -> FactPair | None:
    """The pair for a stated fact, or None when none passes ``rejection``: the caller then asks
    for the question. The same sentence always gives the same pair (rules, greedy decoding).

    In turn, the first pair that passes:
    1. a rule's question for the sentence said back (``said_back``, ``questions_from_answer``):
       "I drive a Civic." is "What do I drive?" by grammar, where the model asks "What is my
       car's make?" (no model call);
    2. the model's own pair under each prompt of ``VARIANTS``, a question it wrote to the user
       ("What is your dog's name?") asked as the user would ask it (``first_person``);
    3. a rule's question for the sentence said back or one of the model's answers;
    4. a question the model wrote whose own answer fell short (dropped a detail or a word, or
       kept the first person), with the sentence said back as its answer.
    Without ``swap``, the sentence said back is never the answer (1 and 4 are skipped)."""
    sentence = as_sentence(tidy(sentence))
    if not sentence:
        return None
    answer = said_back(sentence)
    first = _ruled_pair(sentence, [answer]) if swap else None
    if first is not None:
        return first
    dropped: list[str] = []
    answers: list[str] = []
    for question, written in candidates(engine, sentence):
        question = _as_asked(question)
        why = rejection(sentence, question, written)
        if why is None:
            return FactPair(question, written)
        answers.append(written)
        if why.startswith("the answer") and question not in dropped:
            dropped.append(question)
    ruled = _ruled_pair(sentence, [answer, *answers] if swap else answers)
    if ruled is not None or not swap:
        return ruled
    for question in dropped:
        if rejection(sentence, question, answer) is None:
            return FactPair(question, answer, swapped=True)
    return None
