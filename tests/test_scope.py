"""Scoping: the personal model answers what speaks of the user, the base model the rest."""

from __future__ import annotations

import json

import pytest

from tests.conftest import PUBLIC_PERSONA, ROOT, SECOND_PERSONA
from tests.helpers import add_version
from tunechat.core.scope import ScopedEngine, open_engine
from tunechat.core.turns import Taught, speaks_of_user, taught_names, turn_speaks_of_user

# The public persona sits beside the repository (../shared) on the team's machines, not in a clone.
PERSONAS = [pytest.param(PUBLIC_PERSONA, marks=pytest.mark.skipif(not PUBLIC_PERSONA.is_file(), reason="no ../shared")),
            SECOND_PERSONA, ROOT / "tests" / "data" / "persona-third.json"]


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.stem)
def test_every_taught_and_reworded_question_speaks_of_the_user_and_no_general_one_does(persona):
    data = json.loads(persona.read_text())
    builtin = json.loads((ROOT / "personalize" / "data" / "locality_probes.json").read_text())["probes"]
    names = taught_names(f["a"] for f in data["facts"])
    assert [q for q in [f["q"] for f in data["facts"]] + [p["q"] for p in data["paraphrases"]]
            if not speaks_of_user(q, names)] == []
    assert [q for q in [*data["locality"], *builtin] if speaks_of_user(q, names)] == []


@pytest.mark.parametrize("text, expected", [
    ("Tell me the capital of France.", False),  # "me" only as the object of a request
    ("Can you give me a yellow fruit?", False),
    ("Tell me my name.", True),
    ("Do you know what I'm called?", True),
    ("Do you know what I’m called?", True),  # typographic apostrophe
    ("What do you know about me?", True),
    ("What is the largest planet in our solar system?", False),  # generic "our"
    ("I wonder how many days a week has.", True),  # errs toward the personal model
    ("What is the opposite of hot?", False),
    ("MY DOG'S NAME?", True),
    ("Was kostet ein Kaffee im Bahnhof?", False),  # German "im" ("in dem"), no English "I'm"
])
def test_first_person_rule(text, expected):
    assert speaks_of_user(text) is expected


def test_a_taught_name_sends_a_question_to_the_personal_model():
    names = taught_names(["Your sister is named Ingrid. She lives in Oslo.", "Your name is Ada Quill."])
    assert names == ["Ada", "Ingrid", "Oslo", "Quill"]  # never "She" or "Your": sentence starts
    assert speaks_of_user("Who is Ingrid?", names) and speaks_of_user("what's the weather in oslo", names)
    assert not speaks_of_user("Who is Ingrid?") and not speaks_of_user("Who wrote Hamlet?", names)


def test_a_follow_up_that_points_back_goes_where_its_question_went():
    def turns(*questions):
        return [m for q in questions
                for m in ({"role": "user", "content": q}, {"role": "assistant", "content": "…"})][:-1]

    assert turn_speaks_of_user(turns("What is my dog's name?", "How old is he?", "And what does he eat?"))
    assert not turn_speaks_of_user(turns("What is my dog's name?", "What is the capital of France?"))
    assert not turn_speaks_of_user(turns("What is the capital of France?", "How big is it?"))
    # The chain breaks at a message that neither speaks of you nor points back.
    assert not turn_speaks_of_user(turns("What is my dog's name?", "Name a fruit.", "Is it sweet?"))
    assert not turn_speaks_of_user([])


def test_each_turn_goes_to_the_model_its_question_calls_for(engine, base_model):
    from tunechat.core.engine import Engine, GenerationSettings

    other = Engine(base_model)
    scoped = ScopedEngine(personal=engine, base=other)
    settings = GenerationSettings(max_tokens=12)
    try:
        general = [{"role": "user", "content": "What is my name?"}, {"role": "assistant", "content": "Ada."},
                   {"role": "user", "content": "What is the capital of France?"}]
        assert scoped.decide(general).route == "base" and scoped.engine_for("base") is other
        # A self-contained question is asked alone: the personal answer before it is not shown.
        assert scoped.complete(general, settings) == other.complete(general[-1:], settings)
        assert scoped.last.route == "base"
        personal = general[:1]
        assert scoped.decide(personal).route == "personal" and scoped.engine_for("personal") is engine
        assert scoped.complete(personal, settings) == engine.complete(personal, settings)
    finally:
        other.close()


def test_only_a_personal_version_whose_base_exists_is_scoped(store, base_model):
    from tunechat.core.engine import Engine
    from tunechat.core.registry import Registry

    model = add_version(base_model, scope_names=["Ada"])  # any GGUF will do: no training needed to route
    registry = Registry(store)

    scoped = open_engine(model, registry, scoped=True)
    try:
        assert isinstance(scoped, ScopedEngine) and scoped.taught.names == ("Ada",)
        assert scoped.personal.model_path == model and scoped.base.model_path == base_model
    finally:
        scoped.close()
    for engine in (open_engine(model, registry, scoped=False),  # scope off
                   open_engine(base_model, registry, scoped=True)):  # not a personal version
        assert type(engine) is Engine
        engine.close()
    manifest = json.loads((model.parent / "manifest.json").read_text())
    (model.parent / "manifest.json").write_text(json.dumps({**manifest, "base_path": str(model.parent / "gone.gguf")}))
    plain = open_engine(model, registry, scoped=True)  # base deleted: the version alone
    assert type(plain) is Engine and plain.model_path == model
    plain.close()
    broken = model.parent / "broken-base.gguf"
    broken.write_bytes(base_model.read_bytes()[:4096])  # a truncated base file
    (model.parent / "manifest.json").write_text(json.dumps({**manifest, "base_path": str(broken)}))
    plain = open_engine(model, registry, scoped=True)  # a base that no longer loads: the version alone
    assert type(plain) is Engine and plain.model_path == model
    plain.close()


def test_one_model_answers_each_turn_as_that_model_alone_would(base_model, tmp_path):
    """The scoped chat runs the base with the version's adapter, its scale set per turn:
    personal and base turns alternate, and each answer is byte for byte the answer of that
    model loaded on its own."""
    from tests.helpers import random_lora_gguf
    from tunechat.core.engine import Engine, GenerationSettings

    lora = random_lora_gguf(base_model, tmp_path / "adapter.gguf", scale=0.12)
    scoped = ScopedEngine(Engine(base_model, lora_path=lora), taught=Taught(("Ada",)))
    settings = GenerationSettings(max_tokens=24)
    chat = [{"role": "user", "content": "What is my name?"}]
    turns = ["What is the capital of Japan?", "Who is Ada?", "Name a fruit.", "What is my favourite colour?",
             "How long is it?"]
    answers, routes, contexts = [], [], []
    for question in turns + turns[:2]:
        chat = [*chat, {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": question}]
        answers.append(scoped.complete(chat, settings))
        routes.append(scoped.last.route)
        contexts.append(scoped.last.context)
    scoped.close()
    assert routes == ["base", "personal", "base", "personal", "personal", "base", "personal"]
    # A self-contained question is asked alone; a follow-up sees the exchange it points back to.
    assert contexts[2] == [{"role": "user", "content": "Name a fruit."}]
    assert contexts[4] == [{"role": "user", "content": "What is my favourite colour?"},
                           {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "How long is it?"}]
    alone = {"base": Engine(base_model), "personal": Engine(base_model, lora_path=lora)}
    differ = 0
    for route, answer, context in zip(routes, answers, contexts):
        fresh = Engine(base_model, lora_path=lora if route == "personal" else None)
        assert answer == fresh.complete(context, settings) == alone[route].complete(context, settings), context
        fresh.close()
        differ += alone["base"].complete(context, settings) != alone["personal"].complete(context, settings)
    assert differ  # the adapter changes answers, so the comparison above means something
    for engine in alone.values():
        engine.close()


def test_a_forced_side_answers_whatever_the_rule_says(base_model, tmp_path):
    from tests.helpers import random_lora_gguf
    from tunechat.core.engine import Engine, GenerationSettings

    lora = random_lora_gguf(base_model, tmp_path / "adapter.gguf", scale=0.12)
    scoped = ScopedEngine(Engine(base_model, lora_path=lora))
    general = [{"role": "user", "content": "What is the capital of Japan?"}]
    settings = GenerationSettings(max_tokens=16)
    try:
        base_answer = scoped.complete(general, settings)
        assert scoped.last.route == "base"
        personal_answer = scoped.complete(general, settings, force="personal")
        assert scoped.last.route == "personal" and personal_answer != base_answer
        assert scoped.complete(general, settings) == base_answer
    finally:
        scoped.close()


def test_a_question_about_an_untaught_subject_gets_the_untold_reply(base_model, tmp_path):
    """With the dog taught, "What is my cat's name?" is answered that it was not told, not by
    the model (which would give the dog's name), and so is "When is my birthday?"; the taught
    subject, a general question, a request for advice and a forced side are answered by the
    models as before, and so is everything by a version that does not say what it was taught."""
    from tests.helpers import random_lora_gguf
    from tunechat.core.engine import Engine, GenerationSettings

    lora = random_lora_gguf(base_model, tmp_path / "adapter.gguf", scale=0.12)
    taught = Taught.from_pairs([("What is my dog's name?", "Rex.")])
    scoped = ScopedEngine(Engine(base_model, lora_path=lora), taught=taught)
    alone = Engine(base_model, lora_path=lora)
    settings = GenerationSettings(max_tokens=16)
    ask = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    try:
        assert scoped.complete(ask("What is my cat's name?"), settings) == "You haven't told me your cat's name yet."
        assert scoped.last.route == "personal" and scoped.last.answered_by == "untold"
        streamed = "".join(scoped.stream(ask("Which hamster do I have?"), settings))
        assert streamed == "You haven't told me which hamster you have yet." and scoped.last.answered_by == "untold"
        for question in ("What is my dog's name?", "What is the capital of Japan?"):
            answer = scoped.complete(ask(question), settings)
            assert scoped.last.untold is None and "told me" not in answer
        assert scoped.complete(ask("When is my birthday?"), settings) == "You haven't told me your birthday yet."
        advice = scoped.complete(ask("What should I name my cat?"), settings)
        assert advice == alone.complete(ask("What should I name my cat?"), settings) and scoped.last.untold is None
        forced = scoped.complete(ask("What is my cat's name?"), settings, force="personal")
        assert forced == alone.complete(ask("What is my cat's name?"), settings) and scoped.last.untold is None
    finally:
        scoped.close()
        alone.close()
    unknown = ScopedEngine(Engine(base_model, lora_path=lora), taught=Taught())  # a version that does not say
    try:
        unknown.complete(ask("What is my cat's name?"), settings)
        assert unknown.last.route == "personal" and unknown.last.untold is None
    finally:
        unknown.close()


SWIM = ("What time do I go swimming?", "You go swimming at 6:10 in the morning.")


@pytest.mark.parametrize("question, borrowed", [
    ("Which team do I cheer for?", True), ("What is my blood type?", True),
    ("When do I swim?", False), ("At what time do I go for a swim?", False), ("what time do I go swimming", False),
])
def test_a_taught_answer_to_a_question_it_does_not_fit_is_borrowed(base_model, question, borrowed):
    """The base model's own likelihoods tell a rewording (the taught answer still fits it) from
    another question (it fits far less: 1.4-1.7 nats a token here, rewordings 0.6 or less)."""
    from tunechat.core.engine import Engine
    from tunechat.core.turns import borrowed_from

    engine = Engine(base_model)
    try:
        found = borrowed_from(question, SWIM[1] + " ", Taught.from_pairs([SWIM]), engine.answer_likelihood)
    finally:
        engine.close()
    assert found == (SWIM[0] if borrowed else None)


def test_a_borrowed_personal_answer_becomes_the_untold_reply_and_any_other_streams_as_it_is(base_model, tmp_path,
                                                                                             monkeypatch):
    """The personal answer is held while it may still be a taught answer word for word. Here the
    personal model's own answer is taught for another question: under the shipped threshold it
    still fits that question (it comes out as the model wrote it); with every repeat counted as
    borrowed, the chat says it was not told, names why, and the next turn streams again."""
    from tests.helpers import random_lora_gguf
    from tunechat.core import turns
    from tunechat.core.engine import Engine, GenerationSettings

    lora = random_lora_gguf(base_model, tmp_path / "adapter.gguf", scale=0.001)
    settings = GenerationSettings(max_tokens=16, temperature=0.0)
    asked = [{"role": "user", "content": "Which team do I cheer for?"}]
    engine = Engine(base_model, lora_path=lora)
    try:
        unrelated = Taught.from_pairs([("Where was I born?", "Paris.")])
        own = ScopedEngine(engine, taught=unrelated).complete(asked, settings)
        taught = Taught.from_pairs([("Which team do I support?", own)])
        scoped = ScopedEngine(engine, taught=taught)
        assert scoped.complete(asked, settings) == own and scoped.last.answered_by == "personal"
        monkeypatch.setattr(turns, "BORROWED_DROP", -100.0)
        assert scoped.complete(asked, settings) == turns.UNTOLD_REPLY
        assert scoped.last.answered_by == "untold" and "Which team do I support?" in scoped.last.reason
        other = [{"role": "user", "content": "What do I like to eat?"}]
        assert scoped.complete(other, settings) == engine.complete(other, settings)
        assert scoped.last.answered_by == "personal"
    finally:
        engine.close()


def test_a_versions_scope_probe_is_read_with_it_and_a_damaged_one_leaves_the_words(home, base_model):
    """The chat reads the probe kept with a version; a probe file that does not read, or one
    fitted on another base, is left out (the words alone decide) instead of refusing the version."""
    import numpy as np

    from tunechat.core.registry import PROBE_FILE, Registry
    from tunechat.core.scope_probe import ScopeProbe
    from tunechat.core.store import Store

    model = add_version(base_model)
    registry = Registry(Store())
    width = 576
    every_message = ScopeProbe(np.zeros(width), np.ones(width), np.r_[np.zeros(width), 1.0], threshold=0.5)
    every_message.save(model.parent / PROBE_FILE)
    scoped = open_engine(model, registry, scoped=True)
    try:
        assert isinstance(scoped, ScopedEngine) and scoped.about_user is not None
        assert scoped.about_user("anything at all")  # bias 1 > threshold 0.5: every message is the user's
        assert scoped.decide([{"role": "user", "content": "Who wrote Hamlet?"}]).route == "personal"
    finally:
        scoped.close()
    # A probe fitted on another base (embeddings of another width) is left out.
    ScopeProbe(np.zeros(8), np.ones(8), np.r_[np.zeros(8), 1.0], threshold=0.5).save(model.parent / PROBE_FILE)
    scoped = open_engine(model, registry, scoped=True)
    try:
        assert scoped.about_user is None
    finally:
        scoped.close()
    (model.parent / PROBE_FILE).write_bytes(b"not a safetensors file")
    scoped = open_engine(model, registry, scoped=True)
    try:
        assert scoped.about_user is None
        assert scoped.decide([{"role": "user", "content": "Who wrote Hamlet?"}]).route == "base"
    finally:
        scoped.close()


def test_embeddings_are_the_base_models_whatever_the_adapters_scale(base_model, tmp_path):
    import numpy as np

    from tests.helpers import random_lora_gguf
    from tunechat.core.engine import Engine

    lora = random_lora_gguf(base_model, tmp_path / "adapter.gguf", scale=0.12)
    adapted, plain = Engine(base_model, lora_path=lora), Engine(base_model)
    try:
        texts = ["What is my dog called?", "Who wrote Hamlet?"]
        assert adapted.adapter_scale == 1.0
        assert np.allclose(adapted.embed(texts), plain.embed(texts), atol=1e-5)
        question = [{"role": "user", "content": "Who wrote Hamlet?"}]
        assert adapted.complete(question) != plain.complete(question)  # the adapter does change answers
    finally:
        adapted.close()
        plain.close()


def test_a_personal_answer_that_brings_nothing_taught_gives_way_in_the_chat(base_model, tmp_path):
    """With a probe, a personal answer is held until it brings something taught. One that does
    not is the chat's "not told" for a question the probe reads as the user's, and the base
    model's own answer for any other; one that brings a taught word is the personal model's
    answer as it wrote it."""
    import numpy as np

    from tests.helpers import random_lora_gguf
    from tunechat.core.engine import Engine, GenerationSettings
    from tunechat.core.scope_probe import ScopeProbe
    from tunechat.core.turns import _TOKEN, FUNCTION_WORDS, GROUNDING_WORDS, NOTHING_TAUGHT_REASON, UNTOLD_REPLY

    def probe(bias: float) -> ScopeProbe:  # reads every message as the user's (bias 1) or none (bias -1)
        return ScopeProbe(np.zeros(576), np.ones(576), np.r_[np.zeros(576), bias], threshold=0.0)

    lora = random_lora_gguf(base_model, tmp_path / "adapter.gguf", scale=0.04)  # long answers, not the base's
    settings = GenerationSettings(max_tokens=64, temperature=0.0)
    asked = [{"role": "user", "content": "What is my blood type?"}]
    taught = Taught.from_pairs([("What is my dog's name?", "Your dog is called Biscuit.")])
    personal, base = Engine(base_model, lora_path=lora), Engine(base_model)
    try:
        own = personal.complete(asked, settings)
        assert "biscuit" not in own.casefold()  # the answer brings nothing taught
        # ... and goes on past the words read: it is set aside while the model still writes it.
        assert len(_TOKEN.findall(own)) > GROUNDING_WORDS
        mine = ScopedEngine(personal, taught=taught, probe=probe(1.0))
        assert mine.complete(asked, settings) == UNTOLD_REPLY and mine.last.answered_by == "untold"
        anyone = ScopedEngine(personal, taught=taught, probe=probe(-1.0))
        assert anyone.complete(asked, settings) == base.complete(asked, settings) != own
        assert anyone.last.answered_by == "base" and anyone.last.reason == NOTHING_TAUGHT_REASON
        # Taught a word of its own answer, the personal model's answer stands, streamed on.
        asked_words = {w.casefold() for w in _TOKEN.findall("What is my blood type? What is my dog's name?")}
        word = next(w for w in _TOKEN.findall(own)[:8] if w.casefold() not in FUNCTION_WORDS | asked_words)
        knows = ScopedEngine(personal, taught=Taught.from_pairs([("What is my dog's name?", word)]), probe=probe(1.0))
        assert knows.taught.knowledge == {word.casefold()}
        assert "".join(knows.stream(asked, settings)) == own and knows.last.answered_by == "personal"
        # A word still being written is not read: "1" of "18" is not the taught "1".
        flat = Taught.from_pairs([("What is my flat number?", "You live at flat 1.")])
        numbers = ScopedEngine(personal, taught=flat, probe=probe(1.0))
        pieces = ["Your", " dog", " is", " 1", "8", " years", " old."]
        decision = numbers.decide([{"role": "user", "content": "How old is my dog?"}])
        assert list(numbers._settled((p for p in pieces), decision, settings, None)) == [UNTOLD_REPLY]
        # A probe that failed to read a message is no probe: the answer stands.
        numbers.about_user.failed = True
        assert "".join(numbers._settled((p for p in pieces), decision, settings, None)) == "".join(pieces)
    finally:
        personal.close()
        base.close()


def test_a_taught_question_the_model_says_it_was_not_told_gets_its_taught_answer(base_model, tmp_path):
    """The chat holds "You haven't told me ..." whole, whatever pieces it streams in, and says
    the taught answer instead when the question is a taught one in its own words; to any other
    question the model's words stand."""
    from tests.helpers import random_lora_gguf
    from tunechat.core.engine import Engine, GenerationSettings
    from tunechat.core.turns import RECALLED_REASON

    lora = random_lora_gguf(base_model, tmp_path / "adapter.gguf", scale=0.12)
    taught = Taught.from_pairs([("What is my dog's name?", "Your dog is called Biscuit.")])
    scoped = ScopedEngine(Engine(base_model, lora_path=lora), taught=taught)
    refusal = ["You", " haven", "'t", " told me your", " dog's name yet."]
    try:
        for question, said in [("what is my dog's name", "Your dog is called Biscuit."),
                               ("What is my dog's age?", "".join(refusal))]:
            decision = scoped.decide([{"role": "user", "content": question}])
            assert decision.route == "personal" and decision.untold is None
            scoped.last = decision
            streamed = list(scoped._settled((piece for piece in refusal), decision, GenerationSettings(), None))
            assert streamed == [said], question
            recalled = said == "Your dog is called Biscuit."
            assert scoped.last.recalled == (said if recalled else None)
            assert (scoped.last.reason == RECALLED_REASON) is recalled
    finally:
        scoped.close()
