"""The training loop's forward pass on a tiny random Llama: running the shared prefix once
must give the same logits and gradients as running every example whole."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tunechat.personalize import train  # noqa: E402
from tunechat.personalize.data import IGNORE, Example  # noqa: E402
from tunechat.personalize.recipe import get_recipe  # noqa: E402


def tiny_lora_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = train.add_lora(LlamaForCausalLM(config), get_recipe("replay-kl"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make the adapter do something
            torch.nn.init.normal_(p, std=0.2)
    return model


def example(prefix: list[int], question: list[int], answer: list[int]) -> Example:
    ids = prefix + question + answer
    return Example(ids, [IGNORE] * (len(prefix) + len(question)) + answer, "fact")


PREFIX = [1, 5, 9, 13, 17, 21, 25, 29, 33, 37]
BATCH = [
    example(PREFIX, [40, 41], [50, 51, 52]),
    example(PREFIX, [42, 43, 44, 45], [53, 54]),
    example(PREFIX, [46], [55, 56, 57, 58]),
]


def losses_and_grads(model, monkeypatch, min_prefix: int):
    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", min_prefix)
    model.zero_grad()
    run = train._forward(model, BATCH, 0, "cpu", None)
    loss = run.per_token.sum() / run.valid.sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return run, loss.detach(), grads


def test_shared_prefix_length_stops_before_the_answer():
    assert train.shared_prefix_length(BATCH) == len(PREFIX)
    same_question = [example(PREFIX, [40], [50, 51]), example(PREFIX, [40], [52, 53])]
    # The token before the first answer token must stay in the per-example part.
    assert train.shared_prefix_length(same_question) == len(PREFIX)


def test_shared_prefix_forward_matches_whole_examples(monkeypatch):
    model = tiny_lora_model()
    whole, whole_loss, whole_grads = losses_and_grads(model, monkeypatch, min_prefix=10_000)
    shared, shared_loss, shared_grads = losses_and_grads(model, monkeypatch, min_prefix=4)
    assert whole.prefix is None and shared.prefix is not None
    assert shared.inputs["input_ids"].size(1) < whole.inputs["input_ids"].size(1)
    assert torch.allclose(whole.per_token, shared.per_token, atol=1e-5)
    assert torch.allclose(whole_loss, shared_loss, atol=1e-6)
    for name, grad in whole_grads.items():
        assert torch.allclose(grad, shared_grads[name], atol=1e-5), name
    assert any(g.abs().sum() > 0 for n, g in shared_grads.items() if "lora_A" in n)


def test_run_again_rebuilds_the_prefix_for_the_other_model(monkeypatch):
    model = tiny_lora_model()
    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", 4)
    run = train._forward(model, BATCH, 0, "cpu", None)
    with torch.no_grad():
        again = run.run_again(model)
        with model.disable_adapter():
            base = run.run_again(model)
    assert torch.allclose(again, run.logits.detach(), atol=1e-5)
    assert not torch.allclose(base, again, atol=1e-3)  # the adapter is off: different logits


def test_reproduces_answers_is_greedy_decoding():
    model = tiny_lora_model().eval()
    prompt = PREFIX + [40, 41]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(3):  # the model's own greedy continuation
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    greedy = ids[len(prompt):]
    other = greedy[:-1] + [(greedy[-1] + 1) % 97]
    examples = [example(PREFIX, [40, 41], greedy), example(PREFIX, [40, 41], other)]
    assert train.reproduces_answers(model, examples, 0, "cpu") == [True, False]


def test_reference_cache_kl_matches_the_full_kl_and_survives_a_reload(tmp_path, monkeypatch):
    from tunechat.personalize.reference import TOP_K, ReferenceCache

    model = tiny_lora_model()
    with torch.no_grad():  # peaked distributions, as a trained model has
        model.get_base_model().lm_head.weight.mul_(12)
    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", 4)
    run = train._forward(model, BATCH, 0, "cpu", None)
    cache = ReferenceCache(tmp_path / "ref.safetensors")
    parts = train._kl_to_base(model, run, BATCH, cache)
    assert [len(p) for p in parts] == run.valid.sum(1).tolist() == [3, 2, 4]  # one tensor per example, its answer
    kl = torch.cat(parts)
    assert len(cache) == len(BATCH) and kl.shape == (int(run.valid.sum()),)
    # The exact KL over the whole (97-token) vocabulary.
    with torch.no_grad(), model.disable_adapter():
        base = torch.log_softmax(run.run_again(model)[:, :-1].float(), -1)[run.valid]
    tuned = torch.log_softmax(run.logits[:, :-1].float(), -1)[run.valid]
    exact = (base.exp() * (base - tuned)).sum(-1)
    assert TOP_K < 97
    assert torch.allclose(kl.detach(), exact.detach(), rtol=0.1, atol=1e-3)
    assert bool((kl <= exact + 1e-4).all())  # a coarser KL never exceeds the full one
    assert float(exact.sum()) > 0.01  # the adapter moved the model: the term is not trivially 0
    cache.save()
    reloaded = ReferenceCache(tmp_path / "ref.safetensors")
    with model.disable_adapter():  # a cached example needs no base pass: poison it to prove it
        monkeypatch.setattr(train._Pass, "run_again", lambda self, m: (_ for _ in ()).throw(AssertionError))
        again = torch.cat(train._kl_to_base(model, run, BATCH, reloaded))
    assert torch.allclose(again.detach(), kl.detach(), atol=1e-6)


def test_choose_replay_rehearses_the_most_drifted_examples_and_samples_the_rest():
    import random

    drift = {3: 0.9, 7: 0.1, 5: 0.5, 1: 0.05}
    chosen = train.choose_replay(random.Random(0), 20, 6, drift, priority=0.5)
    assert chosen[:3] == [3, 5, 7]  # the three that drifted furthest, worst first
    assert len(chosen) == 6 and len(set(chosen)) == 6 and all(0 <= i < 20 for i in chosen)
    # Without priority it is a plain uniform draw, the same as before the option existed.
    assert train.choose_replay(random.Random(1), 20, 6, drift, 0.0) == random.Random(1).sample(range(20), 6)
    assert sorted(train.choose_replay(random.Random(1), 3, 6, {}, 0.5)) == [0, 1, 2]  # fewer examples than asked


def test_choose_replay_draws_its_share_from_the_prompts_near_the_facts():
    import random

    near = [11, 12, 13, 14, 15]
    for seed in range(5):
        chosen = train.choose_replay(random.Random(seed), 40, 10, {}, 0.0, near, near_count=4)
        assert len(chosen) == 10 and len(set(chosen)) == 10
        assert set(chosen[:4]) <= set(near)  # four from the neighbours, then the usual draw
    # With drift priority too, the hottest examples not already drawn as neighbours follow.
    chosen = train.choose_replay(random.Random(0), 40, 10, {30: 0.9, 31: 0.8}, 0.25, near, near_count=4)
    assert chosen[4:6] == [30, 31]
    # Prompts kept for neighbour duty (past ``random_pool``) come only through ``near``.
    for seed in range(20):
        chosen = train.choose_replay(random.Random(seed), 40, 10, {}, 0.0, [35, 36], 1, random_pool=30)
        assert len(chosen) == 10 and chosen[0] in (35, 36) and all(i < 30 for i in chosen[1:])
    # More neighbours asked than exist: all of them, the rest at random.
    assert set(train.choose_replay(random.Random(0), 40, 10, {}, 0.0, [3], near_count=4)) >= {3}


def test_greedy_stop_ends_training_once_every_wording_is_reproduced(monkeypatch):
    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", 4)
    model = tiny_lora_model()
    # Two facts, each in two wordings (the second wording asks the same fact differently).
    facts = [[BATCH[0], example(PREFIX, [47, 48], BATCH[0].input_ids[-3:])],
             [BATCH[1], example(PREFIX, [49], BATCH[1].input_ids[-2:])]]
    every = [e for forms in facts for e in forms]
    assert not all(train.reproduces_answers(model, every, 0, "cpu"))
    recipe = get_recipe("replay-kl").with_(stop_when="greedy", lr=1e-2, max_steps=200, min_steps=1, replay_batch=0)
    result = train.train(model, facts, [], recipe, 0, "cpu")
    assert result.stopped_early and result.steps < 200
    assert all(train.reproduces_answers(model, every, 0, "cpu"))  # what the stop promised


def test_pick_wording_asks_unseen_wordings_then_the_worst_learned():
    import random

    rng = random.Random(0)
    assert train.pick_wording(rng, 5, step=1, losses={}) == 0  # the user's own wording first
    assert train.pick_wording(rng, 5, step=2, losses={0: 0.1, 1: 0.2, 2: 0.3, 4: 0.9}) == 3  # never asked
    assert train.pick_wording(rng, 5, step=3, losses={0: 0.1, 1: 2.0, 2: 0.3, 3: 0.2, 4: 0.9}) == 1  # worst
    # Without losses: uniform, the same draw as before the option existed.
    assert train.pick_wording(random.Random(7), 5, step=4) == random.Random(7).choice(range(5))


def test_average_follows_the_weights_and_swaps_back_and_forth():
    import torch

    from tunechat.personalize.train import _Average

    w = torch.nn.Parameter(torch.zeros(3))
    average = _Average([w], decay=0.5)
    with torch.no_grad():
        w.fill_(4.0)
    average.update()  # 0.5 * 0 + 0.5 * 4
    with torch.no_grad():
        w.fill_(6.0)
    average.update()  # 0.5 * 2 + 0.5 * 6
    average.swap()
    assert w.tolist() == [4.0, 4.0, 4.0]
    average.swap()
    assert w.tolist() == [6.0, 6.0, 6.0]


def test_holdout_stop_never_trains_the_held_out_wording(monkeypatch):
    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", 4)
    model = tiny_lora_model()
    held_out = example(PREFIX, [47, 48], BATCH[0].input_ids[-3:])
    facts = [[BATCH[0], example(PREFIX, [49], BATCH[0].input_ids[-3:]), held_out], [BATCH[1]]]
    trained: list = []
    original = train._forward
    def recording(m, batch, *args):
        if torch.is_grad_enabled():  # a training pass, not a confirmation
            trained.extend(batch)
        return original(m, batch, *args)

    monkeypatch.setattr(train, "_forward", recording)
    checked: list = []
    original_check = train.reproduces_answers
    monkeypatch.setattr(train, "reproduces_answers", lambda m, ex, *a: checked.append(list(ex)) or original_check(m, ex, *a))
    recipe = get_recipe("replay-kl").with_(stop_when="greedy", holdout_stop=1, lr=1e-2, max_steps=12, min_steps=1,
                                           replay_batch=0)
    rewording = facts[0][1]
    train.train(model, facts, [], recipe, 0, "cpu")
    assert held_out not in trained and all(e in (BATCH[0], rewording, BATCH[1]) for e in trained)
    # Each confirmation asks the user's wordings and the held-out one, not the trained rewording.
    assert checked and all(ex == [BATCH[0], held_out, BATCH[1]] for ex in checked)
