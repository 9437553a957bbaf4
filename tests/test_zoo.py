"""Every supported family converts correctly: tiny random models of each (tests/zoo.py) written
as GGUF give, in llama.cpp, the next-token logits transformers gives; metadata, LoRA adapters,
Q4_K_M and chat templates survive; a mapping bug or a dropped field is caught; the rest is
refused before any file is written. A Llama 2 style folder (sentencepiece tokenizer.model with
byte fallback and scores) and the byte-level BPE kinds of SmolLM2, Llama 3 and Qwen2 tokenize in
llama.cpp as in transformers, under the pre-tokenizer llama.cpp's converter names for them; and
each kind converts, as every family's LoRA adapter does, as llama.cpp's own converters convert it
(with $LLAMA_CPP_SOURCE).

Tolerances (worst normalized logit error ||a - b|| / ||b|| over the zoo prompts, top-1
agreement) are the verify gate's (tunechat.convert.verify): f16 <= 0.03 with every top-1 equal,
q8_0 <= 0.5 with >= 90 % top-1. Measured on the zoo: f16 0.001-0.003, q8_0 0.02-0.08; mapping
bugs 0.3 and more.

Each check runs on the families where it can fail differently, not on the whole cross product:
the f16 logits gate, the metadata, a dropped field and a mapping bug on every family; q8_0,
Q4_K_M, the dequantized write-back and LoRA on the families whose mapping they exercise.
tests/test_families.py runs the rest per family through personalize itself: every family's
Q4_K_M or q8_0 base dequantized for training, a q8_0 merged file and an adapter over the base.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.zoo import (
    CHAT,
    FAMILIES,
    SPM_FAMILIES,
    TEXTS,
    WHOLE_WORDS,
    WHOLE_WORDS_TEXT,
    Zoo,
    copy_gguf,
    is_peaked,
    peakedness,
)
from tunechat.convert.architectures import UnsupportedArchitecture, head_dim, rope_parameters, spec_for
from tunechat.convert.header import decode_value, read_header, read_tensor_bytes
from tunechat.convert.verify import TOKENIZER_PROBE, check_logits, check_metadata, logit_errors
from tunechat.convert.writer import gguf_tensor_name, permute_for_llama_cpp, write_gguf

NAMES = list(FAMILIES)
SPM = "llama2"  # the sentencepiece family of Llama 2's kind (Mistral 7B v0.1's too)
SPM_NAMES = [SPM, *(n for n, f in FAMILIES.items() if f.spm)]
# Representatives: llama (q/k permuted, tied), llama3 (untied, rope_freqs), phi3 (fused
# weights), gemma2 (norm offset, soft-capping, window), qwen3 (q/k norms, NEOX RoPE).
PERMUTED, FUSED = "llama", "phi3"


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def _engine(path, lora=None):
    from tunechat.core.engine import Engine

    return Engine(path, n_ctx=256, lora_path=lora)


_LOGITS: dict[tuple, np.ndarray] = {}


def _llama_logits(path, prompts, lora=None) -> np.ndarray:
    """llama.cpp's next-token logits (kept per file: several tests read the same GGUF's)."""
    key = (str(path), str(lora), tuple(map(tuple, prompts)))
    if key not in _LOGITS:
        engine = _engine(path, lora)
        try:
            _LOGITS[key] = engine.next_token_logits(prompts)
        finally:
            engine.close()
    return _LOGITS[key]


def _undo_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of the writer's q/k permutation (transformers' GGUF loader does this)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# -- the zoo itself -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", [*NAMES, *SPM_FAMILIES])
def test_zoo_models_are_peaked(zoo, name):
    """A near-uniform model would let the logit checks pass on noise: every prompt's top token
    has probability >= 0.5 and leads the runner-up by >= 1 logit, and the prompts' top tokens
    differ (the model reads its input)."""
    logits = zoo[name].hf_logits
    assert is_peaked(logits), (peakedness(logits), logits.argmax(-1))


# -- (a) HF folder -> GGUF ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name, outtype", [*((n, "f16") for n in [*NAMES, *SPM_FAMILIES]), ("llama3", "q8_0"),
                                           ("gemma2", "q8_0")])
def test_hf_folder_as_gguf_gives_the_torch_models_logits(zoo, name, outtype):
    model = zoo[name]
    got = _llama_logits(model.gguf(outtype), model.prompts)
    result = check_logits(got, model.hf_logits, outtype)
    assert result.passed, result.detail
    if outtype == "f16":
        agree, worst = logit_errors(got, model.hf_logits)
        assert agree == 1.0 and worst <= 0.01, (agree, worst)


# -- (b) GGUF -> dequantized by transformers -> GGUF --------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("source", ["Q4_K_M"])
@pytest.mark.parametrize("name", ["llama3"])  # every family through personalize: tests/test_families.py
def test_gguf_written_back_from_its_dequantized_weights_gives_its_logits(zoo, name, source, tmp_path):
    """The personalize path for a GGUF base (users bring Q4_K_M): transformers dequantizes it
    (as cached_base_folder does; its tokenizer half is left out here, tests/test_convert.py runs
    it whole), the writer writes those weights back as f16 with the base's metadata. Q4_K kernels
    round activations to 8 bits, f16 ones don't: error <= 0.15 (measured 0.02-0.04; an
    un-inverted mapping reads near 1) and at most one top-1 of the 6 prompts moved (a near-tie
    of the Q4_K_M model's own)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = zoo[name]
    original = model.gguf(source)
    hf = AutoModelForCausalLM.from_pretrained(original.parent, gguf_file=original.name, dtype=torch.float32)
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    out = tmp_path / "back.gguf"
    write_gguf(state, config, original, out, "f16")
    metadata = check_metadata(original, out)
    assert metadata.passed, metadata.detail
    agree, worst = logit_errors(_llama_logits(out, model.prompts), _llama_logits(original, model.prompts))
    assert agree >= 5 / 6 and worst <= 0.15, (agree, worst)


# -- (c) LoRA adapters --------------------------------------------------------------------------

def _random_adapter(state, rank: int = 4, relative: float = 0.3, seed: int = 0):
    """A peft-keyed LoRA on every 2-D weight of every block (q/k where the llama permutation
    matters, phi3's fused qkv and gate_up), each product ``relative`` of its weight's norm; and
    the merged state."""
    rng = np.random.default_rng(seed)
    alpha = 2.0 * rank
    adapter, merged = {}, dict(state)
    for key, w in state.items():
        if not (key.startswith("model.layers.") and key.endswith(".weight") and w.ndim == 2):
            continue
        module = key[: -len(".weight")]
        a = rng.standard_normal((rank, w.shape[1])).astype(np.float32)
        b = rng.standard_normal((w.shape[0], rank)).astype(np.float32)
        b *= relative * np.linalg.norm(w) / np.linalg.norm((alpha / rank) * b @ a)
        adapter[f"base_model.model.{module}.lora_A.weight"] = a
        adapter[f"base_model.model.{module}.lora_B.weight"] = b
        merged[key] = w + (alpha / rank) * b @ a
    return adapter, alpha, merged


@pytest.mark.slow
@pytest.mark.parametrize("name", [PERMUTED, FUSED, "gemma2"])
def test_a_lora_gguf_over_the_base_gives_the_merged_models_logits(zoo, name, tmp_path):
    """llama.cpp applying the adapter at run time over the f16 base against the merged weights
    written as f16: every top-1 equal, error <= 0.05 (the merged file rounds base + delta to f16
    once); the adapter itself moves the logits by > 0.3."""
    from tunechat.convert.lora import write_lora_gguf

    model = zoo[name]
    adapter, alpha, merged = _random_adapter(model.state)
    lora = tmp_path / "lora.gguf"
    assert write_lora_gguf(adapter, alpha, model.config, model.gguf("f16"), lora) == len(adapter) // 2
    want = _llama_logits(model.write(tmp_path / "merged.gguf", "f16", state=merged), model.prompts)
    agree, worst = logit_errors(_llama_logits(model.gguf("f16"), model.prompts, lora=lora), want)
    assert agree == 1.0 and worst <= 0.05, (agree, worst)
    _, moved = logit_errors(_llama_logits(model.gguf("f16"), model.prompts), want)
    assert moved > 0.3, moved


# -- (d) metadata -------------------------------------------------------------------------------

def expected_metadata(config: dict) -> dict[str, float | int]:
    """Every hyperparameter llama.cpp reads for the family, from the HF config, independently
    of the writer."""
    model_type = config["model_type"]
    arch = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
            "phi3": "phi3"}[model_type]
    rope = rope_parameters(config)
    dim = head_dim(config)
    fields: dict[str, float | int] = {
        f"{arch}.block_count": config["num_hidden_layers"],
        f"{arch}.context_length": config["max_position_embeddings"],
        f"{arch}.embedding_length": config["hidden_size"],
        f"{arch}.feed_forward_length": config["intermediate_size"],
        f"{arch}.attention.head_count": config["num_attention_heads"],
        f"{arch}.attention.head_count_kv": config["num_key_value_heads"],
        f"{arch}.attention.key_length": dim,
        f"{arch}.attention.value_length": dim,
        f"{arch}.rope.dimension_count": int(dim * float(rope.get("partial_rotary_factor") or 1.0)),
        f"{arch}.rope.freq_base": rope["rope_theta"],
        f"{arch}.attention.layer_norm_rms_epsilon": config["rms_norm_eps"],
    }
    if model_type == "gemma2":
        fields[f"{arch}.attn_logit_softcapping"] = config["attn_logit_softcapping"]
        fields[f"{arch}.final_logit_softcapping"] = config["final_logit_softcapping"]
    if model_type in ("gemma2", "phi3"):
        fields[f"{arch}.attention.sliding_window"] = config["sliding_window"]
    return fields


# The fields (and tensors) of each family whose loss changes the zoo model's logits in llama.cpp
# (or stops it loading): a head size, a RoPE base or scaling, soft-capping, gemma2's 16-token
# window. The others (context length, a window longer than the prompts, a final soft-capping
# of 30 that is llama.cpp's default too) are caught by check_metadata alone.
LOGIT_VISIBLE = {
    "llama": ["llama.attention.layer_norm_rms_epsilon"],
    "llama3": ["llama.rope.freq_base", "rope_freqs.weight"],
    "mistral": ["llama.rope.freq_base"],
    "qwen2": ["qwen2.rope.freq_base"],
    "qwen2-untied": ["qwen2.rope.freq_base"],
    "qwen3": ["qwen3.attention.key_length", "qwen3.rope.freq_base"],
    "gemma2": ["gemma2.attention.key_length", "gemma2.attn_logit_softcapping", "gemma2.attention.sliding_window"],
    "phi3": ["phi3.attention.layer_norm_rms_epsilon"],
}


def _metadata_values(path) -> dict[str, object]:
    return {k: decode_value(raw)[0] for k, raw in read_header(path).metadata_raw.items()}


# Each file type of the writer (and llama.cpp's quantizer) on one family; the others at f16.
FIELD_OUTTYPES = {"llama3": ("f16", "q8_0", "Q4_K_M")}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_field_llama_cpp_reads_survives(zoo, name):
    model = zoo[name]
    for outtype in FIELD_OUTTYPES.get(name, ("f16",)):
        values = _metadata_values(model.gguf(outtype))
        for key, want in expected_metadata(model.config).items():
            assert key in values, (outtype, key)
            assert np.isclose(float(values[key]), float(want), rtol=1e-6), (outtype, key, values[key], want)
        assert values["tokenizer.chat_template"] == model.tokenizer.chat_template
    names = {t.name for t in read_header(model.gguf("f16")).tensors}
    assert ("output.weight" in names) != bool(model.config.get("tie_word_embeddings"))
    if rope_parameters(model.config)["rope_type"] == "llama3":
        _assert_rope_freqs_are_transformers(model)
    else:
        assert "rope_freqs.weight" not in names


def _assert_rope_freqs_are_transformers(model) -> None:
    """rope_freqs divides each rotary frequency: default / llama3-scaled inverse frequencies of
    transformers' own rotary embedding."""
    from tunechat.convert.header import read_tensor_bytes

    path = model.gguf("f16")
    _, data = read_tensor_bytes(path, read_header(path), "rope_freqs.weight")
    factors = np.frombuffer(data, dtype=np.float32)
    scaled = model.hf_model.model.rotary_emb.inv_freq.numpy()
    theta, dim = rope_parameters(model.config)["rope_theta"], head_dim(model.config)
    default = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    assert np.allclose(factors, default / scaled, rtol=1e-4), (factors, default / scaled)
    assert factors.max() > 2  # the scaling is at work in the zoo model


# The family whose every field is dropped in turn (it has the most: soft-capping, window);
# check_metadata compares every key alike, so the others drop the fields their logits depend on.
EVERY_FIELD_DROPPED = "gemma2"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_dropped_field_is_caught(zoo, name, tmp_path):
    """Without a field (or rope_freqs), check_metadata against the base names it; where the zoo
    model's logits depend on it, llama.cpp's logits fail the f16 gate (or it won't load)."""
    from tunechat.core.engine import ModelLoadError

    model = zoo[name]
    base = model.gguf("f16")
    tensors = {t.name for t in read_header(base).tensors}
    every = [*expected_metadata(model.config), *(t for t in ("rope_freqs.weight",) if t in tensors)]
    for key in every if name == EVERY_FIELD_DROPPED else LOGIT_VISIBLE[name]:
        out = tmp_path / f"without-{key}.gguf"
        copy_gguf(base, out, drop_key=key, drop_tensor=key)
        result = check_metadata(base, out)
        assert not result.passed and key in result.detail, (key, result.detail)
        if key in LOGIT_VISIBLE[name]:
            try:
                logits = _llama_logits(out, model.prompts)
            except ModelLoadError:
                continue
            caught = check_logits(logits, model.hf_logits, "f16")
            assert not caught.passed, (key, caught.detail)
        out.unlink()


# -- (e) mapping bugs ---------------------------------------------------------------------------

def _bug_unpermuted(which: tuple[str, ...]):
    def bug(state, config):
        heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
        out = dict(state)
        for key, w in state.items():
            short = key.rsplit(".", 2)[-2]
            if short in which and key.endswith(".weight"):
                out[key] = _undo_permute(w, heads[short])  # the writer's permutation undone: as if skipped
        return out, config
    return bug


def _bug_llama_permuted_neox(state, config):
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    out = dict(state)
    for key, w in state.items():
        short = key.rsplit(".", 2)[-2]
        if short in heads:
            out[key] = permute_for_llama_cpp(w, heads[short])  # llama's permutation on a NEOX-RoPE family
    return out, config


def _bug_rope_scaling_lost(state, config):
    return state, {k: v for k, v in config.items() if k not in ("rope_parameters", "rope_scaling")}


def _bug_qk_norms_swapped(state, config):
    out = dict(state)
    for key in state:
        if key.endswith("q_norm.weight"):
            other = key.replace("q_norm", "k_norm")
            out[key], out[other] = state[other], state[key]
    return out, config


def _bug_norm_offset_dropped(state, config):
    return {k: w - 1.0 if k.endswith("norm.weight") else w for k, w in state.items()}, config


def _bug_fused_halves_swapped(state, config):
    out = dict(state)
    for key, w in state.items():
        if key.endswith("gate_up_proj.weight"):
            half = w.shape[0] // 2
            out[key] = np.concatenate([w[half:], w[:half]])
    return out, config


MAPPING_BUGS = {
    "llama": ("q/k not permuted", _bug_unpermuted(("q_proj", "k_proj"))),
    "llama3": ("llama3 RoPE scaling (rope_freqs) lost", _bug_rope_scaling_lost),
    "mistral": ("k not permuted", _bug_unpermuted(("k_proj",))),
    "qwen2": ("q/k permuted as for llama", _bug_llama_permuted_neox),
    "qwen2-untied": ("q/k permuted as for llama", _bug_llama_permuted_neox),
    "qwen3": ("q and k norms swapped", _bug_qk_norms_swapped),
    "gemma2": ("norm +1 offset dropped", _bug_norm_offset_dropped),
    "phi3": ("gate and up halves of gate_up_proj swapped", _bug_fused_halves_swapped),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_mapping_bug_is_caught_by_the_logits_check(zoo, name, tmp_path):
    model = zoo[name]
    what, bug = MAPPING_BUGS[name]
    state, config = bug(model.state, model.config)
    out = model.write(tmp_path / "buggy.gguf", "f16", state=state, config=config)
    result = check_logits(_llama_logits(out, model.prompts), model.hf_logits, "f16")
    assert not result.passed, f"{what}: {result.detail}"


# -- (f) Q4_K_M ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", [PERMUTED, "mistral", "qwen3"])  # the others: tests/test_families.py
def test_q4_k_m_loads_and_chats(zoo, name):
    """llama.cpp's quantizer makes Q4_K_M of the f16 file (K-quants on the 256-wide rows); it
    loads, answers a chat turn, and keeps most of the torch model's top tokens."""
    import gguf

    model = zoo[name]
    path = model.gguf("Q4_K_M")
    types = {gguf.GGMLQuantizationType(t.type_id) for t in read_header(path).tensors}
    assert gguf.GGMLQuantizationType.Q4_K in types, types
    engine = _engine(path)
    try:
        from tunechat.core.engine import GenerationSettings

        answer = engine.complete(list(CHAT), GenerationSettings(max_tokens=8))
        logits = engine.next_token_logits(model.prompts)
    finally:
        engine.close()
    assert isinstance(answer, str)
    agree, worst = logit_errors(logits, model.hf_logits)
    assert agree >= 0.5 and worst <= 0.6, (agree, worst)


# -- (g) chat templates -------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of Japan?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi there"}],
    [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Nice to meet you, Ada."},
     {"role": "user", "content": "  What is my name?  "}],
]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama", "llama3", "mistral", "qwen2", "gemma2", "phi3", SPM])
def test_the_chat_renders_each_template_as_transformers_does(zoo, name):
    """SmolLM2's ChatML, Llama 3.2, Mistral Nemo [INST], Qwen2.5 ChatML, Gemma 2, Phi-3.5, Llama 2: the
    template the GGUF carries, rendered by tunechat.core.chat_template, equals transformers'
    apply_chat_template byte for byte, with and without the generation prompt; where
    transformers refuses a conversation (Gemma's system prompt), so does the chat. BOS and EOS
    are the tokenizer's; Qwen2.5's tokenizer has no BOS, and the GGUF the one config.json
    names (<|endoftext|>, as convert_hf_to_gguf.py writes it), which its template does not use."""
    import jinja2

    from tunechat.core import chat_template

    model = zoo[name]
    tok = model.tokenizer
    engine = _engine(model.gguf("f16"))
    try:
        template = engine.template
        assert template == tok.chat_template
        chat_template.check_template(template, engine.bos_token, engine.eos_token)
        bos = tok.bos_token or tok.convert_ids_to_tokens(model.config["bos_token_id"])
        assert (engine.bos_token, engine.eos_token) == (bos, tok.eos_token)
        for messages in CONVERSATIONS:
            for add_generation_prompt in (True, False):
                try:
                    want = tok.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)
                except jinja2.TemplateError:
                    with pytest.raises(chat_template.TemplateError):
                        chat_template.render(template, messages, add_generation_prompt=add_generation_prompt,
                                             bos_token=engine.bos_token, eos_token=engine.eos_token)
                    continue
                got = chat_template.render(template, messages, add_generation_prompt=add_generation_prompt,
                                           bos_token=engine.bos_token, eos_token=engine.eos_token)
                assert got == want, (messages, add_generation_prompt)
                if add_generation_prompt:
                    assert engine.render(messages) == want
    finally:
        engine.close()


# -- (h) sentencepiece tokenizers ---------------------------------------------------------------

# Where llama.cpp's SPM tokenizer parts from sentencepiece when a conversion loses the scores,
# the token types or the space handling: repeated, leading and trailing spaces, tabs and new
# lines, digits, accents, CJK, emoji (not among the trained pieces: spelled as bytes), special
# tokens inside a text (a space is put in front of the text after each).
SPM_TEXTS = (
    "it's  two  spaces", " a leading space", "  two leading spaces", "trailing spaces  ", "tab\tand\nnew lines\n\n",
    "1234567 3.14159 1,000,000", "Grüße aus Köln, naïve café", "東京 ☕ 😀 🦙 ∑",
    "<s>[INST] Hi there [/INST] Hello</s>", "a</s>  b<unk>c", TOKENIZER_PROBE, *TEXTS,
)


def _sentencepiece(model):
    from sentencepiece import SentencePieceProcessor

    return SentencePieceProcessor(model_file=str(model.folder / "tokenizer.model"))


@pytest.mark.slow
@pytest.mark.parametrize("name", SPM_NAMES)
def test_a_sentencepiece_folder_tokenizes_in_llama_cpp_as_in_transformers(zoo, name, tmp_path):
    """Llama 2's, Mistral v0.3's, Gemma's and Phi-3's kinds (tests/zoo.py): llama.cpp's ids for
    every text (special tokens parsed, the chat template's renderings among them) are the HF
    tokenizer's, and on the texts without special tokens those are sentencepiece's own; some
    are byte tokens. The same file without its scores tokenizes some texts otherwise (llama.cpp
    merges in another order: "s  two" reads s ▁▁ t wo, not s ▁ ▁two), so the texts would catch
    their loss."""
    from tunechat.core.engine import tokenize_all_with_vocab

    model = zoo[name]
    tok, sp = model.tokenizer, _sentencepiece(model)
    texts = _tokenizer_texts(tok)
    want = [list(tok(text, add_special_tokens=False)["input_ids"]) for text in texts]
    specials = [t.content for t in tok.added_tokens_decoder.values()]
    for text, ids in zip(texts, want):
        if not any(special in text for special in specials):
            assert sp.encode(text) == ids, text
    assert any(sp.IsByte(i) for ids in want for i in ids)
    got = tokenize_all_with_vocab(model.gguf("f16"), texts)
    for text, ours, theirs in zip(texts, got, want):
        assert ours == theirs, (text, tok.convert_ids_to_tokens(ours), tok.convert_ids_to_tokens(theirs))
    unscored = copy_gguf(model.gguf("f16"), tmp_path / "unscored.gguf", drop_key="tokenizer.ggml.scores")
    assert tokenize_all_with_vocab(unscored, texts) != want


@pytest.mark.slow
def test_a_sentencepiece_folder_carries_scores_token_types_and_its_name(zoo):
    """As convert_hf_to_gguf.py writes them: tokenizer model "llama", every piece's score, <unk>
    unknown, <s> and </s> control, the 256 byte pieces byte, the rest normal; BOS, EOS and UNK
    ids; general.name the folder's own name (config.json has no _name_or_path)."""
    import gguf

    model = zoo[SPM]
    sp = _sentencepiece(model)
    values = _metadata_values(model.gguf("f16"))
    n = sp.vocab_size()
    assert n == model.config["vocab_size"]
    assert (values["tokenizer.ggml.model"], values["tokenizer.ggml.pre"]) == ("llama", "default")
    assert values["tokenizer.ggml.tokens"] == [sp.IdToPiece(i) for i in range(n)]
    assert np.array_equal(np.float32(values["tokenizer.ggml.scores"]), np.float32([sp.GetScore(i) for i in range(n)]))
    kinds = gguf.TokenType
    types = values["tokenizer.ggml.token_type"]
    assert types[:3] == [kinds.UNKNOWN, kinds.CONTROL, kinds.CONTROL]
    assert types[3:] == [kinds.BYTE if sp.IsByte(i) else kinds.NORMAL for i in range(3, n)]
    assert types.count(kinds.BYTE) == 256
    assert [values[f"tokenizer.ggml.{k}_token_id"] for k in ("bos", "eos", "unknown")] == [1, 2, 0]
    assert values["tokenizer.ggml.add_bos_token"] is True
    assert "_name_or_path" not in model.config and values["general.name"] == model.folder.name


@pytest.mark.slow
def test_a_folder_whose_special_tokens_strip_whitespace_is_named_phi3_for_llama_cpp(zoo, tmp_path):
    """Phi-3's chat tokens eat the whitespace after them (tokenizer.json's rstrip); llama.cpp
    does so only for a model whose general.name says Phi-3. The zoo's phi3 folder is named "hf":
    its GGUF is named "hf (Phi-3)", and tokenizes a chat turn as transformers does; the same
    file without that name does not."""
    from tunechat.core.engine import tokenize_all_with_vocab

    model = zoo["phi3"]
    tok = model.tokenizer
    chat = tok.apply_chat_template(CONVERSATIONS[2], tokenize=False, add_generation_prompt=True)
    want = [list(tok(chat, add_special_tokens=False)["input_ids"])]
    assert _metadata_values(model.gguf("f16"))["general.name"] == "hf (Phi-3)"
    assert tokenize_all_with_vocab(model.gguf("f16"), [chat]) == want
    unnamed = copy_gguf(model.gguf("f16"), tmp_path / "unnamed.gguf", drop_key="general.name")
    assert tokenize_all_with_vocab(unnamed, [chat]) != want


# -- (i) byte-level BPE tokenizers ---------------------------------------------------------------

# The pre-tokenizer each BPE kind must get: the name convert_hf_to_gguf.py gives the real
# tokenizer (SmolLM2's, Meta-Llama-3's, Qwen2.5's), and whether llama.cpp is to put BOS in front.
BPE_FAMILIES = {"llama": ("smollm", False), "llama3": ("llama-bpe", True), "qwen2": ("qwen2", False)}
# The names the converter could pick instead: each splits some text otherwise, but Llama 3's for
# Qwen2's kind: its digits in threes find no merge in a vocabulary learned on single digits, so
# the ids are the same (the converter takes "qwen2" by its order).
BPE_PRE_TOKENIZERS = ("smollm", "qwen2", "llama-bpe")
SAME_IDS = {"qwen2": ("llama-bpe",)}
# tokenizer.ggml.add_eos_token as convert_hf_to_gguf.py writes it: False where tokenizer.json's
# post-processor holds a ByteLevel one (Llama 3's, Qwen2's), absent under SmolLM2's.
ADD_EOS_KEY = {"llama": None, "llama3": False, "qwen2": False}


def _tokenizer_texts(tok) -> list[str]:
    """The texts where pre-tokenizers part (digits, contractions in any case, a letter after a
    tab or a symbol, runs of spaces and new lines, non-Latin scripts, words Llama 3's kind has
    whole but no merge makes), the family's special tokens inside a text, and the chat
    template's renderings (of the conversations it accepts: Gemma's refuses a system prompt). All
    in NFC: Qwen2's tokenizer normalizes to NFC and llama.cpp does not (for a real Qwen too), so
    decomposed accents split otherwise."""
    import jinja2

    specials = [t.content for t in tok.added_tokens_decoder.values() if t.special]
    rendered = []
    for messages in CONVERSATIONS:
        for prompt in (True, False):
            try:
                rendered.append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt))
            except jinja2.TemplateError:
                continue
    return [*SPM_TEXTS, "I'VE 'LL 'Re don'T", "x\t\tabc  \n\n  \n  y", "12345678901 $1,234.5", WHOLE_WORDS_TEXT,
            *(f"a{t} b{t}\n" for t in specials), *rendered]


@pytest.mark.slow
@pytest.mark.parametrize("name", BPE_FAMILIES)
def test_a_byte_level_bpe_folder_tokenizes_in_llama_cpp_as_in_transformers(zoo, name, tmp_path):
    """SmolLM2's, Llama 3's and Qwen2's kinds of BPE (tests/zoo.py): the converter names the
    pre-tokenizer convert_hf_to_gguf.py names for the real tokenizer, and says whether to add
    BOS as the folder does; llama.cpp's ids for every text (special tokens parsed) are the HF
    tokenizer's. Under any other of those pre-tokenizers some text tokenizes otherwise, so the
    texts would catch a wrong choice."""
    from tunechat.convert.architectures import spec_for_config
    from tunechat.convert.hf_metadata import write_vocab_only
    from tunechat.core.engine import tokenize_all_with_vocab

    model = zoo[name]
    tok = model.tokenizer
    pre, add_bos = BPE_FAMILIES[name]
    assert model.pre_tokenizer == (pre, add_bos)
    values = _metadata_values(model.gguf("f16"))
    assert (values["tokenizer.ggml.model"], values["tokenizer.ggml.pre"]) == ("gpt2", pre)
    assert values["tokenizer.ggml.add_bos_token"] is add_bos
    assert values.get("tokenizer.ggml.add_eos_token") is ADD_EOS_KEY[name]
    assert (tok("x")["input_ids"][0] == tok.bos_token_id) is add_bos
    texts = _tokenizer_texts(tok)
    want = [list(tok(text, add_special_tokens=False)["input_ids"]) for text in texts]
    if name == "llama3":  # the whole words are single tokens: llama.cpp must look them up before merging
        assert all(len(tok.tokenize(word)) == 1 for word in WHOLE_WORDS)
    got = tokenize_all_with_vocab(model.gguf("f16"), texts)
    for text, ours, theirs in zip(texts, got, want):
        assert ours == theirs, (text, tok.convert_ids_to_tokens(ours), tok.convert_ids_to_tokens(theirs))
    for other in set(BPE_PRE_TOKENIZERS) - {pre, *SAME_IDS.get(name, ())}:
        path = tmp_path / f"{other}.gguf"
        write_vocab_only(model.folder, model.config, spec_for_config(model.config), other, path, add_bos)
        assert tokenize_all_with_vocab(path, texts) != want, other


# -- llama.cpp's own converter ------------------------------------------------------------------

# general.* fields describing the file, which llama.cpp does not read to run it: convert_hf_to_gguf.py
# title-cases the name ("Hf"; we keep it as written, where llama.cpp looks for "phi-3") and adds
# a size label, a type and a quantization version.
FILE_DESCRIPTION = ("general.name", "general.size_label", "general.type", "general.quantization_version")
# Fields convert_hf_to_gguf.py leaves out for Qwen2, Qwen3 and Gemma 2 and we write: the values
# llama.cpp takes without them (head size n_embd / n_head, rotary dimensions the head size, the
# vocabulary the token list's length, RoPE base 10000).
DERIVED_FIELDS = ("attention.key_length", "attention.value_length", "rope.dimension_count", "vocab_size",
                  "rope.freq_base")
# Tensors computed in float32 by another order of operations (numpy here, torch there): the
# llama 3 RoPE divisors may differ in the last bit where the zoo's 64-token original context
# puts a frequency in the smoothed band (for Llama 3.1/3.2's own parameters they are equal).
COMPUTED_TENSORS = ("rope_freqs.weight",)
# convert_hf_to_gguf.py run with the pre-tokenizer name given: it recognizes a tokenizer by
# hashing its ids for a text, and a tokenizer trained here has a hash of its own.
_CONVERT_WITH_PRE = """
import runpy, sys
source, pre = sys.argv[1], sys.argv[2]
sys.path[:0] = [source, source + "/gguf-py"]
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = [source + "/convert_hf_to_gguf.py", *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _derived_fields(ours: dict, theirs: dict) -> set[str]:
    """The ``DERIVED_FIELDS`` only ours has, each checked to hold llama.cpp's default."""
    arch = str(ours["general.architecture"])
    heads, width = ours[f"{arch}.attention.head_count"], ours[f"{arch}.embedding_length"]
    default = {"attention.key_length": width // heads, "attention.value_length": width // heads,
               "rope.dimension_count": ours[f"{arch}.attention.key_length"],
               "vocab_size": len(ours["tokenizer.ggml.tokens"]), "rope.freq_base": 10000.0}
    only_ours = {field for field in DERIVED_FIELDS if f"{arch}.{field}" in ours and f"{arch}.{field}" not in theirs}
    for field in only_ours:
        assert ours[f"{arch}.{field}"] == default[field], field
    return {f"{arch}.{field}" for field in only_ours}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES + list(SPM_FAMILIES))
def test_a_folder_converts_as_llama_cpps_own_converter_does(zoo, name, tmp_path):
    """llama.cpp's convert_hf_to_gguf.py (from a llama.cpp source tree named by
    $LLAMA_CPP_SOURCE, e.g. the vendor/llama.cpp folder of the llama-cpp-python sdist) on the
    same folder (every family: sentencepiece ones as Llama 2's, Mistral v0.3's, Gemma's and
    Phi-3's, SmolLM2's, Llama 3's and Qwen2's kinds of BPE), its pre-tokenizer
    recognition replaced by the name ours chose (the hash of a tokenizer trained here is known
    to no converter; test_a_byte_level_bpe_folder_tokenizes_in_llama_cpp_as_in_transformers
    checks the name): every other metadata field equal, but fields llama.cpp derives alike;
    every tensor byte for byte, but float32 rounding in computed ones."""
    source = os.environ.get("LLAMA_CPP_SOURCE")
    script = Path(source) / "convert_hf_to_gguf.py" if source else None
    if script is None or not script.is_file():
        pytest.skip("set LLAMA_CPP_SOURCE to a llama.cpp source tree to compare with its converter")
    model = zoo[name]
    reference = tmp_path / "reference.gguf"
    subprocess.run([sys.executable, "-c", _CONVERT_WITH_PRE, str(source), model.pre_tokenizer[0], str(model.folder),
                    "--outfile", str(reference), "--outtype", "f16"], check=True, capture_output=True, timeout=600)
    ours, theirs = _metadata_values(model.gguf("f16")), _metadata_values(reference)
    for key in sorted((ours.keys() | theirs.keys()) - set(FILE_DESCRIPTION) - _derived_fields(ours, theirs)):
        assert ours.get(key) == theirs.get(key), key
    ours_header, theirs_header = read_header(model.gguf("f16")), read_header(reference)
    assert {t.name: (t.shape, t.type_id) for t in ours_header.tensors} == \
        {t.name: (t.shape, t.type_id) for t in theirs_header.tensors}
    for info in ours_header.tensors:
        mine = read_tensor_bytes(model.gguf("f16"), ours_header, info.name)[1]
        other = read_tensor_bytes(reference, theirs_header, info.name)[1]
        if info.name in COMPUTED_TENSORS:
            assert np.allclose(np.frombuffer(mine, np.float32), np.frombuffer(other, np.float32), rtol=1e-6, atol=0)
        else:
            assert mine == other, info.name


def _peft_folder(adapter: dict, alpha: float, base: Path, folder: Path) -> Path:
    """``adapter`` saved as peft saves one (adapter_config.json, adapter_model.safetensors)."""
    import json

    from safetensors.numpy import save_file

    folder.mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in adapter.items()}, str(folder / "adapter_model.safetensors"))
    rank = next(v.shape[0] for k, v in adapter.items() if k.endswith("lora_A.weight"))
    targets = sorted({k.split(".")[-3] for k in adapter})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "bias": "none",
              "target_modules": targets, "base_model_name_or_path": str(base)}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_lora_adapter_converts_as_llama_cpps_own_converter_does(zoo, name, tmp_path):
    """llama.cpp's convert_lora_to_gguf.py (from $LLAMA_CPP_SOURCE, as above) on the same peft
    adapter over the zoo folder: every metadata field but the file description equal, every
    tensor byte for byte (q/k permuted for llama, phi3's fused weights, each family's names)."""
    from tunechat.convert.lora import write_lora_gguf

    source = os.environ.get("LLAMA_CPP_SOURCE")
    script = Path(source) / "convert_lora_to_gguf.py" if source else None
    if script is None or not script.is_file():
        pytest.skip("set LLAMA_CPP_SOURCE to a llama.cpp source tree to compare with its converter")
    model = zoo[name]
    adapter, alpha, _ = _random_adapter(model.state)
    peft = _peft_folder(adapter, alpha, model.folder, tmp_path / "adapter")
    ours, reference = tmp_path / "ours.gguf", tmp_path / "reference.gguf"
    write_lora_gguf(adapter, alpha, model.config, model.gguf("f16"), ours, "f16")
    subprocess.run([sys.executable, str(script), "--base", str(model.folder), "--outfile", str(reference),
                    "--outtype", "f16", str(peft)], check=True, capture_output=True, timeout=600)
    mine, theirs = _metadata_values(ours), _metadata_values(reference)
    for key in sorted((mine.keys() | theirs.keys()) - set(FILE_DESCRIPTION)):
        assert mine.get(key) == theirs.get(key), key
    ours_header, theirs_header = read_header(ours), read_header(reference)
    assert {t.name: (t.shape, t.type_id) for t in ours_header.tensors} == \
        {t.name: (t.shape, t.type_id) for t in theirs_header.tensors}
    for info in ours_header.tensors:
        assert read_tensor_bytes(ours, ours_header, info.name)[1] == \
            read_tensor_bytes(reference, theirs_header, info.name)[1], info.name


# -- refusals -----------------------------------------------------------------------------------

def _tiny(model_type: str, **extra) -> tuple[dict, dict]:
    config = {"model_type": model_type, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
              "hidden_size": 8, "intermediate_size": 16, "vocab_size": 4, **extra}
    return {"model.embed_tokens.weight": np.zeros((4, 8), np.float32)}, config


REFUSED = [
    ("gemma3_text", {}, "supported architectures are llama, mistral, qwen2, qwen3, gemma2, phi3"),
    ("gpt_neox", {}, "supported architectures are"),
    ("llama", {"rope_scaling": {"type": "yarn", "factor": 4.0}}, "RoPE scaling 'yarn' is not supported"),
    ("llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "RoPE scaling 'dynamic'"),
    ("phi3", {"rope_scaling": {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}},
     "RoPE scaling 'longrope'"),
    ("qwen2", {"rope_scaling": {"type": "yarn", "factor": 4.0}}, "RoPE scaling 'yarn'"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 4096}, "sliding-window attention"),
    ("gemma2", {"head_dim": 4, "query_pre_attn_scalar": 8}, "query_pre_attn_scalar"),
    ("gemma2", {"head_dim": 4, "layer_types": ["full_attention"]}, "layer_types"),
]


@pytest.mark.parametrize("model_type, extra, message", REFUSED)
def test_unsupported_models_are_refused_before_any_file_is_written(tmp_path, model_type, extra, message):
    from tunechat.convert.lora import write_lora_gguf

    state, config = _tiny(model_type, **extra)
    out = tmp_path / "never.gguf"
    with pytest.raises(UnsupportedArchitecture, match=message):
        write_gguf(state, config, tmp_path, out, "f16")
    with pytest.raises(UnsupportedArchitecture, match=message):
        write_lora_gguf({}, 8.0, config, tmp_path / "base.gguf", out)
    assert not out.exists()


def test_every_supported_family_maps_every_weight_name():
    """The tensor map knows each family's weight names (phi3's fused ones, gemma2's four norms,
    qwen3's q/k norms) under the architecture llama.cpp loads them by."""
    names = {
        "qwen3": ["model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight"],
        "gemma2": ["model.layers.0.pre_feedforward_layernorm.weight",
                   "model.layers.0.post_feedforward_layernorm.weight",
                   "model.layers.0.post_attention_layernorm.weight"],
        "phi3": ["model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.mlp.gate_up_proj.weight"],
    }
    want = {"qwen3": ["blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"],
            "gemma2": ["blk.0.ffn_norm.weight", "blk.0.post_ffw_norm.weight", "blk.0.post_attention_norm.weight"],
            "phi3": ["blk.0.attn_qkv.weight", "blk.0.ffn_up.weight"]}
    for family, hf_names in names.items():
        assert [gguf_tensor_name(n, spec_for(family), 1) for n in hf_names] == want[family]
