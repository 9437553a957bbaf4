"""One decision for each turn of a chat with a personal version: who answers it (the personal
model, the base model it came from, or the chat itself saying it was never told), what the
answering model sees of the conversation, and why.

The chat, ``tunechat ask``, ``tunechat chat``, the personalize evaluation and the benchmarks
all call ``decide``: the scores a version's report gives are the chat's.

What a model sees of the conversation (``CONTEXT``), measured in conversations
(``bench/conversation.py``, docs/experiments.md, "What a turn sees"): small models copy the
pattern of the turns they see. Given the whole history, after a few "You haven't told me ...
yet." turns both models answered everything that way, the base model's general questions
included, and a personal answer ("You live in Gdansk.") came back as the answer to a
question about France. So a turn sees only the exchanges it belongs to: a self-contained
question is asked alone; a follow-up that points back ("How old is she?") sees the exchanges
of the chain it continues; the chat's own untold replies are never shown to a model.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from tunechat.core.chat_template import ChatMessage, with_system
from tunechat.core.slots import (
    UNTOLD_OPENING,
    subject_signals,
    taught_subjects,
    untaught_subject,
    untold_answer,
    untold_reply,
)

# The scope rule's words, per language (data/scope_words.json: closed-class words only). A turn
# speaks of the user when its message refers to them in the first person, singular only: "we",
# "our" and "us" are mostly generic in questions ("our solar system"), and taught answers speak
# to one person ("Your name is ..."); "me" next to a request word ("tell me the capital of
# France", "¿me puedes decir ...?") asks for something and does not speak of the asker.
_DATA = Path(__file__).parent / "data"
_SCOPE_WORDS = json.loads((_DATA / "scope_words.json").read_text(encoding="utf-8"))
_LANGUAGES = [value for key, value in _SCOPE_WORDS.items() if key != "about"]
FIRST_PERSON = frozenset(w for lang in _LANGUAGES for w in lang["first_person"])
ELIDED_FIRST_PERSON = frozenset(w for lang in _LANGUAGES for w in lang.get("elided", []))
OBJECT_PRONOUNS = frozenset(w for lang in _LANGUAGES for w in lang.get("object_pronouns", []))
REQUEST_VERBS = frozenset(w for lang in _LANGUAGES for w in lang.get("request_verbs", []))
# A follow-up that points back ("How old is he?") goes where the question it follows went.
BACK_REFERENCES = frozenset(w for lang in _LANGUAGES for w in lang.get("back_references", []))
# What a question may add or leave out and still ask a taught question again.
FUNCTION_WORDS = frozenset(w for lang in _LANGUAGES for w in lang.get("function_words", []))
# Per language: the phrases that open a question asking how long, how many, how old or when
# something happened, and the words besides digits an answer can say it with.
_AMOUNTS = tuple((tuple(tuple(p.split()) for p in lang.get("asks_for_amount", [])),
                  frozenset(lang.get("amount_words", []))) for lang in _LANGUAGES)
_AMOUNT_OPENING = 4  # the phrase starts among the first four words ("Can you remind me how long ..." does not)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
# Each language's closed-class words, phrases aside: what tells which language a message is in.
LANGUAGE_WORDS = {name: frozenset(w for key, words in lang.items() if key != "asks_for_amount" for w in words)
                  for name, lang in _SCOPE_WORDS.items() if name != "about"}
# English question words (what, which, who, where, when, why, how): two in a question make it two.
_WH_WORDS = frozenset(w for w in FUNCTION_WORDS if w.startswith(("wh", "how")) and "'" not in w)

Route = Literal["personal", "base"]
# Who gave a turn's answer: one of the models, or the chat saying that the user never told it.
AnsweredBy = Literal["personal", "base", "untold"]
ANSWERED_BY: tuple[AnsweredBy, ...] = ("personal", "base", "untold")
# What a model sees of the conversation: every earlier turn ("whole"), the exchanges its own
# side answered ("side"), or only the exchanges the turn continues ("chain"). Measured in
# bench/conversation.py; the product ships the one that won.
Context = Literal["whole", "side", "chain"]
CONTEXTS: tuple[Context, ...] = ("whole", "side", "chain")
CONTEXT: Context = "chain"
# The message key under which an assistant message carries who answered it.
BY_KEY = "answered_by"


@dataclass(frozen=True)
class Taught:
    """What a version was taught, derived from its pairs when it loads (never frozen into a
    manifest with the rules of the day): the capitalized names inside its answers and the slot
    words of its questions. ``subjects`` is None when the pairs are unknown (a version made
    before pairs were kept beside it): then no question gets the untold reply."""

    names: tuple[str, ...] = ()
    subjects: tuple[str, ...] | None = None
    pairs: tuple[tuple[str, str], ...] = ()  # (question, answer), for ``settle``
    verbs: tuple[str, ...] = ()  # the user's own first-person verbs (``first_person_verbs``)
    # The content words of each taught question that does not speak of the user (a corrected or
    # kept general answer): a question with all of them asks it again (``_asks_again``).
    general: tuple[frozenset[str], ...] = ()
    # The names of the answers to the user's own questions (a partner's, a pet's): a question
    # naming one is about the user's life, and may get the untold reply.
    own_names: tuple[str, ...] = ()
    # What the answers know that their questions do not say (``knowledge_words``): an answer
    # that brings none of it draws on nothing taught.
    knowledge: frozenset[str] = frozenset()

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Taught:
        pairs = list(pairs)
        is_general = [not _speaks_of_user(q, ()) and _in_known_words(q) for q, _ in pairs]
        general = [content_words(q) for (q, _), g in zip(pairs, is_general) if g]
        own_names = taught_names(a for (_, a), g in zip(pairs, is_general) if not g)
        return cls(tuple(taught_names(a for _, a in pairs)), tuple(taught_subjects(q for q, _ in pairs)),
                   tuple(pairs), tuple(first_person_verbs(pairs)), tuple(c for c in general if len(c) >= 2),
                   tuple(own_names), knowledge_words(pairs))

    @property
    def signals(self) -> tuple[str, ...]:
        """The words that send a question naming one to the personal model."""
        return self.names + tuple(subject_signals(self.subjects or ()))


@dataclass(frozen=True)
class Decision:
    """How one turn is answered."""

    route: Route  # the model that answers (or would: an untold reply names the personal side)
    untold: str | None  # the chat's own reply instead of a model's, for an untaught subject
    context: list[ChatMessage]  # what the answering model sees, ending with the user's message
    reason: str  # why, in a few words a person can read
    # The taught answer, said by the chat for the personal model when that model says it was not
    # told, or gives another taught answer, to a question taught in these very words
    # (``settle``); the turn is still the personal side's.
    recalled: str | None = None

    @property
    def answered_by(self) -> AnsweredBy:
        return "untold" if self.untold is not None else self.route

    @property
    def said(self) -> str | None:
        """The chat's own words for the turn, in place of a model's: the untold reply or the
        recalled taught answer; None when a model answers."""
        return self.untold if self.untold is not None else self.recalled


# Whether the base model reads a message as the user's (``scope_probe.ScopeProbe`` over
# ``Engine.embed``): what the words miss ("¿Cuánto mido?") and the probe finds.
AboutUser = Callable[[str], bool]


def decide(messages: Sequence[ChatMessage], taught: Taught, force: Route | None = None,
           context: Context = CONTEXT, about_user: AboutUser | None = None) -> Decision:
    """The decision for the conversation's last user message. ``messages``: the chat so far
    (an optional system message first), its assistant messages carrying ``BY_KEY`` where the
    chat knows who answered them; ``force``: this side answers, whatever the rule says (the
    chat's mode, or asking the other model), and then there is no untold reply;
    ``about_user``: the version's scope probe, when it has one."""
    system = [_plain(m) for m in messages if m["role"] == "system"]
    exchanges = _exchanges([m for m in messages if m["role"] != "system"])
    *earlier, current = exchanges or [[{"role": "user", "content": ""}]]
    question = current[0]["content"]
    chain = _chain(earlier, question)
    # The message that speaks of the user, if any (not asked when a side is forced: the probe
    # would read the message for nothing).
    root = _root(chain, question, taught, about_user) if force is None else None
    if force is not None:
        route, reason = force, "as asked"
    elif root is None:
        route, reason = "base", "does not speak of you"
    else:
        route = "personal"
        reason = _why_personal(question, taught, about_user) or "follows a question about you"
    untold = None
    if force is None and route == "personal" and taught.subjects is not None and not _is_taught(question, taught):
        # Only a question about the user's life, in the first person or naming someone of it,
        # can ask what they have not told ("Who is the author of Middlemarch?", routed by the
        # name in a corrected answer, asks about a book; "Where does Leo work?" asks about them).
        asks_of_user = _speaks_of_user(question, taught.own_names) is not None
        untold = (untold_reply(question, taught.subjects) if asks_of_user else None) or \
            _untold_follow_up(question, root, taught.subjects)
        if untold is not None:
            reason = UNTAUGHT_REASON
    return Decision(route, untold, system + _context(earlier, chain, current, route, context), reason)


# A personal answer that repeats a taught answer word for word, to a question that is not a
# wording of that answer's question, is borrowed ("Which football team do I support?" → "You go
# swimming at 5:40 in the morning."): the base model finds the taught answer this much less
# likely after the question asked than after its own (mean log-probability per token, nats).
# Read on the tuned personas (bench/borrowing.py, docs/experiments.md "Borrowed answers"): right
# rewordings up to 0.95, borrowed answers from 1.15.
BORROWED_DROP = 1.05
UNTOLD_REPLY = "You haven't told me that yet."
BORROWED_REASON = 'would have answered with what you taught for "{question}"'

# How likely the base model finds an answer after a question (mean log-probability per token).
Likelihood = Callable[[str, str], float]


def repeats_taught_answer(answer: str, taught: Taught) -> list[tuple[str, str]]:
    """The taught pairs whose answer ``answer`` is, case, spacing and punctuation aside."""
    said = _plain_text(answer)
    return [(q, a) for q, a in taught.pairs if said and _plain_text(a) == said]


def may_repeat_taught_answer(partial: str, taught: Taught) -> bool:
    """Whether an answer that starts with ``partial`` may still turn out a taught answer."""
    start = " ".join(partial.split())
    return any(" ".join(a.split()).startswith(start) for _, a in taught.pairs)


def amount_words_for(question: str) -> frozenset[str] | None:
    """The words that could answer ``question`` when it asks how long, how many, how old or
    when something happened ("How long have I played the cello?", "¿Cuántos años tiene mi
    hija?"): those of each language with a phrase that opens it; None when it asks none of
    that. A question with a clause before or after it ("When I'm sad, what do I play?") or a
    second question word is left alone."""
    words = words_of(question)
    if any(mark in question for mark in ",;"):
        return None
    found = [answers for phrases, answers in _AMOUNTS
             if any(tuple(words[i:i + len(phrase)]) == phrase
                    for i in range(min(_AMOUNT_OPENING, len(words))) for phrase in phrases)]
    if not found or sum(w in _WH_WORDS for w in words) > 1:
        return None
    return frozenset().union(*found)


def says_amount(answer: str, words: frozenset[str]) -> bool:
    """Whether ``answer`` can say a time, a length of time or a number: a digit, or one of
    ``words`` ("three", "March", "mornings", "since", "a")."""
    return any(c.isdigit() for c in answer) or not words.isdisjoint(words_of(answer))


def borrowed_from(question: str, answer: str, taught: Taught, likelihood: Likelihood) -> str | None:
    """The taught question whose answer ``answer`` borrows: it repeats that answer, and either
    ``question`` asks for a time or number that answer cannot say ("How long have I played the
    bandoneon?" → "You play the bandoneon."), or the base model finds it far less likely after
    ``question`` than after its own question (every taught question with that answer, when
    several share it). None when the answer is its own."""
    repeated = repeats_taught_answer(answer, taught)
    if not repeated or any(_plain_text(q) == _plain_text(question) for q, _ in repeated):
        return None
    amounts = amount_words_for(question)
    if amounts is not None and not says_amount(answer, amounts):
        return repeated[0][0]
    if all(likelihood(q, a) - likelihood(question, a) > BORROWED_DROP for q, a in repeated):
        return repeated[0][0]
    return None


def borrowed_reply(question: str, answer: str, taught: Taught, likelihood: Likelihood) -> tuple[str, str] | None:
    """The chat's reply and its reason in place of a borrowed ``answer`` (``borrowed_from``);
    None when the answer is its own."""
    source = borrowed_from(question, answer, taught, likelihood)
    return None if source is None else (UNTOLD_REPLY, BORROWED_REASON.format(question=source))


# A personal answer that brings nothing taught in its first words (``brings_knowledge``) was
# not answered from what the user taught: the model made it up ("Your blood type is A.",
# "Your granddaughter is 21.") or answers a question anyone could ask in its own way ("I need
# the chemical formula for water."). Taught answers say what they know early; the chat holds a
# personal answer back until it has (or has said this many words without it).
GROUNDING_WORDS = 20
NOTHING_TAUGHT_REASON = "nothing you taught answers it"
RECALLED_REASON = "what you taught for this question"
UNTAUGHT_REASON = "asks about something you have not taught"
_TOKEN = re.compile(r"\d+(?:[:.,]\d+)*|[^\W\d_]+")  # numbers ("5:40" whole), and words


@functools.cache
def _everyday_words() -> frozenset[str]:
    """Words anyone's messages use: those of the scope probe's bank of personal and general chat
    messages in six languages (data/scope_bank.json), and the English function words."""
    bank = json.loads((_DATA / "scope_bank.json").read_text(encoding="utf-8"))["languages"]
    return FUNCTION_WORDS | {w.casefold() for side in bank.values() for messages in side.values()
                             for message in messages for w in _TOKEN.findall(message)}


def knowledge_words(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """What the taught answers know that their questions do not say: per pair, the words of its
    answer that its question lacks and that are a name (capitalized, not first in its
    sentence), a number ("5:40" whole) or no everyday word ("Pimento", "14", "bandoneon",
    "penicillin"); an answer with none of those gives every word its question lacks but the
    function words."""
    everyday = _everyday_words()
    known: set[str] = set()
    for question, answer in pairs:
        asked = {w.casefold() for w in _TOKEN.findall(question)}
        own: set[str] = set()
        rest: set[str] = set()
        for sentence in _sentences_of(answer):
            words = _TOKEN.findall(sentence)
            for i, word in enumerate(words):
                folded = word.casefold()
                if folded in asked or (len(folded) < 2 and not folded.isdigit()):
                    continue  # the question's words; a letter alone ("F" of "F7")
                if folded not in everyday or word[:1].isdigit() or (i > 0 and _is_name(word, words[i + 1:i + 2])):
                    own.add(folded)
                elif folded not in FUNCTION_WORDS:
                    rest.add(folded)
        known |= own or rest
    return frozenset(known)


def brings_knowledge(answer: str, taught: Taught) -> bool:
    """Whether ``answer``'s first ``GROUNDING_WORDS`` words hold something a taught answer knows."""
    return any(w.casefold() in taught.knowledge for w in _TOKEN.findall(answer)[:GROUNDING_WORDS])


def may_say_untold(partial: str) -> bool:
    """Whether an answer that starts with ``partial`` may be the model saying it was not told
    (which ``settle`` may replace: it is held whole; such answers are short)."""
    said, opening = _folded(partial), _folded(UNTOLD_OPENING)
    return opening.startswith(said) or said.startswith(opening)


def says_untold(answer: str) -> bool:
    """Whether ``answer`` is the model saying it was not told ("You haven't told me ...")."""
    return _folded(answer.strip()).startswith(_folded(UNTOLD_OPENING))


def _folded(text: str) -> str:
    return text.casefold().replace("’", "'")


def read_enough(answer: str) -> bool:
    """Whether ``answer`` is long enough to say whether it brings anything taught."""
    return len(_TOKEN.findall(answer)) >= GROUNDING_WORDS


def gives_way(question: str, answer: str, taught: Taught, about_user: AboutUser | None) -> bool:
    """Whether ``settle`` sets ``answer`` aside for bringing nothing taught (its first words;
    never an answer to a taught question in its own words, nor without a probe)."""
    return (about_user is not None and bool(taught.knowledge) and not _is_taught(question, taught)
            and not brings_knowledge(answer, taught))


def settle(decision: Decision, answer: str, taught: Taught, likelihood: Likelihood,
           about_user: AboutUser | None) -> Decision:
    """The turn's decision once the personal model has answered (``answer``: the whole answer,
    or its first ``GROUNDING_WORDS`` words). The same decision when the answer stands.

    - A taught question asked in its own words keeps its answer, unless the model says it was
      not told or gives another question's taught answer: then the chat says what was taught
      (the negatives bring that refusal close to the taught answers, and the verify gate lets
      one taught answer in ten change).
    - A borrowed answer (``borrowed_reply``) becomes the chat's reply.
    - An answer that brings nothing taught (``brings_knowledge``) becomes the chat's reply when
      the question, or a message of the chain it continues, asks about the user's life (the
      version's scope probe reads it so, or it names someone of it; the model's own "You
      haven't told me ..." is kept as that reply), and the base model's answer otherwise: the
      personal model had nothing taught to add.
      Without a probe to tell the two apart (none kept, or one that failed to read), the
      answer stands.
    """
    question = decision.context[-1]["content"]
    if _is_taught(question, taught):
        asked = _plain_text(question)
        own = [a for q, a in taught.pairs if _plain_text(q) == asked]
        repeated = repeats_taught_answer(answer, taught)
        anothers = bool(repeated) and all(_plain_text(q) != asked for q, _ in repeated)
        if not says_untold(answer) and not anothers:
            return decision
        return replace(decision, recalled=own[-1], reason=RECALLED_REASON)  # the newest pair, if several
    borrowed = borrowed_reply(question, answer, taught, likelihood)
    if borrowed is not None:
        return replace(decision, untold=borrowed[0], reason=borrowed[1])
    if not gives_way(question, answer, taught, about_user):
        return decision
    assert about_user is not None  # gives_way says so
    # The chain's messages too: "How old is she?" after "Who is my granddaughter?" asks about the user.
    # Of each, the question it asks: "I was at the market and wondered: what's the capital of Peru?"
    # speaks of the user, but asks what anyone could.
    asked_here = [q for m in decision.context if m["role"] == "user" for q in questions_asked(m["content"])]
    if any(about_user(text) or _names_one_of(text, taught.own_names) for text in reversed(asked_here)):
        said = answer.strip()
        return replace(decision, untold=said if says_untold(said) else UNTOLD_REPLY, reason=UNTAUGHT_REASON)
    return replace(decision, route="base", reason=NOTHING_TAUGHT_REASON)


_ANSWER_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # an answer's sentences, where names are told from first words
_SENTENCE_END = re.compile(r"(?<=[.!?…:;])\s+|\s+[—–-]+\s+")


def questions_asked(message: str) -> list[str]:
    """The sentences of ``message`` that ask: those that end with a question mark ("So I was at
    the vet today — what breed is my dog again?" asks "what breed is my dog again?"; "Where do I
    live? I can never remember." asks "Where do I live?"); the whole message when none does
    ("Tell me my dog's name. Thanks!"), or when one points back with a pronoun and asks with
    what it points to ("My daughter — how old is she?")."""
    sentences = [s for s in _SENTENCE_END.split(message.strip()) if re.search(r"\w", s)]
    asked = [s for s in sentences if s.rstrip().endswith(("?", "？"))]
    if not asked or any(_points_back(s) for s in asked):
        return [message]
    return asked


def _names_one_of(text: str, names: Iterable[str]) -> bool:
    return _named(words_of(text), names) is not None


def _named(words: Sequence[str], names: Iterable[str]) -> str | None:
    """The first of ``names`` (as given) among ``words`` (``words_of``), None when none is."""
    known = {n.casefold(): n for n in names}
    return next((known[w] for w in words if w in known), None)


def _plain_text(text: str) -> str:
    """``text``'s words and numbers only, case aside."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def _chain(earlier: Sequence[list[ChatMessage]], question: str) -> list[list[ChatMessage]]:
    """The earlier exchanges ``question`` continues, oldest first: while a message points back
    with a pronoun ("How old is he?"), the exchange before it belongs to its chain."""
    chain: list[list[ChatMessage]] = []
    for exchange in reversed(earlier):
        if not _points_back(question):
            break
        chain.insert(0, exchange)
        question = exchange[0]["content"]
    return chain


def _root(chain: Sequence[list[ChatMessage]], question: str, taught: Taught,
          about_user: AboutUser | None) -> list[ChatMessage] | None:
    """The newest message of the chain (``question`` itself first) that speaks of the user, as
    an exchange; None when none does."""
    if _why_personal(question, taught, about_user):
        return [{"role": "user", "content": question}]
    return next((e for e in reversed(chain) if _why_personal(e[0]["content"], taught, about_user)), None)


def _why_personal(text: str, taught: Taught, about_user: AboutUser | None = None) -> str | None:
    """Why ``text`` is the personal model's to answer: it speaks of the user, or it is a
    question the user taught, in whatever language (a Spanish verb in the first person says
    so without a pronoun: "¿Qué deporte practico los domingos?"), or the base model reads it
    as the user's (``about_user``)."""
    if reason := _speaks_of_user(text, taught.signals):
        return reason
    if _is_taught(text, taught) or _asks_again(text, taught):
        return "asks what you taught"
    if verb := next((w for w in words_of(text) if w in taught.verbs), None):
        return f'says "{verb}", as your taught questions do'
    if about_user is not None and about_user(text):
        return "reads as a question about you"
    return None


def first_person_verbs(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The verbs a pro-drop question of the user's says "I" with, read from the pairs: in a
    taught question with no first-person word, a word that its answer says again in another
    person ("¿Qué medicamento tomo …?" → "Tomas Eutirox …": "tomo"), by a stem of three letters
    or more that leaves at most two letters of it out: an ending changed, not one added or
    dropped (a plural, "manhã" → "manhãs", "domingos" → "domingo", is the same word). A verb form
    that is also a function word ("como": "I eat", and "how") sends that word's general
    questions to the personal model too."""
    found: dict[str, None] = {}
    for question, answer in pairs:
        if _speaks_of_user(question, ()):
            continue
        said = set(words_of(answer))
        for word in words_of(question):
            if word in said or len(word) < 3:
                continue
            stem = max(3, len(word) - 2)
            if any(other[:stem] == word[:stem] and not other.startswith(word) and not word.startswith(other)
                   for other in said):
                found.setdefault(word, None)
    return list(found)


def content_words(text: str) -> frozenset[str]:
    """``text``'s words but its function words, a possessive's "'s" left out."""
    return frozenset(w.removesuffix("'s") for w in words_of(text) if w not in FUNCTION_WORDS)


def _in_known_words(text: str) -> bool:
    """Whether ``text`` is in a language whose function words are known: a third of its words
    at least ("¿Dónde trabajo?" has none; the verb's person is what its other forms change)."""
    words = words_of(text)
    return bool(words) and 3 * sum(w in FUNCTION_WORDS for w in words) >= len(words)


def _asks_again(question: str, taught: Taught) -> bool:
    """Whether ``question`` has every content word of a taught question that does not speak of
    the user ("Which city is Australia's capital?" asks "What is the capital of Australia?"
    again), two at least; a word counts as another when one starts like the other but for its
    last letter ("Canada", "Canadian"; not "Australia", "Austria")."""
    if not taught.general:
        return False
    asked = content_words(question)
    return any(all(any(_same_word(word, other) for other in asked) for word in words) for words in taught.general)


def _same_word(one: str, other: str) -> bool:
    if one == other:
        return True
    shorter = min(len(one), len(other))
    common = next((i for i, (a, b) in enumerate(zip(one, other)) if a != b), shorter)
    return common >= max(4, shorter - 1)


def _is_taught(question: str, taught: Taught) -> bool:
    """Whether ``question`` is a taught question, case, spacing and punctuation aside."""
    asked = _plain_text(question)
    return bool(asked) and any(_plain_text(q) == asked for q, _ in taught.pairs)


def _untold_follow_up(question: str, root: list[ChatMessage] | None, subjects: Collection[str]) -> str | None:
    """A follow-up ("How old is it?") to a question the chat said it was not told about gets
    the same answer: the model would otherwise answer it from a taught subject."""
    if root is None or _by(root) != "untold":
        return None
    subject = untaught_subject(root[0]["content"], subjects)
    return untold_answer(question, subject) if subject else None


def without_untold(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """A chat as one model sees it when no decision is made (a plain model, no personal
    version): every exchange but those the chat answered itself."""
    system = [_plain(m) for m in messages if m["role"] == "system"]
    exchanges = _exchanges([m for m in messages if m["role"] != "system"])
    return system + [_plain(m) for e in exchanges if _by(e) != "untold" for m in e]


def as_history(messages: Iterable, system_prompt: str | None) -> list[ChatMessage]:
    """A stored chat's messages (``store.Message``) as ``decide`` reads them: each with who
    answered it, where known, and the chat's system prompt first when it has one."""
    turns: list[ChatMessage] = [
        {"role": m.role, "content": m.content, **({BY_KEY: m.answered_by} if m.answered_by else {})}
        for m in messages
    ]
    return with_system(turns, system_prompt)


def _speaks_of_user(text: str, signals: Iterable[str]) -> str | None:
    """Why ``text`` speaks of the user, None when it does not."""
    words = words_of(text)
    for i, word in enumerate(words):
        if word in OBJECT_PRONOUNS and REQUEST_VERBS.intersection(words[max(i - 1, 0):i] + words[i + 1:i + 2]):
            continue  # "tell me ...", "¿me puedes decir ...?": asks for something, not about the asker
        if word in FIRST_PERSON or word.split("'")[0] in ELIDED_FIRST_PERSON and "'" in word:
            return f'speaks of you ("{word}")'
    named = _named(words, signals)
    return f'names "{named}", which you taught' if named else None


def language_of(text: str) -> str | None:
    """The language whose closed-class words ``text`` uses most (``LANGUAGE_WORDS``); None when
    it uses none, or as many of two languages' ("me" is English and Spanish)."""
    words = words_of(text)
    counts = sorted(((sum(w in vocab for w in words), name) for name, vocab in LANGUAGE_WORDS.items()), reverse=True)
    return counts[0][1] if counts and counts[0][0] > 0 and (len(counts) == 1 or counts[1][0] < counts[0][0]) else None


def words_of(text: str) -> list[str]:
    return [w.casefold().replace("’", "'") for w in _WORD.findall(text)]


def speaks_of_user(text: str, names: Iterable[str] = ()) -> bool:
    """Whether ``text`` refers to the user (first person) or names something taught."""
    return _speaks_of_user(text, names) is not None


def turn_speaks_of_user(messages: Sequence[ChatMessage], names: Iterable[str] = ()) -> bool:
    """Whether the conversation's last user message speaks of the user, or refers back with a
    pronoun ("How old is he?", "And what does he eat?") to a chain of user messages that did."""
    return decide(messages, Taught(tuple(names))).route == "personal"


def taught_names(answers: Iterable[str]) -> list[str]:
    """Capitalized words inside taught answers (not the first of a sentence): the names,
    places and brands only the user's pairs mention."""
    found: set[str] = set()
    for answer in answers:
        for sentence in _sentences_of(answer):
            words = _WORD.findall(sentence)
            found.update(w for i, w in enumerate(words) if i > 0 and _is_name(w, words[i + 1:i + 2]))
    return sorted(found)


def _sentences_of(answer: str) -> list[str]:
    return _ANSWER_SENTENCE_END.split(answer.strip())


def _is_name(word: str, after: Sequence[str] = ()) -> bool:
    """Whether ``word``, inside a sentence (``after``: the word that follows it, if any), is a
    name: capitalized, not "I", no letter alone ("F" of "F7"), and no function word leading
    into a name ("The" of "a bar called The Rusty Anchor"; "May" and "Will" alone are names)."""
    folded = word.casefold()
    leads_in = folded in FUNCTION_WORDS and any(w[:1].isupper() for w in after)
    return word[:1].isupper() and len(word) > 1 and folded not in FIRST_PERSON and not leads_in


def _points_back(text: str) -> bool:
    return any(word in BACK_REFERENCES for word in words_of(text))


def _exchanges(turns: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """The turns as exchanges: a user message and the answers that follow it."""
    out: list[list[ChatMessage]] = []
    for message in turns:
        if message["role"] == "user" or not out:
            out.append([message])
        else:
            out[-1].append(message)
    return out


def _context(earlier: Sequence[list[ChatMessage]], chain: Sequence[list[ChatMessage]],
             current: list[ChatMessage], route: Route, context: Context) -> list[ChatMessage]:
    """What the answering model sees: the exchanges the policy keeps, never one the chat
    answered itself ("You haven't told me ..."), then the current message."""
    if context == "whole":
        kept = list(earlier)
    elif context == "side":
        kept = [e for e in earlier if _by(e) in (route, None)]
    else:
        kept = list(chain)
    return [_plain(m) for e in kept if _by(e) != "untold" for m in e] + [_plain(m) for m in current]


def _by(exchange: Sequence[ChatMessage]) -> str | None:
    """Who answered an exchange (its last answer), None when the chat does not know."""
    answers = [m for m in exchange if m["role"] == "assistant"]
    return answers[-1].get(BY_KEY) if answers else None


def _plain(message: ChatMessage) -> ChatMessage:
    return {"role": message["role"], "content": message["content"]}
