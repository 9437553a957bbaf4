"""Which model answers a chat with a personal version: the base model with the version's
adapter switched per turn (one model in memory), or, for a version kept before adapters were,
its merged file beside its base.

A personal model answers the turns that speak of the user, and the untouched base model it
was trained from answers the rest word for word as before: training can only limit how much
a personal model's answers to everything else drift from the base model's (replay, KL); it
cannot make them equal (README, "Remember without forgetting"). Each turn's decision (who
answers, what that model sees, why) is ``tunechat.core.turns.decide``; this module runs it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Literal

from tunechat.core.chat_template import ChatMessage
from tunechat.core.engine import Engine, GenerationSettings
from tunechat.core.gguf_check import ModelFileError
from tunechat.core.scope_probe import ScopeProbe
from tunechat.core.store import StoreError
from tunechat.core.turns import (
    CONTEXT,
    AnsweredBy,
    Decision,
    Likelihood,
    Route,
    Taught,
    decide,
    gives_way,
    may_repeat_taught_answer,
    may_say_untold,
    read_enough,
    settle,
    without_untold,
)

# The word a streamed answer ends with while the model may still be writing it ("Bis" of "Biscuit").
_WORD_UNDER_WAY = re.compile(r"\w+$")
SETTING = "scope"  # store setting: "on" (default) or "off"
BASE_ANSWERED_NOTE = "(answered by the base model: {reason})"
# Who answers a chat's turns: the scope rule ("auto"), or one side for every turn.
Mode = Literal["auto", "personal", "base"]
MODES: tuple[Mode, ...] = ("auto", "personal", "base")


def chat_mode(store, chat_id: int) -> Mode:
    """Who answers the chat ``chat_id``'s turns (a column of the chat, deleted with it)."""
    try:
        value = store.get_chat(chat_id).mode
    except StoreError:  # deleted meanwhile (F2): a new chat starts on the rule
        return "auto"
    return next((mode for mode in MODES if mode == value), "auto")


def set_chat_mode(store, chat_id: int, mode: Mode) -> None:
    store.set_chat_mode(chat_id, mode)


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

    def __init__(self, personal: Engine, base: Engine | None = None, taught: Taught = Taught(),
                 model_path: Path | None = None, always: Route | None = None,
                 probe: ScopeProbe | None = None) -> None:
        if base is None and personal.lora_path is None:
            raise ValueError("A scoped engine needs an adapter over the base or a base model beside it.")
        self.personal = personal
        self.base = base
        self.taught = taught  # what the version was taught (turns.Taught.from_pairs)
        self.always = always  # every turn to this side (scoping off on a version without a merged file)
        self.last: Decision | None = None  # the last turn's decision, for the UI
        self.base_likelihood = remembered_base_likelihood(personal, base)  # for turns.settle
        # The version's scope probe reads the base model's representation of a message.
        self.about_user = None if probe is None else remembered_about_user(probe, base or personal)
        self._model_path = model_path or personal.model_path  # the version the chat names

    @property
    def model_path(self) -> Path:
        return self._model_path

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (the personal model and its base share one tokenizer)."""
        return self.personal.count_tokens(text)

    def decide(self, messages: Sequence[ChatMessage], force: Route | None = None) -> Decision:
        """This turn's decision (``tunechat.core.turns.decide``); ``force``: this side answers."""
        # Scoping off: the personal model answers everything, and sees the chat as one model would.
        return decide(messages, self.taught, force or self.always, context="whole" if self.always else CONTEXT,
                      about_user=self.about_user)

    def engine_for(self, route: Route) -> Engine:
        """The engine that answers as ``route``, set up for it."""
        if self.base is not None:
            return self.personal if route == "personal" else self.base
        self.personal.set_adapter_scale(1.0 if route == "personal" else 0.0)
        return self.personal

    def stream(self, messages: Sequence[ChatMessage], settings: GenerationSettings = GenerationSettings(),
               stop: threading.Event | None = None, force: Route | None = None) -> Iterator[str]:
        """The answer to the conversation's last user message, as ``decide`` says: the chat's
        untold reply, or the deciding model's answer to what the decision lets it see."""
        self.last = decision = self.decide(messages, force)
        if decision.untold is not None:
            return iter([decision.untold])
        tokens = self.engine_for(decision.route).stream(decision.context, settings, stop)
        if decision.route != "personal" or force is not None or self.always is not None or not self.taught.pairs:
            return tokens
        return self._settled(tokens, decision, settings, stop)

    def _settled(self, tokens: Generator[str, None, None], decision: Decision, settings: GenerationSettings,
                 stop: threading.Event | None) -> Iterator[str]:
        """The personal model's answer, held back while it may still turn out a taught answer
        word for word or the model saying it was not told, or has brought nothing taught in its
        first words; then as ``turns.settle`` says: the answer, the chat's reply, or the base
        model's answer. No model is asked while the personal model's answer goes on: it holds
        the engine (one llama.cpp context, one lock)."""
        held = ""
        question = decision.context[-1]["content"]
        for delta in tokens:
            held += delta
            read = _WORD_UNDER_WAY.sub("", held).strip()  # a word still being written is not read yet
            if may_repeat_taught_answer(read, self.taught) or may_say_untold(read):
                continue
            set_aside = gives_way(question, read, self.taught, working(self.about_user))
            if set_aside and not read_enough(read):
                continue  # nothing taught yet, but too few words to say so
            if not set_aside:
                yield held  # it stands
                yield from tokens
                return
            tokens.close()  # set aside: the engine is free for the probe and the base model
            break
        yield from self._as_settled(held.strip(), decision, settings, stop)

    def _as_settled(self, answer: str, decision: Decision, settings: GenerationSettings,
                    stop: threading.Event | None) -> Iterator[str]:
        """The personal model's ``answer`` (whole, or the first words of one set aside), or what
        replaces it (not once the user stopped the answer: what came stays)."""
        if stop is not None and stop.is_set():
            yield answer
            return
        settled = settle(decision, answer, self.taught, self.base_likelihood, working(self.about_user))
        if settled is decision:
            yield answer
            return
        self.last = settled
        if settled.said is not None:
            yield settled.said
        else:
            yield from self.engine_for(settled.route).stream(settled.context, settings, stop)

    def complete(self, messages: Sequence[ChatMessage], settings: GenerationSettings = GenerationSettings(),
                 force: Route | None = None) -> str:
        return "".join(self.stream(messages, settings, force=force)).strip()

    @property
    def n_threads(self) -> int:
        return self.personal.n_threads

    def use_threads(self, n_threads: int) -> None:
        """``Engine.use_threads`` for every model it holds."""
        self.personal.use_threads(n_threads)
        if self.base is not None:
            self.base.use_threads(n_threads)

    def close(self) -> None:
        self.personal.close()
        if self.base is not None:
            self.base.close()


ChatEngine = Engine | ScopedEngine


def remembered_base_likelihood(engine: Engine, base: Engine | None = None) -> Likelihood:
    """``Engine.answer_likelihood`` under the base model, remembered (a taught answer after its
    own question is asked again on every turn that repeats it): ``base`` when it is loaded
    apart, else ``engine`` with its adapter off for the reading and its scale put back."""
    remembered: dict[tuple[str, str], float] = {}

    def likelihood(question: str, answer: str) -> float:
        if (question, answer) not in remembered:
            if base is not None:
                remembered[question, answer] = base.answer_likelihood(question, answer)
            else:
                scale = engine.adapter_scale
                engine.set_adapter_scale(0.0)
                try:
                    remembered[question, answer] = engine.answer_likelihood(question, answer)
                finally:
                    engine.set_adapter_scale(scale)
        return remembered[question, answer]

    return likelihood


class RememberedProbe:
    """``probe`` over ``engine``'s base-model embeddings, remembered per message (a chain asks
    about its earlier messages again on every turn). Should reading a message fail (llama.cpp
    cannot make its embedding context), the probe is left out from then on (``failed``) and the
    words alone decide: a turn is never lost to it."""

    def __init__(self, probe: ScopeProbe, engine: Engine) -> None:
        self.probe, self.engine = probe, engine
        self.failed = False
        self._remembered: dict[str, bool] = {}

    def __call__(self, text: str) -> bool:
        if self.failed:
            return False
        if text not in self._remembered:
            try:
                self._remembered[text] = self.probe.about_user(self.engine.embed([text])[0])
            except (RuntimeError, ValueError, OSError):
                self.failed = True
                return False
        return self._remembered[text]


def remembered_about_user(probe: ScopeProbe, engine: Engine) -> RememberedProbe | None:
    """The version's probe as the chat reads it (``RememberedProbe``); None when the probe reads
    embeddings of another width than this base's (fitted on another base)."""
    return RememberedProbe(probe, engine) if probe.width == engine.embedding_width else None


def working(about_user: RememberedProbe | None) -> RememberedProbe | None:
    """The probe while it reads messages; None once it has failed (the words alone decide)."""
    return None if about_user is None or about_user.failed else about_user


def stream_answer(engine: ChatEngine, messages: Sequence[ChatMessage], settings: GenerationSettings,
                  stop: threading.Event | None = None, force: Route | None = None) -> Iterator[str]:
    """A chat's next answer from either kind of engine: a scoped one decides the turn (``force``:
    this side answers); a plain model sees the chat but the chat's own untold replies."""
    if isinstance(engine, ScopedEngine):
        return engine.stream(messages, settings, stop, force=force)
    return engine.stream(without_untold(messages), settings, stop)


def answered_by(engine: ChatEngine) -> AnsweredBy | None:
    """Who answered ``engine``'s last turn; None when there is only one model."""
    if not isinstance(engine, ScopedEngine) or engine.last is None:
        return None
    return engine.last.answered_by


def answer_reason(engine: ChatEngine) -> str | None:
    """Why ``engine``'s last turn went where it did, in a few words; None with one model."""
    if not isinstance(engine, ScopedEngine) or engine.last is None:
        return None
    return engine.last.reason


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
        return ScopedEngine(Engine(entry.base_path, lora_path=path), taught=taught_by(entry), model_path=path,
                            always=None if scoped else "personal", probe=probe_of(entry))
    if not scoped or entry is None or entry.base_path == path or not entry.base_path.is_file():
        return Engine(path)
    if entry.adapter_path is not None:
        try:
            return ScopedEngine(Engine(entry.base_path, lora_path=entry.adapter_path), taught=taught_by(entry),
                                model_path=path, probe=probe_of(entry))
        except ModelFileError:
            return Engine(path)
    personal = Engine(path)
    try:
        base = Engine(entry.base_path)
    except ModelFileError:
        return personal
    return ScopedEngine(personal, base, taught=taught_by(entry), probe=probe_of(entry))


def probe_of(entry) -> ScopeProbe | None:
    """The scope probe kept with the version ``entry``; None for a version kept before probes
    were, or one whose file does not read (the words alone then decide)."""
    return read_probe(entry.probe_path)


def read_probe(path: Path | None) -> ScopeProbe | None:
    """The scope probe at ``path``; None when there is none or it does not read."""
    from safetensors import SafetensorError

    if path is None:
        return None
    try:
        return ScopeProbe.load(path)
    except (OSError, KeyError, ValueError, SafetensorError):  # missing, unreadable or damaged
        return None


def taught_by(entry) -> Taught:
    """What the version ``entry`` (a registry.ModelEntry) was taught: derived from the pairs it
    learned, kept beside it; a version kept before that has only its manifest's words."""
    pairs = entry.learned_pairs()
    if pairs is not None:
        return Taught.from_pairs(pairs)
    manifest = entry.manifest
    if manifest is None:
        return Taught()
    subjects = tuple(manifest.taught_subjects) if manifest.taught_subjects is not None else None
    return Taught(tuple(manifest.scope_names), subjects)
