"""The built-in replay prompts stay apart from every question the evaluation asks; the embedded
model's answers to them ship with the package and are what the engine gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunechat.personalize.evaluate import builtin_locality_probes
from tunechat.personalize.general import (
    NEAR_TIE,
    base_answers,
    builtin_questions,
    compute_answers,
    general_prompts,
    off_greedy,
    shipped_answers,
)

ROOT = Path(__file__).resolve().parents[1]


def test_replayed_prompts_never_include_a_question_the_evaluation_asks_or_a_taught_one():
    """The built-in evaluation and the personas' general questions are apart from the replayed
    prompts by construction; a persona's taught questions (a corrected general answer among
    them) are left out of the replay by the run itself."""
    from tunechat.personalize.general import replay_prompts

    asked = {p.question for p in builtin_locality_probes()}
    personas = [ROOT / "bench" / "data" / "persona-public.json",
                *sorted((ROOT / "tests" / "data").glob("persona-*.json"))]
    for persona in personas:
        if persona.is_file():
            data = json.loads(persona.read_text(encoding="utf-8"))
            asked |= {f["q"] for f in data["facts"]} | {p["q"] for p in data.get("paraphrases", [])}
            asked |= set(data.get("locality", []))
    prompts = replay_prompts(asked)
    assert len(asked) > 50 and len(prompts) > 50
    assert not set(prompts) & asked
    corrected = replay_prompts(["what is the capital of  AUSTRALIA?"])
    assert "What is the capital of Australia?" in general_prompts() and len(corrected) == len(general_prompts()) - 1


# -- the embedded model's answers, shipped --------------------------------------------------------

@pytest.fixture(scope="module")
def fingerprint(base_model) -> str:
    from tunechat.core.fingerprint import file_fingerprint

    return file_fingerprint(base_model)


def test_the_embedded_models_answers_to_every_builtin_question_are_shipped(fingerprint):
    shipped = shipped_answers(fingerprint)
    assert list(shipped) == builtin_questions()
    assert len(shipped) == len(general_prompts()) + len(builtin_locality_probes())
    assert all(isinstance(a, str) for a in shipped.values()) and sum(bool(a) for a in shipped.values()) > 100
    assert shipped_answers("0" * 64) == {}


def test_a_sample_of_the_shipped_answers_is_what_the_engine_gives(engine, fingerprint):
    """On any CPU: each token of a shipped answer, and its end, is this engine's greedy choice
    up to a near-tie (kernels round differently from one CPU to another, and a near-tie may
    go the other way), teacher-forced. Another prompt's answer, or one cut short, is not."""
    shipped = shipped_answers(fingerprint)
    prompts, probes = general_prompts(), [p.question for p in builtin_locality_probes()]
    sample = [prompts[0], prompts[len(prompts) // 2], probes[-1]]
    assert {p: off_greedy(engine, p, shipped[p]) for p in sample} == pytest.approx(
        dict.fromkeys(sample, 0.0), abs=NEAR_TIE)
    assert off_greedy(engine, sample[0], shipped[sample[1]]) > NEAR_TIE
    assert off_greedy(engine, sample[1], shipped[sample[1]][: len(shipped[sample[1]]) // 2]) > NEAR_TIE


def test_a_first_personalization_computes_only_its_own_questions(base_model, fingerprint, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNECHAT_CACHE", str(tmp_path / "empty-cache"))
    own = "What is my favourite colour?"
    calls: list[tuple[int, int]] = []
    answers = base_answers(base_model, fingerprint, [*builtin_questions(), own], lambda d, t: calls.append((d, t)))
    assert calls == [(1, 1)]
    assert {q: answers[q] for q in builtin_questions()} == shipped_answers(fingerprint)
    assert answers[own] == compute_answers(base_model, [own])[own]
    calls.clear()
    assert base_answers(base_model, fingerprint, [own], lambda d, t: calls.append((d, t))) == {own: answers[own]}
    assert calls == []  # cached
