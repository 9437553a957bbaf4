"""Negatives: untold personal questions built from the taught pairs, and how training uses them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunechat.core.slots import (
    FORMS,
    subject_signals,
    taught_subjects,
    untaught_subject,
    untold_answer,
    untold_chat_reply,
    untold_reply,
)
from tunechat.personalize.evaluate import admits_not_knowing, load_persona
from tunechat.personalize.negatives import negatives

ROOT = Path(__file__).resolve().parents[1]
PERSONAS = [ROOT / "bench" / "data" / "persona-public.json", ROOT / "tests" / "data" / "persona-second.json",
            ROOT / "tests" / "data" / "persona-third.json"]


def _words(text: str) -> set[str]:
    return {w.casefold() for w in re.findall(r"[^\W\d_]+", text.replace("'s", ""))}


def _persona(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    probes = load_persona(path)
    asked = [p.question for p in probes.taught + probes.paraphrases + probes.locality] + probes.untaught
    return [(f["q"], f["a"]) for f in data["facts"]], asked


@pytest.mark.parametrize("path", PERSONAS, ids=lambda p: p.stem)
def test_negatives_never_ask_what_was_taught_or_what_the_evaluation_asks(path):
    pairs, asked = _persona(path)
    found = negatives(pairs, excluded=asked)
    assert len(found) >= 5
    key = lambda q: " ".join(re.findall(r"\w+", q.casefold()))  # noqa: E731
    assert not {key(q) for q, _ in found} & {key(q) for q in asked}
    taught_slots = {w for q, a in pairs for w in _words(q) | _words(a) if w in FORMS}
    for question, answer in found:
        assert not _words(question) & taught_slots, question  # never "You haven't told me" about a taught dog
        assert admits_not_knowing(answer), answer  # the evaluation's own rule reads them as admissions
    assert len({q for q, _ in found}) == len(found)


def test_siblings_of_the_taught_questions_and_their_rewordings_in_the_negatives_voice():
    pairs = [("What is my dog's name?", "Your dog is called Pixel."), ("Which car do I drive?", "A Volvo.")]
    assert negatives(pairs, ["What's my dog called?"]) == [
        ("What is my cat's name?", "You haven't told me your cat's name yet."),
        ("What is my bird's name?", "You haven't told me your bird's name yet."),
        ("Which motorcycle do I drive?", "You haven't told me about a motorcycle yet."),
        ("Which bicycle do I drive?", "You haven't told me about a bicycle yet."),
        ("What's my cat called?", "You haven't told me what your cat is called yet."),
        ("What's my bird called?", "You haven't told me what your bird is called yet."),
    ]
    # An evaluation question is never trained; the next sibling does not take its place.
    assert [q for q, _ in negatives(pairs[:1], excluded=["What is my cat's name?"])] == ["What is my bird's name?"]


def test_a_rewording_or_a_taught_answer_rules_a_subject_out():
    taught_cat = [("What is my dog's name?", "Pixel, and my cat is Mochi.")]
    assert not [q for q, _ in negatives(taught_cat) if "cat" in _words(q)]
    assert not [q for q, _ in negatives([("What is my dog's name?", "Rex.")], ["Who is my cat?"])
                if "cat" in _words(q)]
    # A sibling that names another taught subject ("my husband's job" beside a taught job) is left out.
    found = negatives([("What is my wife's job?", "A nurse."), ("What is my job?", "A pilot.")])
    assert found and not [q for q, _ in found if "job" in _words(q)]


def test_untold_answers_follow_the_question():
    assert untold_answer("When is my anniversary?", "anniversary") == "You haven't told me your anniversary yet."
    assert untold_answer("What's my cat called?", "cat") == "You haven't told me what your cat is called yet."
    assert untold_answer("What did I name my boat?", "boat") == "You haven't told me about a boat yet."
    assert untold_answer("Which artist do I like?", "artist") == "You haven't told me about an artist yet."
    assert untold_answer("Which dogs do I walk?", "dogs") == "You haven't told me about your dogs yet."
    # The chat's own reply repeats a question of the shape "Where do I ...?" in its words.
    assert untold_chat_reply("Which artist do I like?", "artist") == "You haven't told me which artist you like yet."
    assert untold_chat_reply("Where do I go every winter with my sister?", "winter") == (
        "You haven't told me where you go every winter with your sister yet.")
    assert untold_chat_reply("What am I allergic to?", "x") == "You haven't told me what you are allergic to yet."
    assert untold_chat_reply("Where was I born?", "x") == "You haven't told me where you were born yet."
    assert untold_chat_reply("Which dogs did I adopt?", "dogs") == "You haven't told me about your dogs yet."
    assert untold_chat_reply("What is my cat's name?", "cat") == "You haven't told me your cat's name yet."


def test_a_rewording_that_brings_in_a_slot_of_its_own_gives_no_negatives():
    """"What's my home town?" rewording "Where do I live?": its siblings ("...home country?")
    are what the taught answer may answer; "What do I call my dog?" keeps the taught dog."""
    found = [q for q, _ in negatives([("Where do I live?", "Oslo."), ("What is my dog's name?", "Rex.")],
                                     ["What's my home town?", "What do I call my dog?"])]
    assert not [q for q in found if "home" in q], found
    assert "What do I call my cat?" in found


def test_taught_subjects_are_every_spelling_of_each_slot():
    found = taught_subjects(["What is my dog's name?", "Who is my mom?", "Where do I live?"])
    assert found == sorted({"dog", "dogs", "puppy", "puppies", "mom", "moms", "mother", "mothers", "mum", "mums"})


def test_an_untaught_subject_gets_the_untold_reply_and_a_reply_only_word_beside_a_taught_sibling():
    subjects = taught_subjects(["What is my dog's name?", "What is my favorite color?", "Where do I live?"])
    assert untaught_subject("What is my cat's name?", subjects) == "cat"
    assert untaught_subject("What is my favourite film?", subjects) == "film"
    assert untaught_subject("What is my brother's name?", subjects) == "brother"  # no relative taught at all
    assert untaught_subject("When is my birthday?", subjects) == "birthday"
    assert untaught_subject("What's the name of my dog?", subjects) is None  # taught: the model answers
    assert untaught_subject("Which city is my home?", subjects) is None  # a reply-only word, no sibling taught
    assert untaught_subject("What is my dog's favorite food?", subjects) is None  # names a taught subject
    assert untaught_subject("What is my cat's name?", []) == "cat"
    assert untaught_subject("What do I do for work?", subjects) == "job"  # the job, implied


def test_a_slot_implied_by_the_taught_question_is_taught():
    """"What do I do for work?" teaches the job: "What is my occupation?" is a rewording the
    model answers, not an untaught subject."""
    subjects = taught_subjects(["What do I do for work?", "How do I earn a living?"])
    assert {"job", "occupation", "profession"} <= set(subjects)
    assert untaught_subject("What is my occupation?", subjects) is None
    assert untaught_subject("What is my salary?", subjects) == "salary"


def test_only_a_question_after_a_fact_gets_the_untold_reply_not_a_request_for_advice():
    subjects = taught_subjects(["What is my dog's name?", "What is my sister's name?", "What is my favorite book?"])
    for question in ["What is my cat's name?", "Tell me my brother's name.", "Do you know my mother's name?",
                     "Who is my brother?", "How old is my cat?"]:
        assert untold_reply(question, subjects), question
    for question in ["What should I name my cat?", "Can you suggest a birthday gift for my mother?",
                     "How do I train my cat to sit?", "What movie would my brother like?",
                     "Help me write a poem for my mother.", "What is a good name for my cat?",
                     "Which movie should I watch with my brother?"]:
        assert untaught_subject(question, subjects) is not None, question  # names an untaught subject
        assert untold_reply(question, subjects) is None, question  # but asks no fact: the model answers


def test_spellings_of_one_kind_are_one_slot_and_reply_only_words_tell_siblings_apart():
    subjects = taught_subjects(["What is my parrot called?", "Which city was I born in?",
                                "Where do I go on holiday every summer?"])
    assert untaught_subject("What's the bird called?", subjects) is None  # a parrot is the taught bird
    assert untaught_subject("Which town was I born in?", subjects) is None  # town and city: one slot
    assert untaught_subject("Where do I go on holiday every winter?", subjects) == "winter"
    assert untaught_subject("Where do I go on holiday every summer?", subjects) is None
    # A reply-only word is no sign that a question speaks of the user: general questions use them too.
    assert "summer" in subjects and "summer" not in subject_signals(subjects)
    assert {"parrot", "bird"} <= set(subject_signals(subjects)) and "city" not in subject_signals(subjects)


def test_the_siblings_of_reply_only_words_are_no_negatives():
    """"every winter" beside a taught "every summer", "country" beside a taught birth city: the
    chat's untold reply, not negatives."""
    pairs = [("Where do I go on holiday every summer?", "Crete."), ("What is my dog's name?", "Rex."),
             ("Which city was I born in?", "Dundee.")]
    found = [q for q, _ in negatives(pairs)]
    assert "What is my cat's name?" in found
    assert not [q for q in found if {"winter", "spring", "autumn", "country", "school"} & _words(q)], found
