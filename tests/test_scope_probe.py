"""The scope probe: a logistic regression on the base model's embeddings that finds the user's
questions the words miss, fitted per version as the worker fits it."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from tunechat.core import scope_probe
from tunechat.core.turns import Taught, decide

SPANISH = [("¿Dónde trabajo?", "Trabajas en una panadería de Cuenca."),
           ("¿Cómo se llama mi gato?", "Tu gato se llama Azafrán.")]


def test_a_fitted_probe_separates_its_classes_and_reads_back_the_same(tmp_path):
    rng = np.random.default_rng(0)
    mine, theirs = rng.normal(1.0, 1.0, (60, 8)), rng.normal(-1.0, 1.0, (60, 8))
    probe = scope_probe.fit(np.vstack([mine, theirs]), np.r_[np.ones(60), np.zeros(60)], np.ones(120))
    scores = probe.scores(np.vstack([mine, theirs]))
    assert (scores[:60] > 0).mean() > 0.9 and (scores[60:] < 0).mean() > 0.9
    probe = scope_probe.ScopeProbe(probe.mean, probe.scale, probe.weights, threshold=0.7)
    probe.save(tmp_path / "probe.safetensors")
    assert stat.S_IMODE((tmp_path / "probe.safetensors").stat().st_mode) == 0o600
    again = scope_probe.ScopeProbe.load(tmp_path / "probe.safetensors")
    assert again.threshold == 0.7 and np.array_equal(again.scores(mine), probe.scores(mine))


def test_the_threshold_lets_the_asked_share_of_general_messages_through():
    """Scored out of fold, about ``general_slip`` of the general rows pass the threshold; fitted
    on every row, the probe lets fewer through (it has seen them)."""
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0.5, 1.0, (200, 4)), rng.normal(-0.5, 1.0, (200, 4))])
    y = np.r_[np.ones(200), np.zeros(200)]
    fresh = np.vstack([rng.normal(-0.5, 1.0, (2000, 4))])
    for slip in (0.02, 0.1, 0.3):
        probe = scope_probe._calibrated(x, y, np.ones(400), 400, slip)
        assert abs((probe.scores(fresh) > probe.threshold).mean() - slip) < 0.05, slip
    assert scope_probe._calibrated(x, y, np.ones(400), 400, None).threshold == 0.0


@pytest.fixture(scope="module")
def bank_vectors(engine):
    personal, general = scope_probe.bank()
    return engine.embed(personal), engine.embed(general)


def fitted(engine, bank_vectors, pairs):
    """What the worker fits for a version taught ``pairs``, as the chat reads it."""
    from tunechat.personalize.general import replay_prompts

    taught, questions = Taught.from_pairs(pairs), [q for q, _ in pairs]
    probe = scope_probe.fit_for(questions, taught, engine.embed, replay_prompts(questions), bank_vectors)
    return taught, lambda text: probe.about_user(engine.embed([text])[0])


@pytest.fixture(scope="module")
def spanish_probe(engine, bank_vectors):
    return fitted(engine, bank_vectors, SPANISH)


def test_the_probe_finds_a_pro_drop_question_the_words_miss_and_leaves_general_ones(spanish_probe):
    """On the embedded model: "¿Qué coche conduzco?" says "I" by its verb alone, a verb the
    user never taught with, so the words send it to the base model; the probe sends it to the
    personal model, and general questions in Spanish and English still go to the base."""
    taught, about_user = spanish_probe
    asked = lambda q, probe=None: decide([{"role": "user", "content": q}], taught, about_user=probe)  # noqa: E731
    assert asked("¿Qué coche conduzco?").route == "base"
    decision = asked("¿Qué coche conduzco?", about_user)
    assert decision.route == "personal" and decision.reason == "reads as a question about you"
    for general in ("¿Cuál es la capital de Francia?", "¿Quién pintó el Guernica?",
                    "What is the boiling point of water?"):
        assert asked(general, about_user).route == "base", general


def test_a_corrected_general_answer_is_not_fitted_as_the_users(engine, bank_vectors):
    """Only taught questions that speak of the user join the personal side: fitted as the
    user's, a correction ("What is the capital of Kazakhstan?") took questions like it."""
    pairs = [*SPANISH, ("What is the capital of Kazakhstan?", "The capital of Kazakhstan is Astana."),
             ("Who wrote the novel Middlemarch?", "Middlemarch was written by George Eliot."),
             ("In what year did the Chernobyl disaster happen?", "1986."),
             ("What is the longest river in Europe?", "The Volga.")]
    taught, about_user = fitted(engine, bank_vectors, pairs)
    for question in ("In what year did the Fukushima disaster happen?", "What is the capital of Uzbekistan?",
                     "Who wrote the novel Silas Marner?"):
        assert decide([{"role": "user", "content": question}], taught, about_user=about_user).route == "base", question
    # and the probe does take what the words miss: it is not one that takes nothing
    pro_drop = [{"role": "user", "content": "¿Qué coche conduzco?"}]
    assert decide(pro_drop, taught, about_user=about_user).route == "personal"


def test_a_base_wider_than_the_bank_is_fitted_in_the_rows_span_to_the_same_probe():
    """At 7B the embeddings (4096 wide) outnumber the messages: the fit then runs in the rows'
    own span, and scores what the fit in the full width scores."""
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0.3, 1.0, (15, 40)), rng.normal(-0.3, 1.0, (15, 40))])
    y, weight = np.r_[np.ones(15), np.zeros(15)], np.r_[np.ones(25), np.full(5, 5.0)]
    narrow = scope_probe.fit(x, y, weight)  # 40 features > 30 rows: the rows' span
    # Every row twice: the same mean, spread and minimum (loss and penalty both double), but
    # 60 rows > 40 features: the full width.
    full = scope_probe.fit(np.vstack([x, x]), np.r_[y, y], np.r_[weight, weight])
    probe = rng.normal(0.0, 1.0, (10, 40))
    assert narrow.weights.shape == full.weights.shape == (41,)
    assert np.allclose(narrow.scores(probe), full.scores(probe), atol=1e-4)
