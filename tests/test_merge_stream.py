"""Merging and writing one tensor at a time give what the whole-model path gives: the same
GGUF bytes from a LazyState as from a dict, the same merged weights as peft's merge_and_unload,
and the same relative change against the folder."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tests.zoo import Zoo
from tunechat.convert.writer import LazyState

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def peft_model(zoo):
    """The qwen2 zoo model (tied embedding, q/k/v biases) with rank-4 adapters on every
    projection, B drawn at random (peft starts it at zero)."""
    import torch

    from tunechat.personalize import train
    from tunechat.personalize.recipe import get_recipe

    model = train.add_lora(copy.deepcopy(zoo["qwen2"].hf_model), get_recipe(None).with_(rank=4, alpha=8))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return model


@pytest.mark.parametrize("outtype", ["f16", "q8_0", "f32"])
def test_a_lazy_state_writes_the_same_bytes_as_a_dict(zoo, tmp_path, monkeypatch, outtype):
    import tunechat.convert.writer as writer

    model = zoo["qwen2"]
    state = model.state
    asked: list[str] = []

    def load(name: str) -> np.ndarray:
        asked.append(name)
        return state[name]

    monkeypatch.setattr(writer, "QUANTIZE_ROWS", 100)  # the embedding's rows quantized in several parts
    eager = model.write(tmp_path / "dict.gguf", outtype)
    lazy = model.write(tmp_path / "lazy.gguf", outtype,
                       state=LazyState({k: v.shape for k, v in state.items()}, load))
    assert eager.read_bytes() == lazy.read_bytes()
    assert sorted(asked) == sorted(k for k in state if k != "lm_head.weight")  # each once


def test_merged_weights_are_peft_merge_and_unload(peft_model):
    from tunechat.personalize.merge import merged_weights

    lazy = merged_weights(peft_model)
    expected = {k: v.detach().numpy() for k, v in copy.deepcopy(peft_model).merge_and_unload().state_dict().items()}
    assert list(lazy) == list(expected)
    for key, want in expected.items():
        assert lazy.shapes[key] == want.shape
        np.testing.assert_allclose(lazy[key], want, rtol=1e-5, atol=1e-6, err_msg=key)
    changed = [k for k in expected if "proj.weight" in k]
    assert changed and all(not np.array_equal(lazy[k], peft_model.get_base_model().state_dict()[
        k.replace("proj.weight", "proj.base_layer.weight")].numpy()) for k in changed)


def test_the_relative_change_is_read_from_the_folder_in_row_blocks(zoo, peft_model, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from tunechat.personalize import checks
    from tunechat.personalize.merge import merged_weights

    lazy = merged_weights(peft_model)
    base = {k: v.to(torch.bfloat16) for k, v in zoo["qwen2"].hf_model.state_dict().items() if k != "lm_head.weight"}
    save_file(base, str(tmp_path / "model.safetensors"))
    num = sum(float(np.linalg.norm(lazy[k] - v.float().numpy()) ** 2) for k, v in base.items() if v.ndim == 2)
    den = sum(float(np.linalg.norm(v.float().numpy()) ** 2) for v in base.values() if v.ndim == 2)
    monkeypatch.setattr(checks, "DELTA_ROWS", 1000)  # the embedding in several blocks
    # float32 norms, summed in another order: equal to ~1e-5
    assert checks.relative_delta_to_folder(lazy, tmp_path) == pytest.approx((num / den) ** 0.5, rel=1e-4)


def test_the_base_read_without_mapping_is_the_base_transformers_maps(zoo):
    import torch
    from transformers import AutoModelForCausalLM

    from tunechat.personalize.base import load_base

    folder = zoo["qwen2"].folder
    model, _ = load_base(folder, "cpu", "float32")
    mapped = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    got, want = model.state_dict(), mapped.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert not model.training and model.config.to_dict() == mapped.config.to_dict()
