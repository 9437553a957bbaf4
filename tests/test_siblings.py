"""Sibling questions: the untaught questions generated from a user's taught pairs."""

from __future__ import annotations

import json

from tests.conftest import PUBLIC_PERSONA, SECOND_PERSONA
from tunechat.core.turns import speaks_of_user
from tunechat.personalize.siblings import sibling_questions, swaps

THIRD_PERSONA = SECOND_PERSONA.parent / "persona-third.json"


def _persona(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    return [f["q"] for f in data["facts"]], [p["q"] for p in data["paraphrases"]]


def test_a_slot_word_is_swapped_for_its_nearest_siblings():
    assert swaps("What is my dog's name?")[:3] == ["What is my cat's name?", "What is my bird's name?",
                                                     "What is my fish's name?"]
    assert swaps("What is my daughter's name?")[0] == "What is my son's name?"
    assert swaps("What is my favourite movie?")[0] == "What is my favourite color?"


def test_plural_possessive_and_capitalization_are_kept():
    assert swaps("How old are my dogs?")[0] == "How old are my cats?"
    assert swaps("What are my wives' names?")[0] == "What are my husbands' names?"
    assert swaps("Dog's name, please: mine?")[0] == "Cat's name, please: mine?"
    assert swaps("WHAT IS MY DOG'S NAME?")[0] == "WHAT IS MY CAT'S NAME?"
    assert swaps("What is my dog’s name?")[0] == "What is my cat’s name?"  # a typographic apostrophe


def test_no_slot_word_means_no_sibling():
    assert swaps("What is my name?") == [] and swaps("Where do I live?") == []
    assert sibling_questions(["What is my name?", "Where do I live?"]) == []
    assert swaps("Is a dogma a dog?")[0] == "Is a dogma a cat?"  # whole words only
    assert sibling_questions(["What is a dog?"]) == []  # not about the user


def test_siblings_never_repeat_a_taught_question_or_a_rewording():
    taught = ["What is my dog's name?", "What is my cat's name?"]
    found = sibling_questions(taught, rewordings=["what is my BIRD's name"])
    assert not {q.casefold() for q in found} & {"what is my dog's name?", "what is my cat's name?",
                                                 "what is my bird's name?"}
    assert found[:2] == ["What is my fish's name?", "What is my hamster's name?"]  # dog's first, then cat's
    assert len(found) == len(set(found))


def test_siblings_are_deterministic_and_capped():
    questions, rewordings = _persona(PUBLIC_PERSONA)
    found = sibling_questions(questions, rewordings)
    assert found == sibling_questions(questions, rewordings)
    assert len(found) == 12
    assert sibling_questions(questions, rewordings, per_pair=1, total=100) == [
        "What is my favorite book?", "What is my cat's name?", "What is my favorite drink?",
        "When is my anniversary?", "What hobby am I learning?", "What motorcycle do I drive?",
        "What is my brother's name?"]


def test_the_personas_siblings_are_untaught_personal_questions():
    for path in (PUBLIC_PERSONA, SECOND_PERSONA, THIRD_PERSONA):
        questions, rewordings = _persona(path)
        found = sibling_questions(questions, rewordings)
        assert 1 <= len(found) <= 12
        assert all(speaks_of_user(q) for q in found)
        assert not {q.casefold() for q in found} & {q.casefold() for q in questions + rewordings}
    second = sibling_questions(*_persona(SECOND_PERSONA))
    assert "What is my husband's name?" in second and "What is my bird's name?" in second
