"""Filters on the base model's rewordings of taught questions (personalize/paraphrase.py)."""

from __future__ import annotations

from tunechat.personalize.paraphrase import (
    clean,
    generate,
    keep_distinct,
    pointing,
    to_first_person,
    without_questions,
)

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


def test_pointing_keeps_a_rewording_only_where_its_own_answer_fits_best():
    """By each answer's fit above its mean after the taught questions: an answer likely after
    anything (here the name) points nowhere, so a rewording where it fits best, but no better
    than usual, is not its question's."""
    pairs = [("What is my dog's name?", "Rex."), ("Where do I live?", "Oslo."), ("What is my job?", "Baker.")]
    fits = {"What is my dog's name?": [-1.0, -3.0, -3.0], "Where do I live?": [-1.5, -1.0, -3.0],
            "What is my job?": [-1.5, -3.0, -1.0],
            "What do I call my dog?": [-1.1, -3.0, -3.0],  # Rex, well above its mean (-1.33)
            "What do I wear?": [-1.6, -2.2, -2.8]}  # Rex fits best, but below its mean (-1.33); Oslo above (-2.33)
    kept = pointing({"What is my dog's name?": ["What do I call my dog?", "What do I wear?"]}, pairs,
                    lambda question, answers: fits[question])
    assert kept == {"What is my dog's name?": ["What do I call my dog?"], "Where do I live?": [], "What is my job?": []}
    # one pair: nothing to weigh its answer against
    assert pointing({"Where do I live?": ["Where is my home?"]}, pairs[1:2], lambda q, a: []) == \
        {"Where do I live?": ["Where is my home?"]}


def test_pointing_on_the_embedded_model_drops_a_rewording_about_something_else(engine):
    pairs = [("What is my dog's name?", "Your dog's name is Miso."), ("Where do I live?", "You live in Gdansk."),
             ("What am I allergic to?", "You are allergic to peanuts."), ("What car do I drive?", "You drive a Volvo.")]
    found = {"What is my dog's name?": ["What do I call my dog?", "Which city am I in?"],
             "What car do I drive?": ["Which vehicle do I own?"]}
    kept = pointing(found, pairs, engine.answer_likelihoods)
    assert kept["What is my dog's name?"] == ["What do I call my dog?"]
    assert kept["What car do I drive?"] == ["Which vehicle do I own?"]


def test_pointing_past_the_answers_weighed_reads_a_sample_and_still_drops_what_points_elsewhere():
    """With more pairs than ``ANSWERS_WEIGHED``, each prompt is weighed against that many answers
    at most; a rewording whose fit lies with its own answer is kept, one that fits another
    (here every other answer) is dropped."""
    from tunechat.personalize import paraphrase

    n = paraphrase.ANSWERS_WEIGHED + 9
    pairs = [(f"Question {i}?", f"Answer {i}.") for i in range(n)]
    read: list[int] = []

    def likelihoods(question: str, answers):
        read.append(len(answers))
        if question == "Elsewhere?":
            return [-1.0 if a != "Answer 0." else -3.0 for a in answers]
        target = "Answer 0." if question in ("Question 0?", "Mine?") else f"Answer {question.split()[1][:-1]}."
        return [-1.0 if a == target else -3.0 for a in answers]

    kept = paraphrase.pointing({"Question 0?": ["Mine?", "Elsewhere?"]}, pairs, likelihoods)
    assert kept["Question 0?"] == ["Mine?"]
    assert max(read) == n and read[-2:] == [paraphrase.ANSWERS_WEIGHED + 1] * 2
    assert len(read) == paraphrase.ANSWERS_WEIGHED + 2
