"""GGUF metadata for a Hugging Face model folder, when there is no base GGUF to copy from.

Hyperparameters come from config.json; the tokenizer (tokens, types, merges, special
tokens, chat template) from tokenizer.json and tokenizer_config.json through gguf's own
vocab readers. llama.cpp also needs the name of its pre-tokenizer (the regex that splits
text before BPE); convert_hf_to_gguf.py recognizes it by hashing a tokenization, and we
choose it by measurement instead: the first candidate whose llama.cpp tokenization equals
the HF tokenizer's on a probe text (``choose_pre_tokenizer``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import gguf

from tunechat.convert.architectures import ArchSpec, gguf_arch_name, head_dim, rope_parameters
from tunechat.convert.verify import TOKENIZER_PROBE

# llama.cpp pre-tokenizer names, most common llama-family first.
PRE_TOKENIZERS = ("smollm", "qwen2", "llama3", "gpt-2", "default", "starcoder", "refact", "deepseek-llm", "olmo")


class TokenizerError(Exception):
    pass


def add_hparams(writer: gguf.GGUFWriter, config: Mapping, spec: ArchSpec) -> None:
    """The hyperparameters llama.cpp reads for ``spec``'s family, from config.json (as
    convert_hf_to_gguf.py writes them)."""
    n_head = int(config["num_attention_heads"])
    dim = head_dim(config)
    rope = rope_parameters(config)
    writer.add_name(str(config.get("_name_or_path") or "personal model").rsplit("/", 1)[-1])
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_rope_dimension_count(int(dim * float(rope.get("partial_rotary_factor") or 1.0)))
    if spec.softcapping:
        for key, add in (("attn_logit_softcapping", writer.add_attn_logit_softcapping),
                         ("final_logit_softcapping", writer.add_final_logit_softcapping)):
            if config.get(key) is not None:
                add(float(config[key]))
    if spec.sliding_window and config.get("sliding_window") is not None:
        writer.add_sliding_window(int(config["sliding_window"]))


def add_tokenizer(writer: gguf.GGUFWriter, folder: Path, vocab_size: int, pre_tokenizer: str,
                  add_bos: bool | None = None) -> None:
    """``add_bos``: whether the HF tokenizer puts BOS in front of a text (measured by the
    caller); None leaves it to tokenizer_config.json."""
    vocab: gguf.vocab.BpeVocab | gguf.vocab.LlamaHfVocab
    try:
        vocab = gguf.vocab.BpeVocab(folder)
        model = "gpt2"
    except FileNotFoundError:
        try:
            vocab = gguf.vocab.LlamaHfVocab(folder)
            model = "llama"
        except (FileNotFoundError, TypeError, ValueError) as exc:
            raise TokenizerError(f"No tokenizer that GGUF can carry in {folder}: {exc}") from None
    tokens, types = [], []
    for text, _score, toktype in vocab.all_tokens():
        tokens.append(text)
        types.append(toktype)
    for token_id, special in _added_tokens(folder).items():  # as convert_hf_to_gguf.py marks them
        if token_id < len(types):
            types[token_id] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    for i in range(len(tokens), vocab_size):  # the embedding may be padded past the vocabulary
        tokens.append(f"[PAD{i}]".encode())
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens[:vocab_size])
    writer.add_token_types(types[:vocab_size])
    special_vocab = gguf.SpecialVocab(folder, load_merges=model == "gpt2", n_vocab=vocab_size)
    if add_bos is not None:
        special_vocab.add_special_token["bos"] = add_bos
    special_vocab.add_to_gguf(writer)


def _added_tokens(folder: Path) -> dict[int, bool]:
    """id -> special? for tokenizer.json's added tokens."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return {}
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens") or []
    return {int(t["id"]): bool(t.get("special")) for t in added}


def add_hf_metadata(writer: gguf.GGUFWriter, folder: Path, config: Mapping, spec: ArchSpec, pre_tokenizer: str,
                    add_bos: bool | None = None) -> None:
    add_hparams(writer, config, spec)
    add_tokenizer(writer, folder, int(config["vocab_size"]), pre_tokenizer, add_bos)


def write_vocab_only(folder: Path, config: Mapping, spec: ArchSpec, pre_tokenizer: str, out_path: Path,
                     add_bos: bool | None = None) -> None:
    """A GGUF with metadata and no tensors: enough for llama.cpp to load its vocabulary."""
    writer = gguf.GGUFWriter(out_path, arch=gguf_arch_name(spec))
    add_hf_metadata(writer, folder, config, spec, pre_tokenizer, add_bos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def choose_pre_tokenizer(
    folder: Path, config: Mapping, spec: ArchSpec, reference_ids: Sequence[int],
    llama_tokenize: Callable[[Path, str], list[int]], workdir: Path, add_bos: bool | None = None,
) -> str:
    """The first pre-tokenizer under which llama.cpp tokenizes ``TOKENIZER_PROBE`` into
    ``reference_ids`` (the HF tokenizer's ids for it)."""
    for name in PRE_TOKENIZERS:
        path = workdir / f"vocab-{name}.gguf"
        write_vocab_only(folder, config, spec, name, path, add_bos)
        try:
            if list(llama_tokenize(path, TOKENIZER_PROBE)) == list(reference_ids):
                return name
        finally:
            path.unlink(missing_ok=True)
    raise TokenizerError("llama.cpp tokenizes this model's text differently from its own tokenizer under every "
                         f"known pre-tokenizer ({', '.join(PRE_TOKENIZERS)}); it cannot be converted safely.")
