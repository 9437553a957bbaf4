"""Which turns the personal model answers: those that speak of you.

Training can only limit how much a personal model's answers to everything else drift from the
base model's (replay, KL); it cannot make them equal, and the base model answers some general
questions right by a hair (README, "Remember without forgetting"). So a personal model answers
the turns that speak of the user, and the untouched base model, which it was trained from,
answers the rest word for word as before.

A turn speaks of the user when its last user message refers to them in the first person ("my",
"I", "me", "myself", ...; "me" as the object of a request such as "tell me" or "give me"
does not count, it is only politeness; "we" and "our" do not either, being mostly generic), or
names something only the user's pairs name (a capitalized word inside a taught answer, such as
a name or a town). The rule errs
toward the personal model: a general question asked in the first person ("I wonder how many
days a week has") goes to the personal model, as it would without scoping. A follow-up that
points back with a pronoun ("How old is he?") goes where the user message before it went.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tunechat.core.chat_template import ChatMessage
from tunechat.core.engine import Engine, GenerationSettings
from tunechat.core.gguf_check import ModelFileError

# Singular only: "we", "our" and "us" are mostly generic in questions ("our solar system",
# "how do we measure"), and taught answers speak to one person ("Your name is ...").
FIRST_PERSON = frozenset({"i", "i'm", "im", "i've", "i'd", "i'll", "my", "mine", "myself", "me"})
OBJECT_PRONOUNS = frozenset({"me"})
# "tell me the capital of France" asks for something; it does not speak of the asker.
REQUEST_VERBS = frozenset({
    "tell", "give", "show", "help", "let", "teach", "remind", "write", "find", "get", "send",
    "bring", "make", "explain", "answer", "name", "list", "recommend", "suggest",
})
# A follow-up that points back ("How old is he?") goes where the question it follows went.
BACK_REFERENCES = frozenset({"he", "she", "him", "her", "his", "hers", "they", "them", "their", "it", "its"})
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
SETTING = "scope"  # store setting: "on" (default) or "off"
BASE_ANSWERED_NOTE = "(answered by the base model: the question does not speak of you)"


def _words(text: str) -> list[str]:
    return [w.casefold().replace("’", "'") for w in _WORD.findall(text)]


def speaks_of_user(text: str, names: Iterable[str] = ()) -> bool:
    """Whether ``text`` refers to the user (first person) or names something taught."""
    words = _words(text)
    for i, word in enumerate(words):
        if word not in FIRST_PERSON:
            continue
        if word in OBJECT_PRONOUNS and i > 0 and words[i - 1] in REQUEST_VERBS:
            continue
        return True
    known = {n.casefold() for n in names}
    return any(word in known for word in words)


def taught_names(answers: Iterable[str]) -> list[str]:
    """Capitalized words inside taught answers (not the first of a sentence): the names,
    places and brands only the user's pairs mention."""
    found: set[str] = set()
    for answer in answers:
        for sentence in re.split(r"(?<=[.!?])\s+", answer.strip()):
            words = _WORD.findall(sentence)
            found.update(w for w in words[1:] if w[:1].isupper() and w.casefold() not in FIRST_PERSON)
    return sorted(found)


def turn_speaks_of_user(messages: Sequence[ChatMessage], names: Iterable[str] = ()) -> bool:
    """Whether the conversation's last user message speaks of the user, or refers back with a
    pronoun ("How old is he?", "And what does he eat?") to a chain of user messages that did."""
    for text in reversed([m["content"] for m in messages if m["role"] == "user"]):
        if speaks_of_user(text, names):
            return True
        if not any(word in BACK_REFERENCES for word in _words(text)):
            return False
    return False


class ScopedEngine:
    """A personal model that answers what speaks of the user, and the base model it was trained
    from for the rest. The chat's side of ``Engine`` (stream, complete, model_path, close); both
    models stay loaded, so a turn never waits for a load (the cost is the base model's memory
    once more)."""

    def __init__(self, personal: Engine, base: Engine, names: Sequence[str] = ()) -> None:
        self.personal = personal
        self.base = base
        self.names = list(names)
        self.last_route = "personal"  # which model answered the last turn: "personal" or "base"

    @property
    def model_path(self) -> Path:
        return self.personal.model_path

    def route(self, messages: Sequence[ChatMessage]) -> Engine:
        """The engine for this turn (and remember which, for the UI)."""
        personal = turn_speaks_of_user(messages, self.names)
        self.last_route = "personal" if personal else "base"
        return self.personal if personal else self.base

    def stream(self, messages: Sequence[ChatMessage], settings: GenerationSettings = GenerationSettings(),
               stop: threading.Event | None = None) -> Iterator[str]:
        return self.route(messages).stream(messages, settings, stop)

    def complete(self, messages: Sequence[ChatMessage], settings: GenerationSettings = GenerationSettings()) -> str:
        return self.route(messages).complete(messages, settings)

    def close(self) -> None:
        self.personal.close()
        self.base.close()


ChatEngine = Engine | ScopedEngine


def answered_by_base(engine: ChatEngine) -> bool:
    """Whether the last turn ``engine`` answered went to the base model (scoping)."""
    return isinstance(engine, ScopedEngine) and engine.last_route == "base"


def scoping_enabled(store) -> bool:
    return (store.get_setting(SETTING, "on") or "on") != "off"


def open_engine(path: Path, registry, scoped: bool) -> ChatEngine:
    """The chat engine for the model at ``path``: a personal version (one the registry knows,
    whose base file still exists) is scoped when ``scoped``; anything else is a plain Engine, and
    so is a version whose base no longer loads (the personal model then answers everything)."""
    entry = next((e for e in registry.entries() if e.path == path and e.kind == "personal"), None)
    if not scoped or entry is None or entry.base_path == path or not entry.base_path.is_file():
        return Engine(path)
    personal = Engine(path)
    try:
        base = Engine(entry.base_path)
    except ModelFileError:
        return personal
    return ScopedEngine(personal, base, entry.manifest.scope_names if entry.manifest else [])
