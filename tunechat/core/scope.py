"""Which turns the personal model answers: those that speak of you.

Training can only limit how much a personal model's answers to everything else drift from the
base model's (replay, KL); it cannot make them equal, and the base model answers some general
questions right by a hair (README, "Remember without forgetting"). So a personal model answers
the turns that speak of the user, and the untouched base model, which it was trained from,
answers the rest word for word as before.

A turn speaks of the user when its last user message refers to them in the first person ("my",
"I", "me", "myself", ...; "me" as the object of a request such as "tell me" or "give me"
does not count, it is only politeness; "we" and "our" do not either, being mostly generic), or
names something the user's pairs name: a capitalized word inside a taught answer, such as a
name or a town, or the subject of a taught question ("Remind me what the dog is called." when
the dog was taught; the personalize job writes both into the version's manifest). The rule errs
toward the personal model: a general question asked in the first person ("I wonder how many
days a week has") goes to the personal model, as it would without scoping. A follow-up that
points back with a pronoun ("How old is he?") goes where the user message before it went.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from tunechat.core.chat_template import ChatMessage
from tunechat.core.engine import Engine, GenerationSettings
from tunechat.core.gguf_check import ModelFileError
from tunechat.core.slots import untold_reply

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


Route = Literal["personal", "base"]
# Who answers a chat's turns: the scope rule ("auto"), or one side for every turn.
Mode = Literal["auto", "personal", "base"]
MODES: tuple[Mode, ...] = ("auto", "personal", "base")
MODE_SETTING = "scope_mode:{chat_id}"  # store setting per chat; "auto" when absent


def chat_mode(store, chat_id: int) -> Mode:
    value = store.get_setting(MODE_SETTING.format(chat_id=chat_id), "auto")
    return next((mode for mode in MODES if mode == value), "auto")


def set_chat_mode(store, chat_id: int, mode: Mode) -> None:
    store.set_setting(MODE_SETTING.format(chat_id=chat_id), None if mode == "auto" else mode)


def forced_route(mode: Mode) -> Route | None:
    """The side a chat's mode forces, None for the rule."""
    return None if mode == "auto" else mode


class ScopedEngine:
    """A personal model that answers what speaks of the user, and the base model it was trained
    from for the rest. The chat's side of ``Engine`` (stream, complete, model_path, close).

    One model in memory: the base GGUF with the version's LoRA adapter, whose scale is set per
    turn (1 for the personal model, 0 for the base model, which is then the base to the bit).
    A version kept before adapters were written has only its merged file; it is scoped with
    the base model loaded beside it (``base``), at twice the memory.
    """

    def __init__(self, personal: Engine, base: Engine | None = None, names: Sequence[str] = (),
                 model_path: Path | None = None, always: Route | None = None,
                 subjects: Sequence[str] | None = None) -> None:
        if base is None and personal.lora_path is None:
            raise ValueError("A scoped engine needs an adapter over the base or a base model beside it.")
        self.personal = personal
        self.base = base
        self.names = list(names)
        self.always = always  # every turn to this side (scoping off on a version without a merged file)
        # The taught questions' slot words (tunechat.core.slots); None when the version does not
        # say, and then no question gets the untold reply: what it was taught is unknown.
        self.subjects = list(subjects) if subjects is not None else None
        self.last_untold = False  # the last turn asked about an untaught subject and got the reply for it
        self.last_route: Route = "personal"  # which model answered the last turn
        self._model_path = model_path or personal.model_path  # the version the chat names

    @property
    def model_path(self) -> Path:
        return self._model_path

    def route_of(self, messages: Sequence[ChatMessage]) -> Route:
        """Which model the scope rule gives this turn."""
        if self.always is not None:
            return self.always
        return "personal" if turn_speaks_of_user(messages, self.names) else "base"

    def route(self, messages: Sequence[ChatMessage], force: Route | None = None) -> Engine:
        """The engine for this turn (``force``: this side, whatever the rule says), set up for
        it; remembered in ``last_route`` for the UI."""
        self.last_route = force or self.route_of(messages)
        if self.base is not None:
            return self.personal if self.last_route == "personal" else self.base
        self.personal.set_adapter_scale(1.0 if self.last_route == "personal" else 0.0)
        return self.personal

    def untold(self, messages: Sequence[ChatMessage], force: Route | None) -> str | None:
        """The reply to a turn the rule gives the personal model that asks for a fact about an
        untaught subject ("What is my cat's name?" when only the dog was taught):
        "You haven't told me your cat's name yet." instead of the taught dog's name, which
        a personal model gives for it more often than not (docs/design.md, "What it does not
        know"). Not when a side is forced: the user asked for the model's own answer."""
        if force is not None or self.always is not None or self.last_route != "personal" or self.subjects is None:
            return None
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return untold_reply(last, self.subjects)

    def stream(self, messages: Sequence[ChatMessage], settings: GenerationSettings = GenerationSettings(),
               stop: threading.Event | None = None, force: Route | None = None) -> Iterator[str]:
        engine = self.route(messages, force)
        reply = self.untold(messages, force)
        self.last_untold = reply is not None
        return iter([reply]) if reply is not None else engine.stream(messages, settings, stop)

    def complete(self, messages: Sequence[ChatMessage], settings: GenerationSettings = GenerationSettings(),
                 force: Route | None = None) -> str:
        return "".join(self.stream(messages, settings, force=force)).strip()

    def close(self) -> None:
        self.personal.close()
        if self.base is not None:
            self.base.close()


ChatEngine = Engine | ScopedEngine


# Who gave a scoped turn's answer: one of the models, or the chat itself saying that the user
# never told it (tunechat.core.slots.untold_reply).
AnsweredBy = Literal["personal", "base", "untold"]


def answered_by(engine: ChatEngine) -> AnsweredBy | None:
    """Who answered ``engine``'s last turn; None when there is only one model."""
    if not isinstance(engine, ScopedEngine):
        return None
    return "untold" if engine.last_untold else engine.last_route


def answered_by_base(engine: ChatEngine) -> bool:
    """Whether the last turn ``engine`` answered went to the base model (scoping)."""
    return answered_by(engine) == "base"


def scoping_enabled(store) -> bool:
    return (store.get_setting(SETTING, "on") or "on") != "off"


def open_engine(path: Path, registry, scoped: bool) -> ChatEngine:
    """The chat engine for the model at ``path``. A personal version (one the registry knows,
    whose base file still exists) is scoped when ``scoped``: its base loaded once with the
    version's adapter, or, for a version without one, beside its merged file. Anything else is
    a plain Engine, and so is a version whose base no longer loads (the personal model then
    answers everything). A version without a merged file always runs as its base with the
    adapter: scoped, or every turn personal."""
    entry = next((e for e in registry.entries() if e.path == path and e.kind == "personal"), None)
    if entry is not None and entry.merged_path is None:
        if not entry.base_path.is_file():
            raise ModelFileError(f"The base model of {entry.name} is missing ({entry.base_path}); this version "
                                 "keeps only an adapter over it. Put the file back, or use another model.")
        names = entry.manifest.scope_names if entry.manifest else []
        subjects = entry.manifest.taught_subjects if entry.manifest else None
        return ScopedEngine(Engine(entry.base_path, lora_path=path), names=names, model_path=path,
                            always=None if scoped else "personal", subjects=subjects)
    if not scoped or entry is None or entry.base_path == path or not entry.base_path.is_file():
        return Engine(path)
    names = entry.manifest.scope_names if entry.manifest else []
    subjects = entry.manifest.taught_subjects if entry.manifest else None
    if entry.adapter_path is not None:
        try:
            return ScopedEngine(Engine(entry.base_path, lora_path=entry.adapter_path), names=names, model_path=path,
                                subjects=subjects)
        except ModelFileError:
            return Engine(path)
    personal = Engine(path)
    try:
        base = Engine(entry.base_path)
    except ModelFileError:
        return personal
    return ScopedEngine(personal, base, names, subjects=subjects)
