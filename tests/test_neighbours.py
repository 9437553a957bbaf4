"""Neighbour replay: the built-in general prompts nearest each taught fact, by the base
model's own representation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tunechat.personalize import neighbours  # noqa: E402


def test_nearest_gives_each_facts_closest_prompts_once_closest_first():
    axes = torch.eye(3)
    pool = torch.cat([axes, -axes])  # prompts 0-2 along +x, +y, +z; 3-5 along -x, -y, -z
    facts = torch.tensor([[0.0, 1.0, 0.2], [0.1, 0.0, 1.0]])
    # fact 0: +y (0.98), then +z; fact 1: +z (0.995), then +x; each prompt once, closest first
    assert neighbours.nearest(facts, pool, per_fact=2) == [2, 1, 0]
    # A direction every vector shares (as hidden states do) must not decide who is near.
    shared = torch.tensor([[4.0, 4.0, 4.0]])
    assert neighbours.nearest(facts + shared, pool + shared, per_fact=2) == [2, 1, 0]
    assert neighbours.nearest(facts, pool, per_fact=0) == []
    assert neighbours.nearest(facts, pool[:0], per_fact=3) == []


def test_replayed_prompts_never_include_a_question_the_evaluation_asks():
    import json
    from pathlib import Path

    from tunechat.personalize.evaluate import builtin_locality_probes
    from tunechat.personalize.general import general_prompts, neighbour_prompts

    root = Path(__file__).resolve().parents[1]
    asked = {p.question for p in builtin_locality_probes()}
    for persona in [root.parent / "shared" / "data" / "persona-public.json", *sorted((root / "tests" / "data").glob("persona-*.json"))]:
        if persona.is_file():
            data = json.loads(persona.read_text(encoding="utf-8"))
            asked |= {f["q"] for f in data["facts"]} | {p["q"] for p in data.get("paraphrases", [])}
            asked |= set(data.get("locality", []))
    random_pool, neighbours_only = general_prompts(), neighbour_prompts()
    assert len(asked) > 50 and len(neighbours_only) > 100
    assert not (set(random_pool) | set(neighbours_only)) & asked
    assert not set(random_pool) & set(neighbours_only)  # each prompt in one role


@pytest.mark.slow
def test_real_model_finds_prompts_on_the_facts_topic_and_caches_their_vectors(home):
    from tunechat.personalize.base import cached_base_folder, load_base
    from tunechat.personalize.general import general_prompts, neighbour_prompts
    from tunechat.core.registry import embedded_model_path

    model, tokenizer = load_base(cached_base_folder(embedded_model_path()), "cpu", "float32")
    prompts = general_prompts() + neighbour_prompts()
    path = home / "vectors.safetensors"
    home.mkdir(parents=True, exist_ok=True)
    pool = neighbours.VectorCache(path).vectors(model, tokenizer, prompts, "cpu")
    assert pool.shape == (len(prompts), model.config.hidden_size)
    facts = neighbours.embed(model, tokenizer, ["What is my favorite color?",
                                                 "When is my birthday?"], "cpu")
    colour = [prompts[i] for i in neighbours.nearest(facts[:1], pool, 3)]
    dates = [prompts[i] for i in neighbours.nearest(facts[1:], pool, 3)]
    assert any("color" in p.lower() for p in colour), colour
    calendar = ("month", "day", "year", "born", "when")
    assert any(any(w in p.lower() for w in calendar) for p in dates), dates

    # Nothing saved yet; once saved, a fresh cache answers from the file without the model.
    assert not path.exists()
    cache = neighbours.VectorCache(path)
    cache.vectors(model, tokenizer, prompts, "cpu")
    cache.save()
    again = neighbours.VectorCache(path).vectors(None, None, prompts, "cpu")
    assert torch.allclose(again, pool, atol=1e-6)
    path.write_bytes(b"not a safetensors file")  # a damaged cache is rebuilt, never trusted
    rebuilt = neighbours.VectorCache(path).vectors(model, tokenizer, prompts[:5], "cpu")
    assert torch.allclose(rebuilt, pool[:5], atol=1e-5)
