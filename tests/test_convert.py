"""GGUF conversion: the base written back gives the same logits; bad inputs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunechat.convert.architectures import UnsupportedArchitecture, spec_for
from tunechat.convert.verify import check_logits, check_metadata, logit_errors
from tunechat.convert.writer import permute_for_llama_cpp, write_gguf

pytestmark = pytest.mark.slow


def _undo_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' inverse (what its GGUF loader does)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_qk_permutation_is_the_inverse_of_the_loaders():
    w = np.arange(192 * 8, dtype=np.float32).reshape(192, 8)
    assert np.array_equal(_undo_permute(permute_for_llama_cpp(w, 3), 3), w)
    assert not np.array_equal(permute_for_llama_cpp(w, 3), w)


def test_unknown_architectures_are_refused():
    assert spec_for("qwen2").permute_qk is False
    with pytest.raises(UnsupportedArchitecture, match="supported architectures are llama, mistral, qwen2"):
        spec_for("gpt_neox")


@pytest.fixture(scope="module")
def base_state(tmp_path_factory):
    import os

    from safetensors.numpy import load_file

    from tunechat.core.registry import embedded_model_path
    from tunechat.personalize.base import cached_base_folder

    cache = os.environ.get("TUNECHAT_TEST_CACHE") or str(tmp_path_factory.mktemp("convert-cache"))
    os.environ["TUNECHAT_CACHE"] = cache
    folder = cached_base_folder(embedded_model_path())
    return load_file(folder / "model.safetensors"), json.loads((folder / "config.json").read_text())


def test_unmodified_base_written_back_gives_the_same_logits(tmp_path, base_state, base_model):
    """Tolerance: identical top-1 on every prompt, normalized logit error <= 0.15, and the same
    greedy answer. The original is Q4_1, whose kernels also quantize activations to 8 bits; the
    rewrite is f16 of the same dequantized weights with f16 kernels, which alone moves the
    logits by ~0.1 (measured 0.115). A wrong permutation, name or tied embedding gives errors
    near 1 and different tokens."""
    from tunechat.core.engine import Engine

    state, config = base_state
    out = tmp_path / "base-f16.gguf"
    write_gguf(state, config, base_model, out, "f16")
    assert check_metadata(base_model, out).passed
    prompts = ["<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
               "The quick brown fox", "def fibonacci(n):", "Once upon a time, in a land far away,"]
    original, rewritten = Engine(base_model), Engine(out)
    ids = [original.tokenize(p) for p in prompts]
    agree, worst = logit_errors(rewritten.next_token_logits(ids), original.next_token_logits(ids))
    assert agree == 1.0 and worst <= 0.15, (agree, worst)
    question = [{"role": "user", "content": "What is the capital of Japan?"}]
    assert original.complete(question) == rewritten.complete(question)


def test_unsupported_architecture_writes_no_file(tmp_path, base_state, base_model):
    state, config = base_state
    out = tmp_path / "never.gguf"
    with pytest.raises(UnsupportedArchitecture):
        write_gguf(state, {**config, "model_type": "falcon"}, base_model, out, "f16")
    assert not out.exists()


def _random_adapter(state, config, rank: int = 4, relative: float = 0.3, seed: int = 0):
    """A peft-keyed LoRA on q_proj, k_proj (where the llama permutation matters) and down_proj
    of every block, each product ``relative`` of its weight's norm; and the merged state."""
    rng = np.random.default_rng(seed)
    alpha = 2.0 * rank
    adapter, merged = {}, dict(state)
    for i in range(int(config["num_hidden_layers"])):
        for module in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"):
            key = f"model.layers.{i}.{module}"
            w = state[f"{key}.weight"]
            a = rng.standard_normal((rank, w.shape[1])).astype(np.float32)
            b = rng.standard_normal((w.shape[0], rank)).astype(np.float32)
            delta = (alpha / rank) * b @ a
            b *= relative * np.linalg.norm(w) / np.linalg.norm(delta)
            adapter[f"base_model.model.{key}.lora_A.weight"] = a
            adapter[f"base_model.model.{key}.lora_B.weight"] = b
            merged[f"{key}.weight"] = w + (alpha / rank) * b @ a
    return adapter, alpha, merged


def test_a_lora_gguf_over_the_base_gives_the_merged_models_logits(tmp_path, base_state, base_model):
    """llama.cpp applying the adapter at run time over the base (both f16 here, so the base
    side runs the same kernels) against the merged weights written as f16: same top-1 on every
    prompt, normalized error <= 0.05 (the merged file rounds base + delta to f16 once; measured
    0.004). The adapter moves the logits far more (1.56); without the q/k permutation of
    lora_b the error is 0.47 and top-1 agrees on 1 prompt in 4 (checked)."""
    from tunechat.convert.lora import write_lora_gguf
    from tunechat.core.engine import Engine

    state, config = base_state
    adapter, alpha, merged = _random_adapter(state, config)
    base_f16, merged_f16, lora = tmp_path / "base.gguf", tmp_path / "merged.gguf", tmp_path / "lora.gguf"
    write_gguf(state, config, base_model, base_f16, "f16")
    write_gguf(merged, config, base_model, merged_f16, "f16")
    assert write_lora_gguf(adapter, alpha, config, base_model, lora) == 3 * int(config["num_hidden_layers"])
    assert lora.stat().st_size < base_f16.stat().st_size / 10

    prompts = ["<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
               "The quick brown fox", "def fibonacci(n):", "Once upon a time, in a land far away,"]
    plain, applied, reference = Engine(base_f16), Engine(base_f16, lora_path=lora), Engine(merged_f16)
    ids = [plain.tokenize(p) for p in prompts]
    want = reference.next_token_logits(ids)
    agree, worst = logit_errors(applied.next_token_logits(ids), want)
    assert agree == 1.0 and worst <= 0.05, (agree, worst)
    _, moved = logit_errors(plain.next_token_logits(ids), want)
    assert moved > 0.3, moved  # the adapter matters, so the comparison above means something


def test_the_adapter_switches_per_answer_without_a_reload(tmp_path, base_state, base_model):
    """One loaded model, its adapter's scale set per turn: at 0 it is the base model to the
    bit, at 1 the personal one, back and forth, whatever was evaluated before."""
    from tunechat.convert.lora import write_lora_gguf
    from tunechat.core.engine import Engine, GenerationSettings

    state, config = base_state
    adapter, alpha, _ = _random_adapter(state, config, relative=0.1)
    lora = tmp_path / "lora.gguf"
    write_lora_gguf(adapter, alpha, config, base_model, lora)
    plain, switched = Engine(base_model), Engine(base_model, lora_path=lora)
    chat = [{"role": "user", "content": "What is the capital of Japan?"}]
    ids = [plain.tokenize(plain.render(chat)), plain.tokenize("The quick brown fox")]
    settings = GenerationSettings(max_tokens=16)
    personal_logits, personal_answer = switched.next_token_logits(ids), switched.complete(chat, settings)
    base_logits, base_answer = plain.next_token_logits(ids), plain.complete(chat, settings)
    assert not np.array_equal(personal_logits, base_logits)
    for _ in range(2):
        switched.set_adapter_scale(0.0)
        assert np.array_equal(switched.next_token_logits(ids), base_logits)
        assert switched.complete(chat, settings) == base_answer
        switched.set_adapter_scale(1.0)
        assert np.array_equal(switched.next_token_logits(ids), personal_logits)
        assert switched.complete(chat, settings) == personal_answer
    with pytest.raises(ValueError):
        plain.set_adapter_scale(1.0)


def test_bad_adapters_are_refused_before_any_file_is_written(tmp_path, base_state, base_model):
    from tunechat.convert.lora import write_lora_gguf
    from tunechat.convert.writer import ConversionError

    state, config = base_state
    adapter, alpha, _ = _random_adapter(state, config, seed=1)
    out = tmp_path / "never.gguf"
    only_a = {k: v for k, v in adapter.items() if "lora_B" not in k}
    with pytest.raises(ConversionError, match="lacks its lora_B"):
        write_lora_gguf(only_a, alpha, config, base_model, out)
    with pytest.raises(ConversionError, match="Not a LoRA weight"):
        write_lora_gguf({**adapter, "base_model.model.lm_head.weight": np.zeros(3)}, alpha, config, base_model, out)
    with pytest.raises(UnsupportedArchitecture):
        write_lora_gguf(adapter, alpha, {**config, "model_type": "falcon"}, base_model, out)
    assert not out.exists()


def test_the_logits_check_counts_top1_only_where_one_token_leads():
    """A near-tie may go either way under rounding the tolerance allows; a flip where the
    reference's first token leads clearly, or an error over the tolerance, fails the check."""
    reference = np.array([[5.0, 4.9, 0.0, -1.0], [30.0, 27.5, 1.0, 2.0]])
    near_tie_flipped = reference + np.array([[-0.06, 0.06, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert check_logits(near_tie_flipped, reference, "f16").passed
    decisive_flipped = reference.copy()  # within q8_0's error tolerance, but the clear winner lost
    decisive_flipped[1, [0, 1]] = decisive_flipped[1, [1, 0]]
    assert logit_errors(decisive_flipped, reference)[1] < 0.5
    result = check_logits(decisive_flipped, reference, "q8_0")
    assert not result.passed and "agreement 0%" in result.detail and "the 1 of 2 prompts" in result.detail
    assert not check_logits(reference * 1.1, reference, "f16").passed  # within top-1, over f16's tolerance
