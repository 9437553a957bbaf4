"""A GGUF base dequantized by tunechat.personalize.dequantize is the folder transformers' own
GGUF loader would give: every tensor equal (float32 exactly, bfloat16 as transformers' cast of
it), the same config.json and tokenizer files (but for the word lookup before merging that
llama.cpp does under Llama 3's pre-tokenizer, ``merges_as_llama_cpp``), the same logits; for
the embedded model and for tiny zoo models (tests/zoo.py) of the families whose mapping
differs: llama 3 (q/k permuted, untied, ``rope_freqs`` in the file), qwen2 (biases, no
permutation), gemma2 (norm offset), phi3 (fused qkv and gate/up), each from a Q4_K_M file
written by llama.cpp's quantizer.
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest

from tests.zoo import Zoo
from tunechat.personalize.dequantize import DequantizeError, iter_state, write_hf_folder

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
ZOO_FAMILIES = ("llama3", "qwen2", "gemma2", "phi3")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def _transformers_load(gguf_path: Path, config: dict | None = None):
    """The model, config dict and tokenizer as transformers loads them from the GGUF itself
    (with ``config`` instead of its own reading of the header, when given)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    given = {} if config is None else {"config": AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})}
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                                 **given)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    return model.eval(), config, tokenizer


def _logits(model, prompts: list[list[int]]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(input_ids=torch.tensor([ids])).logits[0].float().numpy() for ids in prompts])


def _assert_same_folder(gguf_path: Path, folder: Path, tmp_path: Path, prompts: list[list[int]],
                        given: dict | None = None) -> None:
    """``folder`` (written by write_hf_folder) against transformers' loader on ``gguf_path``."""
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    from tunechat.convert.header import read_header
    from tunechat.personalize.dequantize import merges_as_llama_cpp, strips_as_llama_cpp

    reference, config, tokenizer = _transformers_load(gguf_path, given)
    merges_as_llama_cpp(tokenizer, read_header(gguf_path))  # where the folder departs from transformers
    expected = {k: v.numpy() for k, v in reference.state_dict().items()}
    got = load_file(folder / "model.safetensors")
    tied = bool(config.get("tie_word_embeddings"))
    assert set(got) == set(expected) - ({"lm_head.weight"} if tied else set())
    for name, weights in got.items():
        assert weights.dtype == np.float32 and np.array_equal(weights, expected[name]), name
    if tied:
        assert np.array_equal(got["model.embed_tokens.weight"], expected["lm_head.weight"])

    assert json.loads((folder / "config.json").read_text(encoding="utf-8")) == json.loads(json.dumps(config))
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    strips_as_llama_cpp(tmp_path / "tokenizer", read_header(gguf_path))  # and here (Phi-3's)
    for name in TOKENIZER_FILES:
        assert filecmp.cmp(folder / name, tmp_path / "tokenizer" / name, shallow=False), name

    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    mine, theirs = _logits(loaded, prompts), _logits(reference, prompts)
    assert np.array_equal(mine.argmax(-1), theirs.argmax(-1))
    assert float(np.abs(mine - theirs).max()) <= 1e-4 * float(np.abs(theirs).max())


@pytest.mark.slow
def test_the_embedded_model_dequantizes_as_transformers_loads_it(base_model, tmp_path):
    from tunechat.personalize.base import load_tokenizer

    folder = tmp_path / "base"
    write_hf_folder(base_model, folder)
    tokenizer = load_tokenizer(folder)
    prompts = [tokenizer(text)["input_ids"] for text in
               ("<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
                "def fibonacci(n):\n    return")]
    _assert_same_folder(base_model, folder, tmp_path, prompts)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_FAMILIES)
def test_zoo_models_dequantize_as_transformers_loads_them(zoo, name, tmp_path):
    model = zoo[name]
    source = model.gguf("Q4_K_M")
    folder = tmp_path / "base"
    write_hf_folder(source, folder)
    _assert_same_folder(source, folder, tmp_path, model.prompts)


@pytest.mark.slow
def test_a_given_config_is_the_one_written_and_loaded(zoo, tmp_path):
    """transformers' reading of a llama 3 GGUF loses its RoPE scaling (only ``rope_freqs`` holds
    it); the config the model was built from, given, is what the folder holds and loads with."""
    model = zoo["llama3"]
    source = model.gguf("Q4_K_M")
    truth = json.loads((model.folder / "config.json").read_text(encoding="utf-8"))
    write_hf_folder(source, tmp_path / "base", config=truth)
    written = json.loads((tmp_path / "base" / "config.json").read_text(encoding="utf-8"))
    assert written["rope_parameters"] == truth["rope_parameters"]
    assert written["rope_parameters"]["rope_type"] == "llama3"
    _assert_same_folder(source, tmp_path / "base", tmp_path, model.prompts, given=truth)


@pytest.mark.slow
def test_bfloat16_is_transformers_cast_of_the_float32_weights(zoo, tmp_path):
    import torch
    from safetensors.torch import load_file

    source = zoo["qwen2"].gguf("Q4_K_M")
    write_hf_folder(source, tmp_path / "bf16", dtype="bfloat16")
    got = load_file(tmp_path / "bf16" / "model.safetensors")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text(encoding="utf-8"))
    assert config["dtype"] == "bfloat16"
    for name, weights in iter_state(source):
        assert got[name].dtype == torch.bfloat16
        assert torch.equal(got[name], torch.from_numpy(weights).to(torch.bfloat16)), name


def test_an_unsupported_dtype_is_refused_before_any_file_is_written(base_model, tmp_path):
    with pytest.raises(DequantizeError, match="float32"):
        write_hf_folder(base_model, tmp_path / "out", dtype="int8")
    assert not (tmp_path / "out").exists()
