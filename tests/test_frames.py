"""Taught and untold questions inside the ways people wrap a question (personalize/frames.py)."""

from __future__ import annotations

import random

from tunechat.personalize import frames


def test_every_frame_wraps_a_question_once_and_names_no_subject_of_its_own():
    from tunechat.core.slots import FORMS
    from tunechat.core.turns import words_of

    found = frames.frames()["en"]
    assert len(found) >= 20 and all(f.count("{q}") == 1 for f in found)
    assert len(set(found)) == len(found)
    assert not [f for f in found if set(words_of(f)) & set(FORMS)]  # no pet, relative, place, ...


def test_a_question_inside_a_frame_reads_as_one_message():
    assert frames.framed("Where do I live?", "hey, {q}") == "hey, where do I live?"
    assert frames.framed("Where do I live?", "My memory is terrible lately. {q}") == \
        "My memory is terrible lately. Where do I live?"
    assert frames.framed("Where do I live?", "{q} I can never remember.") == "Where do I live? I can never remember."
    assert frames.casual("What is my cat's name?") == "what is my cat's name"
    # Lowered only where it is a function word: not "I", not a name.
    assert frames.framed("I play what instrument?", "hey, {q}") == "hey, I play what instrument?"
    assert frames.framed("Maren is my granddaughter, right?", "hey, {q}") == "hey, Maren is my granddaughter, right?"


def test_the_forms_are_drawn_by_the_run_s_seed():
    one = frames.wrapped("What is my cat's name?", 3, random.Random("wrapped-0"))
    again = frames.wrapped("What is my cat's name?", 3, random.Random("wrapped-0"))
    assert one == again and len(one) == 3 and one[0] == "what is my cat's name"
    assert all("cat's name" in form for form in one)
    assert frames.wrapped("What is my cat's name?", 0, random.Random(0)) == []
    others = [frames.wrapped("What is my cat's name?", 3, random.Random(f"wrapped-{seed}")) for seed in range(1, 6)]
    assert any(o != one for o in others)  # another seed, other frames


def test_a_question_is_wrapped_only_in_its_own_language_and_never_as_itself():
    # English frames only: a Spanish or German question keeps its own wording alone.
    assert frames.wrapped("¿Cómo se llama mi perro?", 3, random.Random(0)) == []
    assert frames.wrapped("Wie heißt meine Schwester?", 3, random.Random(0)) == []
    typed = frames.wrapped("whats my cats name", 3, random.Random(0))
    assert "whats my cats name" not in typed and len(typed) == 2


def test_no_form_trained_is_a_question_the_evaluation_asks():
    from tunechat.personalize.paraphrase import normalize_question

    rng = random.Random("wrapped-0")
    drawn = frames.wrapped("Where do I live?", 3, random.Random("wrapped-0"))
    asked = {normalize_question(drawn[1])}
    kept = frames.forms_of("Where do I live?", 3, rng, asked)
    assert kept == [drawn[0], drawn[2]]
    # The casual form is the taught question itself to the evaluation: it stays.
    assert frames.forms_of("Where do I live?", 1, random.Random(0), {normalize_question("Where do I live?")}) == \
        ["where do i live"]


def test_a_run_trains_each_pair_in_its_own_words_first_then_rewordings_then_wrapped_forms():
    from tunechat.personalize.phases import wordings
    from tunechat.personalize.recipe import get_recipe

    recipe = get_recipe(None)  # the default: 3 wrapped forms a question, 2 a negative
    pairs = [("Where do I live?", "You live in Gdansk.")]
    untold = [("Where do I work?", "You haven't told me where you work yet.")]
    trained = wordings(pairs, {"Where do I live?": ["Which city is my home?"]}, untold, recipe, [])
    facts, negatives = trained.facts, trained.negatives
    assert [q for q, _ in facts[0][:2]] == ["Where do I live?", "Which city is my home?"]
    assert len(facts[0]) == 5 and {a for _, a in facts[0]} == {"You live in Gdansk."}
    assert trained.wrapped == [[q for q, _ in facts[0][2:]]] and trained.untold == untold
    assert len(negatives) == 3 and negatives[0] == untold[0] and "where do i work" in [q for q, _ in negatives]
    # A form the evaluation asks is never trained; none without wrapping.
    asked = [facts[0][3][0]]
    assert asked[0] not in [q for q, _ in wordings(pairs, {}, untold, recipe, asked).facts[0]]
    bare = wordings(pairs, {}, untold, recipe.with_(wrapped=0, wrapped_negatives=0), [])
    assert (bare.facts, bare.negatives, bare.wrapped) == ([[pairs[0]]], untold, [[]])
