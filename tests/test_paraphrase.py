"""Filters on the base model's rewordings of taught questions (personalize/paraphrase.py)."""

from __future__ import annotations

from tunechat.personalize.paraphrase import clean, generate, keep_distinct, to_first_person, without_questions

Q, A = "What is my favorite drink?", "Your favorite drink is mint tea."


def test_second_person_becomes_first_person():
    assert to_first_person("What is your favorite drink?") == "What is my favorite drink?"
    assert to_first_person("Which drink do you like best?") == "Which drink do I like best?"
    assert clean("Which beverage do you prefer?", Q, A) == "Which beverage do I prefer?"


def test_rejects_what_is_not_a_rewording():
    assert clean("What is my favorite drink?", Q, A) is None  # the question itself
    assert clean("Your favorite drink is mint tea.", Q, A) is None  # not a question
    assert clean("Do I like mint tea?", Q, A) is None  # gives the answer away
    assert clean("What does Emily drink?", Q, A) is None  # a name the pair never mentions
    assert clean("What does my brother drink?", Q, A) is None  # a person the pair never mentions
    assert clean("How do I make a drink?", Q, A) is None  # a procedure, not the fact
    assert clean("Drink?", Q, A) is None  # too short to be a question about the fact


def test_keep_distinct_never_trains_two_facts_on_one_wording():
    pairs = [("What is my job?", "You are a baker."), ("What is my name?", "Your name is Bruno."),
             ("What sport do I play?", "You play badminton.")]
    found = {
        "What is my job?": ["What is my name?", "What do I do for a living?", "Which sport do I play at work?"],
        "What is my name?": ["What am I called?"],
    }
    kept = keep_distinct(found, pairs)
    assert kept["What is my job?"] == ["What do I do for a living?"]
    assert kept["What is my name?"] == ["What am I called?"]
    assert kept["What sport do I play?"] == []
    # One wording written for two facts (the third persona's "Where do I live?", for a wake-up
    # time and a summer holiday) is trained for neither.
    pairs = [("What time do I wake up?", "At 5:30."), ("Where do I go every summer?", "Crete.")]
    kept = keep_distinct({"What time do I wake up?": ["Where do I live?", "When does my alarm ring?"],
                          "Where do I go every summer?": ["where do I live", "Where do I spend summers?"]}, pairs)
    assert kept == {"What time do I wake up?": ["When does my alarm ring?"],
                    "Where do I go every summer?": ["Where do I spend summers?"]}


def test_generate_dedupes_and_uses_every_seed():
    seen_seeds = []

    def complete(prompt: str, seeds) -> list[str]:
        seen_seeds.extend(seeds)
        assert prompt.endswith(f"Question: {Q}\nAnswer: {A}\nSame question, other words:")
        return [["Which beverage do I prefer?", " which beverage do I prefer? ", "What do you like to drink?"][seed % 3]
                for seed in seeds]

    out = generate(complete, Q, A, samples=6)
    assert out == ["Which beverage do I prefer?", "What do I like to drink?"]
    assert seen_seeds == list(range(6))


def test_held_out_questions_are_never_trained_and_the_limit_holds():
    found = {"What is my cat's name?": ["What do I call my cat?", "What is my cat called?", "Which cat is mine?"]}
    kept = without_questions(found, ["what do I call my cat", "Who am I?"], limit=1)
    assert kept == {"What is my cat's name?": ["What is my cat called?"]}
