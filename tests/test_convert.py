"""GGUF conversion: the base written back gives the same logits; bad inputs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convert.architectures import UnsupportedArchitecture, spec_for
from convert.verify import check_metadata, logit_errors
from convert.writer import permute_for_llama_cpp, write_gguf

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

    from personalize.base import cached_base_folder
    from tunechat.registry import embedded_model_path

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
    from personalize.checks import gguf_last_logits
    from tunechat.engine import Engine

    state, config = base_state
    out = tmp_path / "base-f16.gguf"
    write_gguf(state, config, base_model, out, "f16")
    assert check_metadata(base_model, out).passed
    prompts = ["<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
               "The quick brown fox", "def fibonacci(n):", "Once upon a time, in a land far away,"]
    original, rewritten = Engine(base_model), Engine(out)
    ids = [list(original.llm.tokenize(p.encode(), add_bos=False, special=True)) for p in prompts]
    agree, worst = logit_errors(gguf_last_logits(rewritten.llm, ids), gguf_last_logits(original.llm, ids))
    assert agree == 1.0 and worst <= 0.15, (agree, worst)
    question = [{"role": "user", "content": "What is the capital of Japan?"}]
    assert original.complete(question) == rewritten.complete(question)


def test_unsupported_architecture_writes_no_file(tmp_path, base_state, base_model):
    state, config = base_state
    out = tmp_path / "never.gguf"
    with pytest.raises(UnsupportedArchitecture):
        write_gguf(state, {**config, "model_type": "falcon"}, base_model, out, "f16")
    assert not out.exists()
