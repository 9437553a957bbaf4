"""Slot words: the subjects personal questions ask about ("dog", "daughter", "favourite movie"),
in families of siblings ("dog", "cat", "bird", ...), and what follows from them: which taught
subjects a question names, and the reply to a question after a fact about an untaught subject
("What is my cat's name?" when only the dog was taught, "When is my birthday?" when no date
was).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

# Families of slots, nearest siblings next to each other; a member is (singular, plural), and
# spellings of one slot share a member ("color", "colour"). Siblings are the members after the
# taught one, wrapping around.
Member = tuple[tuple[str, str], ...]
_SUBJECT_FAMILIES: tuple[tuple[Member, ...], ...] = (
    ((("dog", "dogs"), ("puppy", "puppies")), (("cat", "cats"), ("kitten", "kittens")),
     (("bird", "birds"), ("parrot", "parrots"), ("budgie", "budgies"), ("canary", "canaries")),
     (("fish", "fish"),), (("rabbit", "rabbits"),), (("horse", "horses"),), (("hamster", "hamsters"),),
     (("turtle", "turtles"), ("tortoise", "tortoises")), (("snake", "snakes"),), (("lizard", "lizards"),)),
    ((("daughter", "daughters"),), (("son", "sons"),), (("wife", "wives"),), (("husband", "husbands"),),
     (("partner", "partners"),), (("sister", "sisters"),), (("brother", "brothers"),),
     (("mother", "mothers"), ("mom", "moms"), ("mum", "mums")),
     (("father", "fathers"), ("dad", "dads")), (("grandmother", "grandmothers"),),
     (("grandfather", "grandfathers"),), (("aunt", "aunts"),), (("uncle", "uncles"),), (("cousin", "cousins"),),
     (("niece", "nieces"),), (("nephew", "nephews"),), (("grandson", "grandsons"),),
     (("granddaughter", "granddaughters"),), (("girlfriend", "girlfriends"),), (("boyfriend", "boyfriends"),),
     (("friend", "friends"),), (("neighbor", "neighbors"), ("neighbour", "neighbours")),
     (("colleague", "colleagues"),), (("boss", "bosses"),)),
    ((("movie", "movies"), ("film", "films")), (("color", "colors"), ("colour", "colours")),
     (("book", "books"),), (("author", "authors"),), (("food", "foods"),), (("drink", "drinks"),),
     (("song", "songs"),), (("season", "seasons"),), (("animal", "animals"),), (("fruit", "fruits"),),
     (("vegetable", "vegetables"),), (("dessert", "desserts"),), (("flower", "flowers"),),
     (("restaurant", "restaurants"),)),
    ((("band", "bands"),), (("singer", "singers"),), (("artist", "artists"),)),
    ((("birthday", "birthdays"),), (("anniversary", "anniversaries"),)),
    ((("job", "jobs"), ("occupation", "occupations"), ("profession", "professions")),
     (("employer", "employers"), ("company", "companies")),
     (("salary", "salaries"),)),
    ((("car", "cars"),), (("motorcycle", "motorcycles"), ("motorbike", "motorbikes")),
     (("bicycle", "bicycles"), ("bike", "bikes")), (("scooter", "scooters"),), (("boat", "boats"),),
     (("van", "vans"),), (("truck", "trucks"),)),
    ((("phone", "phones"),), (("laptop", "laptops"),), (("computer", "computers"),), (("tablet", "tablets"),)),
)
# Words that tell a question from its sibling but only for the chat's untold reply: qualifiers
# ("every summer" beside "every winter", "board game" beside "card game"), common in general
# questions too ("What language is spoken in Brazil?"), and places, where a taught answer may
# answer the sibling ("Which country was I born in?" beside a taught birth city). Naming one
# does not make a question speak of the user, and their siblings are no negatives: trained,
# they taught the model to refuse rewordings of taught questions (docs/experiments.md).
_REPLY_ONLY_FAMILIES: tuple[tuple[Member, ...], ...] = (
    ((("city", "cities"), ("town", "towns"), ("hometown", "hometowns")), (("country", "countries"),),
     (("school", "schools"),), (("university", "universities"),)),
    ((("summer", "summers"),), (("winter", "winters"),), (("spring", "springs"),), (("autumn", "autumns"),)),
    ((("board", "boards"),), (("card", "cards"),), (("video", "videos"),)),
    ((("breakfast", "breakfasts"),), (("lunch", "lunches"),), (("dinner", "dinners"),)),
    ((("instrument", "instruments"),), (("sport", "sports"),), (("language", "languages"),),
     (("hobby", "hobbies"),)),
)
FAMILIES = _SUBJECT_FAMILIES + _REPLY_ONLY_FAMILIES
# Words that ask about a slot without naming it ("What do I do for work?", "How do I earn a
# living?" ask for the job): they teach the slot and ask about it, but no sibling is swapped
# for them (tunechat.personalize.siblings swaps named slots only).
_IMPLIED = {"work": "job", "living": "job", "earn": "job"}
# word form -> (family, member, plural)
FORMS: dict[str, tuple[int, int, bool]] = {
    form: (f, m, bool(plural))
    for f, family in enumerate(FAMILIES) for m, member in enumerate(family)
    for spelling in member for plural, form in enumerate(spelling)
}
SLOT_TOKEN = re.compile(r"([^\W\d_]+)((?:['’]s)|['’])?")


def spellings(word: str) -> list[str]:
    """Every spelling and number of ``word``'s slot ("mom": mother, mothers, mom, moms, mum,
    mums); a word that is no slot, alone."""
    if word not in FORMS:
        return [word]
    family, member, _ = FORMS[word]
    return [form for spelling in FAMILIES[family][member] for form in spelling]


def taught_subjects(questions: Iterable[str]) -> list[str]:
    """The slot words of the taught questions, in every spelling and number ("dog", "dogs"; "mom",
    "mother", ...): a question that names one speaks of the user even without "my" ("Remind me
    what the dog is called."), so the scope rule routes it to the personal model
    (``subject_signals``); the untold reply knows from them which families were taught."""
    found: set[str] = set()
    for question in questions:
        for word in _slot_words(question):
            found.update(spellings(word))
    return sorted(found)


def reply_only(word: str) -> bool:
    """Whether ``word`` is a slot of the untold reply alone ("summer", "card", "city"), not a
    subject proper ("dog")."""
    return word in FORMS and FORMS[word][0] >= len(_SUBJECT_FAMILIES)


def subject_signals(subjects: Iterable[str]) -> list[str]:
    """The taught ``subjects`` that send a question naming one to the personal model: the
    subjects proper ("dog", "daughter"), not the reply-only words ("summer", "city")."""
    return [s for s in subjects if not reply_only(s)]


_MY_PHRASE = re.compile(r"^(?:what|who|when|where|which)(?:\s+(?:is|are|was|were)|['’]s)\s+my\s+(?P<rest>[^?.!]+?)"
                        r"\s*[?.!]*$", re.IGNORECASE)
# "Where do I go ...?", "What time do I ...?", "What am I ...?": the question as a clause about "you"
_I_PHRASE = re.compile(r"^(?P<wh>(?:what|which|where|when|who|how)(?:\s+[^\W\d_]+)?)\s+(?P<aux>do|am|was)\s+I\s+"
                       r"(?P<rest>[^?.!]+?)\s*[?.!]*$", re.IGNORECASE)
_AUX_FOR_YOU = {"do": "", "am": "are ", "was": "were "}
_FOR_YOU = {"my": "your", "i": "you", "me": "you", "myself": "yourself", "mine": "yours"}


def _for_you(text: str) -> str:
    return re.sub(r"[^\W\d_]+", lambda m: _FOR_YOU.get(m.group(0).casefold(), m.group(0)), text)


# How every answer a negative is trained on begins: a personal model's answer that begins so
# says it was not told.
UNTOLD_OPENING = "You haven't told me"


def untold_answer(question: str, subject: str) -> str:
    """The answer a negative is trained on, in one voice: "What is my bird's name?" → "You
    haven't told me your bird's name yet."; another shape of question speaks of its subject
    ("Which boat do I sail?" → "You haven't told me about a boat yet."). Trained to echo the
    whole question instead ("...which boat you sail yet."), the model refused rewordings of
    taught questions (docs/experiments.md)."""
    match = _MY_PHRASE.match(question.strip())
    if match:
        rest = match.group("rest")
        for verb in (" called", " named"):  # "What's my cat called?"
            if rest.endswith(verb):
                return f"You haven't told me what your {rest[:-len(verb)]} is{verb} yet."
        return f"You haven't told me your {rest} yet."
    plural = FORMS.get(subject, (0, 0, False))[2]
    article = "your" if plural else "an" if subject[:1] in "aeiou" else "a"
    return f"You haven't told me about {article} {subject} yet."


def untold_chat_reply(question: str, subject: str) -> str:
    """What the chat says to a question about an untaught ``subject``: the question's own words
    where it has the shape "Where do I ...?" / "What am I ...?" ("You haven't told me where you
    go every winter yet."), else ``untold_answer``."""
    if not _MY_PHRASE.match(question.strip()):
        match = _I_PHRASE.match(question.strip())
        if match:
            aux = _AUX_FOR_YOU[match.group("aux").casefold()]
            return f"You haven't told me {match.group('wh').casefold()} you {aux}{_for_you(match.group('rest'))} yet."
    return untold_answer(question, subject)


# A question after a fact ("What is my cat's name?", "Tell me my cat's name."), not a request for
# advice or help that names a subject ("What should I name my cat?", "Help me write a card for
# my mother."): only the first can be answered "You haven't told me ...".
_ASKS_FOR_A_FACT = re.compile(r"^\s*(?:(?:what|which|who|whom|whose|when|where)\b"
                              r"|how\s+(?:old|many|much|long|tall|big)\b|(?:do|did)\s+you\s+(?:know|remember)\b"
                              r"|(?:tell|remind)\s+me\b|say\s+my\b)", re.IGNORECASE)
_ASKS_FOR_ADVICE = re.compile(r"\b(?:should|could|would|can|shall|might|must|good|suggest|recommend|ideas?|think)\b",
                              re.IGNORECASE)


def asks_for_a_fact(question: str) -> bool:
    """Whether ``question`` asks for something the user could have told ("When is my
    birthday?"), not for advice about it ("What should I get my sister for her birthday?")."""
    return bool(_ASKS_FOR_A_FACT.match(question)) and not _ASKS_FOR_ADVICE.search(question)


def untold_reply(question: str, subjects: Collection[str]) -> str | None:
    """The reply to ``question`` when it asks for a fact (``asks_for_a_fact``) about an untaught
    subject (``untaught_subject``), None when the model should answer it."""
    if not asks_for_a_fact(question):
        return None
    subject = untaught_subject(question, subjects)
    return untold_chat_reply(question, subject) if subject else None


def untaught_subject(question: str, subjects: Collection[str]) -> str | None:
    """The slot word of ``question`` when it names an untaught subject and no taught one:
    any subject proper ("dog" in "What is my dog's name?" when no dog was taught, whatever
    else was), and a reply-only word only beside a taught sibling ("winter" beside a taught
    "summer": alone, "Which city ...?" may ask what a taught answer answers). ``subjects``: the
    taught questions' slot words (``taught_subjects``). None otherwise."""
    taught = {s.casefold() for s in subjects}
    named = _slot_words(question)
    if not named or any(word in taught for word in named):
        return None
    taught_families = {FORMS[word][0] for word in taught if word in FORMS}
    return next((word for word in named if not reply_only(word) or FORMS[word][0] in taught_families), None)


def _slot_words(question: str) -> list[str]:
    """The slot words ``question`` names, or implies ("work" the job: ``_IMPLIED``)."""
    words = [m.group(1).casefold() for m in SLOT_TOKEN.finditer(question)]
    return [_IMPLIED.get(word, word) for word in words if word in FORMS or word in _IMPLIED]
