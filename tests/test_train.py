"""The training loop on a tiny random Llama: the packed pass (the shared prefix once, no padding,
the head at answer positions only) must give the same losses and gradients as running every
example alone and whole."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tunechat.personalize import train  # noqa: E402
from tunechat.personalize.data import IGNORE, Example  # noqa: E402
from tunechat.personalize.recipe import get_recipe  # noqa: E402


def tiny_lora_model(attention: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation=attention)
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
    loss = run.per_token.mean()
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
    assert whole.prefix == 0 and shared.prefix == len(PREFIX)
    assert shared.inputs["input_ids"].size(1) < whole.inputs["input_ids"].size(1)
    assert torch.allclose(whole.per_token, shared.per_token, atol=1e-5)
    assert torch.allclose(whole_loss, shared_loss, atol=1e-6)
    for name, grad in whole_grads.items():
        assert torch.allclose(grad, shared_grads[name], atol=1e-5), name
    assert any(g.abs().sum() > 0 for n, g in shared_grads.items() if "lora_A" in n)


def test_run_again_gives_the_other_models_logits_at_the_same_rows(monkeypatch):
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
    kl = train._kl_to_base(model, run, BATCH, cache)
    assert run.counts == [3, 2, 4] and kl.shape == (9,)  # every answer token, example after example
    assert len(cache) == len(BATCH)
    # The exact KL over the whole (97-token) vocabulary.
    with torch.no_grad(), model.disable_adapter():
        base = torch.log_softmax(run.run_again(model).float(), -1)
    tuned = run.logprobs
    exact = (base.exp() * (base - tuned)).sum(-1)
    assert TOP_K < 97
    assert torch.allclose(kl.detach(), exact.detach(), rtol=0.1, atol=1e-3)
    assert bool((kl <= exact + 1e-4).all())  # a coarser KL never exceeds the full one
    assert float(exact.sum()) > 0.01  # the adapter moved the model: the term is not trivially 0
    cache.save()
    reloaded = ReferenceCache(tmp_path / "ref.safetensors")
    with model.disable_adapter():  # a cached example needs no base pass: poison it to prove it
        monkeypatch.setattr(train._Pass, "run_again", lambda self, m: (_ for _ in ()).throw(AssertionError))
        again = train._kl_to_base(model, run, BATCH, reloaded)
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


def record_trained_batches(monkeypatch) -> list[list[Example]]:
    """The batches each training pass runs with gradients, in order, as the loop calls them."""
    trained: list[list[Example]] = []
    original = train._forward

    def recording(m, batch, *args):
        if torch.is_grad_enabled():
            trained.append(list(batch))
        return original(m, batch, *args)

    monkeypatch.setattr(train, "_forward", recording)
    return trained


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
    trained = record_trained_batches(monkeypatch)
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
    trained = record_trained_batches(monkeypatch)
    recipe = get_recipe("replay-kl").with_(stop_when="greedy", lr=1e-2, max_steps=200, min_steps=1, replay_batch=0,
                                           negatives=2)
    result = train.train(model, facts, [], recipe, 0, "cpu", negatives=contradictory)
    assert result.stopped_early and result.steps < 200
    assert all(train.reproduces_answers(model, [BATCH[0], BATCH[1]], 0, "cpu"))
    assert not all(train.reproduces_answers(model, contradictory[:2], 0, "cpu"))  # cannot both hold
    for batch in trained:
        assert batch[:2] == [BATCH[0], BATCH[1]] and len(batch) == 4
        assert all(e in contradictory for e in batch[2:]) and batch[2] != batch[3]


def straightforward_loss(model, facts: list[Example], replay: list[Example], recipe, reference):
    """The step's loss computed plainly: each example alone and whole, the head at every
    position, cross entropy and the full-width top-k KL per example. Returns (the loss, each
    fact's mean token loss)."""
    import torch.nn.functional as F

    from tunechat.personalize.reference import topk_kl

    def answer_logits(e: Example):
        logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1]
        labels = torch.tensor(e.labels[1:])
        keep = labels != IGNORE
        return logits[keep], labels[keep]

    per_fact = torch.stack([F.cross_entropy(*answer_logits(e)) for e in facts])
    replay_sum, answer_tokens = torch.zeros(()), 0
    for e in replay:
        logits, labels = answer_logits(e)
        idx, lp = reference.get(e)
        replay_sum = replay_sum + recipe.replay_weight * F.cross_entropy(logits, labels, reduction="sum")
        replay_sum = replay_sum + recipe.kl_weight * topk_kl(logits, idx, lp).sum()
        answer_tokens += len(labels)
    return per_fact.mean() + replay_sum / answer_tokens, per_fact


STEP_FACTS = BATCH[:2]
STEP_NEGATIVES = [example(PREFIX, [60, 61, 62], [70, 71, 2])]
STEP_REPLAY = [example(PREFIX, [20, 21], [30, 31, 32, 33]), example(PREFIX, [22], [34, 35]),
               example(PREFIX, [23, 24, 25, 26], [36, 37, 38])]


def grads_of(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


# sdpa example by example (CPU), sdpa over the row with a boolean mask (as on CUDA), eager with an additive mask
@pytest.mark.parametrize("attention", ["sdpa", "sdpa-row", "eager"])
@pytest.mark.parametrize("min_prefix", [4, 10_000])  # the shared prefix once in the row, or every example whole
@pytest.mark.parametrize("one_pass", [False, True])  # facts and replay as two passes (CPU) or one (CUDA)
def test_step_gives_the_losses_and_gradients_of_the_straightforward_computation(monkeypatch, attention, min_prefix,
                                                                                one_pass):
    from tunechat.personalize.reference import ReferenceCache

    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", min_prefix)
    by_segments: list[bool] = []
    original = train._by_segments

    def choose(*args) -> bool:
        by_segments.append(original(*args) and attention != "sdpa-row")
        return by_segments[-1]

    monkeypatch.setattr(train, "_by_segments", choose)
    model = tiny_lora_model(attention.removesuffix("-row"))
    recipe = get_recipe(None)  # the default: replay and KL (weight 2)
    reference = ReferenceCache()
    # The step fills the references itself, in the packed pass with the adapter off.
    done = train.backward_step(model, STEP_FACTS, STEP_NEGATIVES, STEP_REPLAY, recipe, reference, 0, "cpu",
                               one_pass=one_pass)
    assert len(reference) == len(STEP_REPLAY)
    packed = grads_of(model)
    model.zero_grad(set_to_none=True)
    loss, per_fact = straightforward_loss(model, STEP_FACTS + STEP_NEGATIVES, STEP_REPLAY, recipe, reference)
    loss.backward()
    plain = grads_of(model)
    assert torch.allclose(done.loss, loss.detach(), rtol=1e-4)
    assert torch.allclose(done.fact_losses, per_fact[:len(STEP_FACTS)].detach(), rtol=1e-4)
    examples = STEP_FACTS + STEP_NEGATIVES + STEP_REPLAY
    passes = 1 if one_pass else 2
    shared = len(PREFIX) * (len(examples) - passes) if min_prefix <= len(PREFIX) else 0  # the prefix once a pass
    assert done.tokens == sum(len(e.input_ids) for e in examples) - shared
    for name, grad in plain.items():
        assert torch.allclose(packed[name], grad, rtol=1e-4, atol=1e-6), name
    assert any(g.abs().sum() > 0 for n, g in packed.items() if "lora_A" in n)
    assert by_segments == [attention == "sdpa"] * passes  # the facts' pass and the replay's, or the one


def test_train_step_updates_as_clipped_adamw_on_the_straightforward_gradients():
    """A whole step (fused AdamW where torch has it) moves the adapters as the plain loop would."""
    from tunechat.personalize.reference import ReferenceCache

    recipe = get_recipe(None)
    reference = ReferenceCache()
    stepped, plain = tiny_lora_model(), tiny_lora_model()
    params = [p for p in stepped.parameters() if p.requires_grad]
    result = train.train_step(stepped, train.optimizer_for(params, recipe, "cpu"), params, STEP_FACTS, [],
                              STEP_REPLAY, recipe, reference, 0, "cpu")
    plain_params = [p for p in plain.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(plain_params, lr=recipe.lr, weight_decay=0.0, foreach=False)
    loss, per_fact = straightforward_loss(plain, STEP_FACTS, STEP_REPLAY, recipe, reference)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(plain_params, 1.0, foreach=False)
    optimizer.step()
    assert result.fact_losses == pytest.approx(per_fact.tolist(), rel=1e-4)
    assert result.reproduced is False and result.tokens == len(PREFIX) * 2 + sum(
        len(e.input_ids) - len(PREFIX) for e in STEP_FACTS + STEP_REPLAY)
    for (name, p), q in zip(stepped.named_parameters(), plain.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name
    assert any(not torch.equal(p, q) for p, q in zip(stepped.parameters(), tiny_lora_model().parameters()))


def test_the_packed_head_gives_the_models_own_logits_softcapped_or_not():
    """The head at answer rows only must be the model's own head: Gemma 2 caps its logits
    (final_logit_softcapping), and a loss over uncapped logits would train another model."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=128, attn_implementation="eager")
    gemma = Gemma2ForCausalLM(Gemma2Config(**common, final_logit_softcapping=1.5, query_pre_attn_scalar=8))
    llama = LlamaForCausalLM(tiny_lora_model().base_model.model.config)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    rows = torch.tensor([2, 4, 5])
    for model in (gemma, llama):
        with torch.no_grad():
            whole = model(input_ids=ids).logits[0].index_select(0, rows)
            packed = train._row_logits(model, {"input_ids": ids}, rows)
        assert torch.allclose(packed, whole, atol=1e-5), type(model).__name__
    with torch.no_grad():  # the cap changes these logits: uncapped, the head gives others
        uncapped = gemma.lm_head(gemma.model(input_ids=ids).last_hidden_state)[0].index_select(0, rows)
        capped = gemma(input_ids=ids).logits[0].index_select(0, rows)
    assert not torch.allclose(uncapped, capped, atol=1e-3) and float(capped.abs().max()) <= 1.5


WINDOW = 6  # shorter than the shared prefix and than every example


def _windowed_model(family: str, attention: str, window: int):
    from transformers import Gemma2Config, Gemma2ForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=128, sliding_window=window,
                  attn_implementation="eager" if attention == "eager" else "sdpa")
    if family == "gemma2":  # layer 0 slides, layer 1 attends to everything
        return Gemma2ForCausalLM(Gemma2Config(**common, query_pre_attn_scalar=8, attn_logit_softcapping=None)).eval()
    return MistralForCausalLM(MistralConfig(**common)).eval()


# Gemma 2 runs eager attention only (transformers has no sdpa for it: soft-capping)
@pytest.mark.parametrize("family, attention", [("gemma2", "eager"), ("mistral", "sdpa"), ("mistral", "sdpa-row"),
                                               ("mistral", "eager")])
@pytest.mark.parametrize("min_prefix", [4, 10_000])
def test_the_packed_pass_keeps_a_sliding_window_shorter_than_the_examples(monkeypatch, family, attention,
                                                                         min_prefix):
    """Gemma 2's sliding-window layers between full ones, and Mistral's window on every layer:
    each answer token's loss in the packed pass is the one the model gives the example alone
    and whole (transformers' own masks, as llama.cpp computes). A mask without the window
    would train a model llama.cpp does not run, and the losses would be those of the same
    weights with no window."""
    import torch.nn.functional as F

    model = _windowed_model(family, attention, WINDOW)
    unwindowed = _windowed_model(family, attention, 128)
    unwindowed.load_state_dict(model.state_dict())

    def alone(m):
        with torch.no_grad():
            losses = []
            for e in BATCH:
                logits = m(input_ids=torch.tensor([e.input_ids])).logits[0, :-1]
                labels = torch.tensor(e.labels[1:])
                losses.append(F.cross_entropy(logits[labels != IGNORE], labels[labels != IGNORE], reduction="none"))
            return torch.cat(losses)

    want, without_window = alone(model), alone(unwindowed)
    assert not torch.allclose(want, without_window, atol=1e-3)
    monkeypatch.setattr(train, "MIN_SHARED_PREFIX", min_prefix)
    if attention == "sdpa-row":
        monkeypatch.setattr(train, "_by_segments", lambda implementation, device: False)
    with torch.no_grad():
        run = train._forward(model, BATCH, 0, "cpu", None)
    assert torch.allclose(run.per_token, want, atol=1e-5)


def _without_fused_forwards(model):
    """Run with every module's own forward (the fused ones, set per instance, taken away)."""
    import contextlib

    @contextlib.contextmanager
    def plain():
        saved = {m: m.__dict__.pop("forward") for m in model.modules() if "forward" in m.__dict__}
        try:
            yield
        finally:
            for m, forward in saved.items():
                m.forward = forward

    return plain()


def test_the_fused_lora_forward_is_peft_s_forward_and_steps_aside_when_peft_must_decide():
    """``add_lora`` gives every LoRA layer one addmm for base, product and scaling: the same
    outputs and gradients as peft's own forward; with the adapter disabled (the KL term's base
    side) or merged, peft's forward runs."""
    from peft.tuners.lora import Linear as LoraLinear

    model = tiny_lora_model()
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert layers and all("forward" in m.__dict__ for m in layers)  # every one fused
    ids = torch.tensor([[5, 17, 3, 44, 9, 60, 2]])

    def logits_and_grads():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits
        logits.square().mean().backward()
        return logits.detach(), grads_of(model)

    fused, fused_grads = logits_and_grads()
    with _without_fused_forwards(model):
        plain, plain_grads = logits_and_grads()
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        with model.disable_adapter():
            disabled = model(input_ids=ids).logits
        for m in layers:
            m.merge()
        merged = model(input_ids=ids).logits
        for m in layers:
            m.unmerge()
        again = model(input_ids=ids).logits
    assert not torch.allclose(disabled, fused, atol=1e-3)  # the adapter changes the answer...
    torch.testing.assert_close(merged, fused, rtol=1e-5, atol=1e-5)  # ...and merged weights compute the same
    torch.testing.assert_close(again, fused, rtol=1e-6, atol=1e-6)


def test_the_adapters_start_from_the_recipe_s_seed():
    """The same job gives the same model: peft draws the A matrices from torch's global
    generator, which add_lora seeds with the recipe's seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

    def adapters(seed: int, before: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(before)  # whatever ran before
        model = train.add_lora(LlamaForCausalLM(config), get_recipe("replay-kl").with_(seed=seed))
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    first, again, other = adapters(0, before=1), adapters(0, before=2), adapters(1, before=1)
    assert first and all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
