"""Quality scores on the real embedded model."""

from tunechat.core.engine import GenerationSettings
from tunechat.personalize.evaluate import Drift, answer_drift, engine_scorer

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
