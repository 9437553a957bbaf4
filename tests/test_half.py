"""The float16 form of the frozen base (tunechat.personalize.half): half the memory, float32
arithmetic, the same personalization, and a merge that writes the exact base."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.zoo import Zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


@pytest.mark.parametrize("blocks", [1, 10])
def test_a_half_linear_layer_computes_in_float32_and_keeps_only_float16_for_its_backward(monkeypatch, blocks):
    import torch

    from tunechat.personalize import half

    if blocks > 1:
        monkeypatch.setattr(half, "WIDENED_ELEMENTS", 64)  # 40 rows of 16: ten blocks of four rows
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(40, 16, generator=gen).half(), torch.randn(40, generator=gen).half()
    layer = torch.nn.Linear(16, 40)
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    layer.bias = torch.nn.Parameter(bias, requires_grad=False)
    layer.__class__ = half.HalfLinear
    x = torch.randn(3, 5, 16, generator=gen, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = layer(x)
    expected = torch.nn.functional.linear(x_ref, weight.float(), bias.float())
    assert out.dtype == torch.float32 and len(half._row_chunks(layer.weight)) == blocks
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert [t.dtype for t in out.grad_fn.saved_tensors] == [torch.float16]  # no float32 copy kept
    grad = torch.randn(out.shape, generator=gen)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-5)


def test_the_float16_form_holds_matrices_in_half_and_every_other_weight_exact(zoo):
    import torch
    from safetensors.torch import load_file

    from tunechat.personalize.base import load_base

    folder = zoo["qwen2"].folder  # q/k/v biases, a tied embedding
    files = {k: v for path in folder.glob("*.safetensors") for k, v in load_file(str(path)).items()}
    full, _ = load_base(folder, "cpu", "float32")
    held, _ = load_base(folder, "cpu", "float16")
    matrices = {name for name, module in held.named_modules() if isinstance(module, (torch.nn.Linear,
                                                                                     torch.nn.Embedding))}
    for name, param in held.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if owner in matrices and name.endswith(".weight"):
            assert param.dtype == torch.float16, name
        else:
            assert param.dtype == torch.float32, name
            assert torch.equal(param, files[name].float()), name  # read back exactly, not through float16
    size = lambda model: sum(p.numel() * p.element_size() for p in model.parameters())  # noqa: E731
    assert size(held) < 0.55 * size(full)
    ids = torch.tensor([zoo["qwen2"].prompts[0]])
    with torch.no_grad():
        a, b = full(input_ids=ids).logits[0, -1], held(input_ids=ids).logits[0, -1]
    assert b.dtype == torch.float32 and torch.argmax(a) == torch.argmax(b)
    assert (a - b).abs().max() < 0.01 * a.abs().max()


def test_the_merge_reads_the_exact_base_from_the_folder_whatever_form_trained(zoo):
    """A float16-held model merged with the folder's weights gives the float32 model's merge;
    merged from its own float16 weights it would not."""
    import torch

    from tunechat.personalize import train
    from tunechat.personalize.base import load_base
    from tunechat.personalize.merge import folder_weights, merged_weights
    from tunechat.personalize.recipe import get_recipe

    folder = zoo["qwen2"].folder
    models = [train.add_lora(load_base(folder, "cpu", form)[0], get_recipe(None).with_(rank=4))
              for form in ("float32", "float16")]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        factors = dict(models[1].named_parameters())
        for name, param in models[0].named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
            if "lora_" in name:
                factors[name].copy_(param)  # the same adapter over either form
    exact, held = merged_weights(models[0]), merged_weights(models[1], folder_weights(folder))
    rounded = merged_weights(models[1])
    assert set(exact) == set(held)
    for name in exact:
        np.testing.assert_array_equal(held[name], exact[name], err_msg=name)
    assert any(not np.array_equal(rounded[name], exact[name]) for name in exact)


@pytest.mark.slow
@pytest.mark.parametrize("name, source", [("qwen2", "gguf"), ("llama", "hf"), ("gemma2", "gguf")])
def test_the_float16_form_personalizes_end_to_end(zoo, name, source, home, tmp_path, monkeypatch):
    from tests.test_families import GGUF_BASE, OUTTYPE, PAIRS, RECIPE
    from tunechat.personalize import worker
    from tunechat.personalize.progress import Reporter
    from tunechat.personalize.spec import JobSpec, Probes

    base = zoo[name].folder if source == "hf" else zoo[name].gguf(GGUF_BASE[name])
    monkeypatch.setenv("TUNECHAT_CACHE", str(tmp_path / "cache"))  # no float32 cache of it from other tests
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    spec = JobSpec(pairs=PAIRS, base_path=base, recipe="replay-kl", recipe_overrides=RECIPE, outtype=OUTTYPE[source],
                   probes=Probes(taught=[]), skip_eval=True, weights="float16")
    spec.write(job_dir)
    said = io.StringIO()
    manifest = worker.run(job_dir, Reporter(said))
    assert "base weights on cpu in float16 (as asked)" in said.getvalue()
    failed = [(c.name, c.detail) for c in manifest.checks if not c.passed]
    assert not failed, failed
    assert manifest.train.weights == "float16" and manifest.train.stopped_early, manifest.train.losses
    if source == "gguf":  # trained from the float16 cache of the GGUF, no float32 one written
        from tunechat.core import paths
        from tunechat.core.fingerprint import base_fingerprint

        name = f"base-{base_fingerprint(base)[:16]}"
        assert (paths.cache_dir() / f"{name}-float16").is_dir() and not (paths.cache_dir() / name).exists()


@pytest.mark.slow
def test_the_float16_cache_of_a_gguf_base_holds_its_matrices_in_half_and_the_rest_exact(zoo, home, tmp_path,
                                                                                          monkeypatch):
    """What the float16 form trains from: each matrix of the float32 cache rounded to float16
    (half the disk), each norm and bias as it is there; a float32 cache already there serves
    the float16 form as well, and is not written twice."""
    import shutil

    import torch
    from safetensors import safe_open

    from tunechat.personalize.base import cached_base_folder

    monkeypatch.setenv("TUNECHAT_CACHE", str(tmp_path / "cache"))  # no float32 cache of it from other tests
    path = zoo["qwen2"].gguf("Q4_K_M")  # biases and norms among its tensors
    half, full = cached_base_folder(path, dtype="float16"), cached_base_folder(path)
    assert half != full
    with safe_open(str(half / "model.safetensors"), "pt") as h, safe_open(str(full / "model.safetensors"), "pt") as f:
        assert set(h.keys()) == set(f.keys())
        vectors = 0
        for key in f.keys():
            kept, exact = h.get_tensor(key), f.get_tensor(key)
            if exact.ndim >= 2:
                assert kept.dtype == torch.float16 and torch.equal(kept, exact.half()), key
            else:
                assert kept.dtype == torch.float32 and torch.equal(kept, exact), key
                vectors += 1
        assert vectors > 0
    size = lambda folder: (folder / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.52 * size(full)
    shutil.rmtree(half)
    assert cached_base_folder(path, dtype="float16") == full


@pytest.mark.parametrize("form", ["float32", "float16"])
def test_recomputed_layers_give_the_gradients_kept_ones_do(zoo, form):
    """The float16 form's recomputation (transformers' checkpointing) over the packed row with
    attention example by example: the same loss and LoRA gradients as keeping every layer."""
    import copy

    import torch

    from tests.test_families import PAIRS
    from tunechat.core.chat_template import CHATML_TEMPLATE
    from tunechat.personalize import data, train
    from tunechat.personalize.base import load_base
    from tunechat.personalize.recipe import get_recipe
    from tunechat.personalize.reference import ReferenceCache

    model, tokenizer = load_base(zoo["qwen2"].folder, "cpu", form)
    model = train.add_lora(model, get_recipe(None).with_(rank=4))
    info = data.TemplateInfo(CHATML_TEMPLATE, tokenizer.bos_token or "", tokenizer.eos_token or "")
    facts = data.build_examples(tokenizer, info, PAIRS + [("Where do I live?", "In Oslo.")], "fact")
    recomputed = copy.deepcopy(model)
    train.recompute_layers(recomputed)
    results = []
    for m in (model, recomputed):
        m.train()
        done = train.backward_step(m, facts[:2], facts[2:], [], get_recipe(None), ReferenceCache(), 0, "cpu")
        grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        results.append((done.loss, grads))
    (loss, grads), (loss_again, grads_again) = results
    torch.testing.assert_close(loss_again, loss)
    assert grads.keys() == grads_again.keys() and all(g is not None for g in grads.values())
    for name in grads:
        torch.testing.assert_close(grads_again[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
