"""The data checks on pairs written for them (tests/data/pairs-planted.json: problems planted
by someone who had not read the checks, with near misses that are not problems) and on the
persona files, which must raise no alarm."""

import json
from pathlib import Path

import pytest

from tunechat.core import pair_checks
from tunechat.core.store import Pair, pair_key

DATA = Path(__file__).parent / "data"
PERSONAS = sorted(DATA.glob("persona-*.json")) + [Path(__file__).parents[1] / "bench" / "data" / "persona-public.json"]


def planted() -> tuple[list[Pair], list[dict]]:
    data = json.loads((DATA / "pairs-planted.json").read_text(encoding="utf-8"))
    pairs = [Pair(i, p["question"], p["answer"], "added", float(i)) for i, p in enumerate(data["pairs"])]
    return pairs, data["problems"]


def persona_pairs(path: Path) -> list[Pair]:
    facts = json.loads(path.read_text(encoding="utf-8"))["facts"]
    return [Pair(i, f["q"], f["a"], "added", float(i)) for i, f in enumerate(facts)]


def words(text: str) -> int:
    return len(text.split())


def found(problems, kind: str) -> set[tuple[int, ...]]:
    return {p.pair_ids for p in problems if p.kind == kind}


def test_every_planted_problem_that_needs_no_model_is_found_and_nothing_else():
    pairs, problems = planted()
    got = pair_checks.check_pairs(pairs, count_tokens=words, max_answer_tokens=300)
    for kind in ("duplicate", "no_question", "overlong"):
        assert found(got, kind) == {tuple(p["pairs"]) for p in problems if p["kind"] == kind}, kind
    same_question = {tuple(p["pairs"]) for p in problems if p["kind"] == "contradiction"
                     and pair_key(pairs[p["pairs"][0]].question, "")
                     == pair_key(pairs[p["pairs"][1]].question, "")}
    assert len(same_question) == 2 and found(got, "contradiction") == same_question
    near_misses = {i for p in problems if p["kind"] == "near_miss" for i in p["pairs"]}
    assert not any(set(p.pair_ids) <= near_misses for p in got)
    assert all(p.blocking for p in got)
    assert pair_checks.summary(got) == ("Found 2 contradictions, 3 duplicates, 3 questions that ask nothing, "
                                        "1 overlong answer.")


# A polite request without a question mark that opens with "I" ("I would like to know the
# number of my allotment plot, please.") reads as a statement about oneself: a false alarm.
POLITE = pytest.mark.xfail(strict=True, reason="'I would like to know ..., please.' is taken for a statement")


@pytest.mark.parametrize("path", [pytest.param(p, marks=POLITE) if p.stem == "persona-nineteenth" else p
                                  for p in PERSONAS], ids=lambda p: p.stem)
def test_no_alarm_on_a_persona(path):
    assert pair_checks.check_pairs(persona_pairs(path), count_tokens=words) == []


def test_requests_and_questions_in_other_languages_ask_something():
    for text in ("Tell me my name.", "Remind me which instrument I play.", "¿Dónde vivo?", "Wo wohne ich?",
                 "Recuérdame cuántos años tiene mi hija.", "Comment s'appelle mon chat ?", "我住在哪里？"):
        assert pair_checks.asks_something(text), text
    for text in ("I'm allergic to penicillin.", "My favourite coffee", "gym membership", "Mi perro se llama Rex."):
        assert not pair_checks.asks_something(text), text


def test_a_pair_the_model_already_answers_is_a_note_not_a_fault():
    pairs = [Pair(1, "What is the capital of Japan?", "The capital of Japan is Tokyo.", "kept", 0.0),
             Pair(2, "What is my name?", "Your name is Ada.", "added", 1.0)]
    said = {"What is the capital of Japan?": "The capital of Japan is Tokyo", "What is my name?": "I don't know."}
    [note] = pair_checks.check_pairs(pairs, greedy_answer=said.__getitem__)
    assert note.kind == "nothing_new" and note.pair_ids == (1,) and not note.blocking
