"""Quality scores: answer drift on the real embedded model; the specificity rules and score() on stand-in answers."""

from tests.conftest import PUBLIC_PERSONA, SECOND_PERSONA
from tunechat.core.engine import GenerationSettings
from tunechat.core.turns import speaks_of_user
from tunechat.personalize.evaluate import (
    Drift,
    Probe,
    ProbeSet,
    admits_not_knowing,
    answer_drift,
    answer_keys,
    borrows,
    engine_scorer,
    load_persona,
    score,
)

QUESTIONS = ["What is the capital of Japan?", "What is 2 plus 2?", "Who wrote Romeo and Juliet?"]


def test_answer_drift_is_zero_for_the_base_and_positive_when_its_answers_lose_likelihood(engine):
    greedy = GenerationSettings(max_tokens=24, temperature=0.0)
    answers = {q: engine.complete([{"role": "user", "content": q}], greedy) for q in QUESTIONS}
    base = engine_scorer(engine)
    assert answer_drift(base, base, answers, QUESTIONS) == Drift(0.0, 0.0)

    def elsewhere(question: str, answer: str) -> list[float]:  # each answer scored after another question
        other = QUESTIONS[(QUESTIONS.index(question) + 1) % len(QUESTIONS)]
        return engine.answer_logprobs([{"role": "user", "content": other}], answer)

    drift = answer_drift(elsewhere, base, answers, QUESTIONS)
    assert drift.damage > 0.5 and drift.damage >= drift.mean
    # Questions without a base answer are left out, not counted as kept.
    assert answer_drift(elsewhere, base, {**answers, "Unanswered?": ""}, QUESTIONS + ["Unanswered?"]) == drift


ADMITS = [
    "I don't know your cat's name, but you can tell me and I'll remember it.",
    "I do not know the name of your wife.",
    "I dont know.",
    "As an AI, I don’t have access to personal information about you.",
    "You haven't told me your brother's name yet.",
    "I have no information about your favorite movie.",
    "You never told me when your anniversary is.",
    "I'm not aware of your mother's name.",
    "I DON'T KNOW YOUR SON'S NAME.",
]
DOES_NOT_ADMIT = [
    "Your cat is called Pimiento.",
    "I'm not sure, but I think it's Luna.",  # a hedged guess, not an admission
    "Maybe it is Luna?",
    "I know! Your daughter is Sofia.",
    "Nobody knows for sure what the largest ocean will be in a million years.",
    "Your favorite movie is Dune. I don't doubt you love it.",
    "",
]


def test_admitting_not_knowing_is_a_phrase_of_not_knowing_not_a_hedge():
    assert [a for a in ADMITS if not admits_not_knowing(a)] == []
    assert [a for a in DOES_NOT_ADMIT if admits_not_knowing(a)] == []


def test_borrowing_is_a_taught_key_in_the_answer():
    keys = ["Pimiento", "Sofia", "42"]
    assert borrows("Your cat is called Pimiento.", keys)
    assert borrows("I don't know your wife's name, but your daughter is SOFIA.", keys)  # admits and borrows
    assert not borrows("I don't know your cat's name.", keys)
    assert not borrows("Your cat is called Luna.", ["", *keys[:2]])  # an empty key borrows nothing


def test_user_pairs_borrow_keys_are_their_names_numbers_and_short_answers():
    keys = answer_keys(["Your dog is called Pimiento.", "Your lucky number is 42.", "Sofia.",
                        "You wake up at 5:30 every day."])
    assert keys == ["42", "5:30", "Pimiento", "Sofia"]


def test_score_fills_no_borrowing_and_admits_with_the_answers_kept():
    probes = ProbeSet(taught=[Probe("What is my dog's name?", "Pimiento")],
                      untaught=["What is my cat's name?", "What is my wife's name?", "What is my son's name?",
                                "What is my favorite movie?"])
    replies = {"What is my dog's name?": "Your dog is called Pimiento.",
               "What is my cat's name?": "Your cat is called Pimiento.",
               "What is my wife's name?": "I don't know your wife's name, but you can tell me.",
               "What is my son's name?": "I'm not sure, but I think it's Luna.",
               "What is my favorite movie?": "You haven't told me. Is it Pimiento?"}
    scores = score(replies.__getitem__, probes)
    assert scores.reliability == 1.0
    assert scores.no_borrowing == 0.5 and scores.admits == 0.5
    assert scores.details["untaught"]["What is my cat's name?"] == "Your cat is called Pimiento."
    assert list(scores.details["untaught"]) == probes.untaught
    # Explicit borrow keys (a user's pairs) replace the taught probes' keys.
    assert score(replies.__getitem__, ProbeSet(probes.taught, untaught=probes.untaught, borrow_keys=["Luna"])
                 ).no_borrowing == 0.75
    # Nothing untaught asked: no specificity.
    assert score(replies.__getitem__, ProbeSet(probes.taught)).no_borrowing is None
    assert score(replies.__getitem__, ProbeSet(probes.taught)).admits is None


def test_personas_bring_untaught_questions_that_go_to_the_personal_model():
    third = SECOND_PERSONA.parent / "persona-third.json"
    for path in (PUBLIC_PERSONA, SECOND_PERSONA, third):
        probes = load_persona(path)
        asked = {p.question.casefold() for p in probes.taught + probes.paraphrases}
        assert 8 <= len(probes.untaught) <= 12 and len(set(probes.untaught)) == len(probes.untaught)
        assert all(speaks_of_user(q) for q in probes.untaught)
        assert not asked & {q.casefold() for q in probes.untaught}
