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


def test_batches_follow_the_seeded_draw_order(monkeypatch):
    """Each step draws, from one Random(seed): the facts (when more than fit a batch), one
    wording per drawn fact (the user's own at step 1, a draw even for a fact with one wording),
    then the replay examples. The same seed gives the same batches, so the same run."""
    import random

    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", 4)
    facts = [[example(PREFIX, [40 + i], [60 + i, 2]), example(PREFIX, [70 + i], [60 + i, 2])] for i in range(5)]
    facts[4] = facts[4][:1]
    replay = [example(PREFIX, [20 + i], [30 + i, 31]) for i in range(9)]
    recipe = get_recipe("replay-kl").with_(fact_batch=3, replay_batch=4, max_steps=3, stop_loss=0.0, seed=7)
    trained: list[list[Example]] = []
    original = train._forward

    def recording(m, batch, *args):
        if torch.is_grad_enabled():
            trained.append(list(batch))
        return original(m, batch, *args)

    monkeypatch.setattr(train, "_forward", recording)
    train.train(tiny_lora_model(), facts, replay, recipe, 0, "cpu")
    rng = random.Random(7)
    expected: list[list[Example]] = []
    for step in range(1, 4):
        chosen = rng.sample(range(5), 3)
        expected.append([facts[i][0 if step == 1 else rng.randrange(len(facts[i]))] for i in chosen])
        expected.append([replay[i] for i in rng.sample(range(9), 4)])
    assert trained == expected


def test_negatives_join_the_facts_pass_and_never_decide_the_stop(monkeypatch):
    """Negatives are drawn ``recipe.negatives`` a step into the facts' pass, from their own random
    stream (the facts and replay draw as without them), and a negative the model cannot learn
    (two answers to one question) does not hold the greedy stop back."""
    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", 4)
    model = tiny_lora_model()
    facts = [[BATCH[0]], [BATCH[1]]]
    contradictory = [example(PREFIX, [60, 61], [70, 71]), example(PREFIX, [60, 61], [72, 73]),
                     example(PREFIX, [62], [74, 75])]
    trained: list[list[Example]] = []
    original = train._forward

    def recording(m, batch, *args):
        if torch.is_grad_enabled():
            trained.append(list(batch))
        return original(m, batch, *args)

    monkeypatch.setattr(train, "_forward", recording)
    recipe = get_recipe("replay-kl").with_(stop_when="greedy", lr=1e-2, max_steps=200, min_steps=1, replay_batch=0,
                                           negatives=2)
    result = train.train(model, facts, [], recipe, 0, "cpu", negatives=contradictory)
    assert result.stopped_early and result.steps < 200
    assert all(train.reproduces_answers(model, [BATCH[0], BATCH[1]], 0, "cpu"))
    assert not all(train.reproduces_answers(model, contradictory[:2], 0, "cpu"))  # cannot both hold
    for batch in trained:
        assert batch[:2] == [BATCH[0], BATCH[1]] and len(batch) == 4
        assert all(e in contradictory for e in batch[2:]) and batch[2] != batch[3]
