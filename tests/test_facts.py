"""A fact stated as a sentence, turned into a question and answer (tunechat.core.facts)."""

from __future__ import annotations

import pytest

from tunechat.core.facts import (
    FactPair,
    details_of,
    looks_like_fact,
    pair_from_fact,
    rejection,
    second_person,
    shots,
)


def test_details_are_the_names_numbers_and_dates():
    assert details_of("My cousin Inès flies to New York on 14 March at 6:45.") == ["Inès", "New York", "14 March",
                                                                                 "6:45"]
    assert details_of("I renewed my library card on 3/11/1988, number 07700 900123.") == ["3/11/1988",
                                                                                         "07700 900123"]
    assert details_of("I finished 9th in the race on the 2nd of October.") == ["9th", "2nd of October"]
    assert details_of("September 30th is our anniversary.") == ["September 30th"]
    # Not details: the sentence's first word, "I", a title, a plain lower-case word.
    assert details_of("Yesterday I saw Dr. Haas. Tomorrow I rest.") == ["Haas"]
    assert details_of("I am allergic to cats.") == []
    assert details_of("Мой брат живёт в Казани.") == ["Казани"]  # capitals in any script with case


def test_a_statement_without_an_answer_looks_like_a_fact():
    assert looks_like_fact("My neighbour's parrot is called Kiwi.")
    assert looks_like_fact("I quit smoking in 2020", "")
    assert not looks_like_fact("What is my parrot called?")
    assert not looks_like_fact("My parrot is called what？")
    assert not looks_like_fact("¿Cómo se llama mi loro")
    assert not looks_like_fact("where do I keep my passport")  # a question without its mark
    assert not looks_like_fact("My parrot is called Kiwi.", "Kiwi")  # an answer was given
    assert not looks_like_fact("Kiwi")


def test_second_person_swaps_the_speaker_only():
    assert second_person("I'm moving to Rome and my sister is staying with me.") == (
        "You're moving to Rome and your sister is staying with you.")
    assert second_person("I am sure it is mine. We met in the US at 7 am.") == (
        "You are sure it is yours. You met in the US at 7 am.")


def test_the_check_rejects_a_pair_that_loses_a_detail():
    sentence = "I moved to Porto in 2023."
    assert rejection(sentence, "Where did I move in 2023?", "You moved to Porto in 2023.") is None
    assert rejection(sentence, "Where did I move in 2023?", "You moved to Porto.") == "the answer drops 2023"
    assert rejection(sentence, "Where did I move in 2023?", "You moved to Lisbon in 2023.") == (
        "the answer drops Porto")
    assert rejection(sentence, "Where did I move in 2023", "You moved to Porto in 2023.") == (
        "the question does not end with a question mark")
    assert rejection(sentence, "I moved to Porto in 2023?", "You moved to Porto in 2023.") == (
        "the question is the sentence itself")
    assert rejection(sentence, "Did I move to Porto in 2023?", "You moved to Porto in 2023.") == (
        "the question gives the answer away")
    assert rejection(sentence, "Where did I move in 2023?", "I moved to Porto in 2023.") == (
        "the answer is in the first person")
    assert rejection(sentence, "Where did I move in 2021?", "You moved to Porto in 2023.") == (
        "the question brings in 2021")


def test_the_check_reads_meaning_words_and_people():
    sentence = "My uncle keeps bees in Tarragona."
    assert rejection(sentence, "What does my uncle keep?", "Your uncle keeps bees in Tarragona.") is None
    assert rejection(sentence, "What does my uncle keep?", "Your uncle lives in Tarragona.") == (
        "the answer drops keeps, bees")
    assert rejection(sentence, "What does my aunt keep?", "Your uncle keeps bees in Tarragona.") == (
        "the question is about somebody else")
    assert rejection(sentence, "What is my uncle's name?", "Your uncle keeps bees in Tarragona.") == (
        "the question asks for a name the answer does not give")
    assert rejection(sentence, "What is my uncle's favorite hobby?", "Your uncle keeps bees in Tarragona.") == (
        "the question brings in favorite, hobby")
    assert rejection("I'm 41.", "What's my age?", "You're 41.") is None  # "what's" asks, as "what" does
    assert rejection("I'm learning Welsh.", "What's my name?", "You're learning Welsh.") == (
        "the question asks for your name, which the sentence does not give")
    assert rejection("I'm Ilona.", "What is my name?", "You're Ilona.") is None


def test_every_shot_passes_the_check():
    """The model copies its examples: an example the check would reject teaches rejects."""
    for sentence, question, answer in shots():
        assert rejection(sentence, question, answer) is None, sentence


class _Scripted:
    """An engine that writes the given completions in turn, one per prompt."""

    def __init__(self, completions: list[str]) -> None:
        self.completions = list(completions)
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def continue_text_samples(self, prompt, max_tokens, temperature, top_p, seeds, stop=()):
        assert temperature == 0.0 and list(seeds) == [0]  # greedy: one deterministic completion
        self.prompts.append(prompt)
        return [self.completions.pop(0)]


def test_the_first_passing_candidate_is_taken():
    engine = _Scripted([" You moved to Porto.\nQuestion: Where did I move in 2023?",
                        " Where did I move in 2023?\nAnswer: You moved to Porto in 2023."])
    assert pair_from_fact(engine, "I moved to Porto in 2023") == FactPair("Where did I move in 2023?",
                                                                          "You moved to Porto in 2023.")
    assert engine.prompts[0].endswith("Fact: I moved to Porto in 2023.\nAnswer:")
    assert engine.prompts[1].endswith("Fact: I moved to Porto in 2023.\nQuestion:")


def test_an_answer_that_drops_a_detail_is_replaced_by_the_sentence_in_the_second_person():
    lossy = [" You moved to Porto.\nQuestion: Where did I move in 2023?"] * 3
    assert pair_from_fact(_Scripted(lossy), "I moved to Porto in 2023.") == FactPair(
        "Where did I move in 2023?", "You moved to Porto in 2023.", swapped=True)
    assert pair_from_fact(_Scripted(lossy), "I moved to Porto in 2023.", swap=False) is None
    # A question that fails on its own is never rescued.
    bad = [" You moved to Porto.\nQuestion: Did I move to Porto in 2023?"] * 3
    assert pair_from_fact(_Scripted(bad), "I moved to Porto in 2023.") is None


@pytest.mark.slow
@pytest.mark.parametrize("sentence", ["I am 41 years old.", "I named my bike Rocket.",
                                      "My gym membership costs 35 euros a month."])
def test_the_embedded_model_writes_a_pair_that_keeps_the_details(engine, sentence):
    pair = pair_from_fact(engine, sentence)
    assert pair is not None
    assert pair.question.endswith("?")
    assert all(d.casefold() in pair.answer.casefold() for d in details_of(sentence))
    assert pair_from_fact(engine, sentence) == pair  # greedy: the same sentence, the same pair
