"""GGUF metadata for a Hugging Face model folder, when there is no base GGUF to copy from.

Hyperparameters come from config.json; the tokenizer (tokens, types, merges, special
tokens, chat template) from tokenizer.json and tokenizer_config.json through gguf's own
vocab readers, or, where the folder has a sentencepiece tokenizer.model (Llama 2, Mistral),
from that model's pieces, scores and types as convert_hf_to_gguf.py writes them (llama.cpp's
SPM tokenizer merges by score). For BPE llama.cpp also needs the name of its pre-tokenizer
(the regex that splits text before BPE); convert_hf_to_gguf.py recognizes it by hashing a
tokenization, and we choose it by measurement instead: the first candidate whose llama.cpp
tokenization equals the HF tokenizer's on a probe text (``choose_pre_tokenizer``). SPM has
none ("default").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import gguf

from tunechat.convert.architectures import ArchSpec, gguf_arch_name, head_dim, rope_parameters
from tunechat.convert.verify import TOKENIZER_PROBE

# llama.cpp pre-tokenizer names, most common llama-family first: SmolLM's, Qwen2's (single
# digits), Llama 3's (digits in threes; "llama-bpe" is the name convert_hf_to_gguf.py writes for
# it, which llama.cpp also knows as "llama3").
PRE_TOKENIZERS = ("smollm", "qwen2", "llama-bpe", "gpt-2", "default", "starcoder", "refact", "deepseek-llm", "olmo")
# What convert_hf_to_gguf.py gives a token a sentencepiece model has no score for (an id past
# the model's pieces) and one a config file adds.
PAD_SCORE, ADDED_SCORE = -10000.0, -1000.0
# What llama.cpp looks for (lower case) in general.name to strip whitespace after special tokens.
PHI3_NAMES = ("phi-3", "phi3")


class TokenizerError(Exception):
    pass


def model_name(config: Mapping, folder: Path) -> str:
    """``general.name``: the last part of config.json's ``_name_or_path``, else the folder's own
    name (convert_hf_to_gguf.py's fallback too). llama.cpp reads it: a name saying Phi-3 makes
    the special tokens strip the whitespace after them, as Phi-3's tokenizer.json says its own
    do (``rstrip``). A folder whose tokenizer says so under another name gets "Phi-3" after its
    name, or llama.cpp would tokenize every chat turn otherwise than its tokenizer does."""
    named = str(config.get("_name_or_path") or "").rstrip("/").rsplit("/", 1)[-1]
    name = named or folder.resolve().name or "personal model"
    if _strips_after_special_tokens(folder) and not any(k in name.lower() for k in PHI3_NAMES):
        name += " (Phi-3)"
    return name


def _strips_after_special_tokens(folder: Path) -> bool:
    """Whether some special token of tokenizer.json eats the whitespace after it (Phi-3's)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return False
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens") or []
    return any(t.get("special") and t.get("rstrip") for t in added)


def add_hparams(writer: gguf.GGUFWriter, config: Mapping, spec: ArchSpec, name: str = "personal model") -> None:
    """The hyperparameters llama.cpp reads for ``spec``'s family, from config.json (as
    convert_hf_to_gguf.py writes them)."""
    n_head = int(config["num_attention_heads"])
    dim = head_dim(config)
    rope = rope_parameters(config)
    writer.add_name(name)
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
    original = rope.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
    if spec.original_context and original:
        writer.add_rope_scaling_orig_ctx_len(int(original))


def add_tokenizer(writer: gguf.GGUFWriter, folder: Path, vocab_size: int, pre_tokenizer: str,
                  add_bos: bool | None = None) -> None:
    """``add_bos``: whether the HF tokenizer puts BOS in front of a text (measured by the
    caller); None leaves it to tokenizer_config.json."""
    spm = sentencepiece_vocab(folder, vocab_size)
    if spm is not None:
        tokens, scores, types = spm
        prefix = _tokenizer_config(folder).get("add_prefix_space")
        if prefix is None and not _sentencepiece_space_prefix(folder):
            prefix = False  # Gemma's: convert_hf_to_gguf.py writes it for its family, we read the model
        if prefix is not None:  # as convert_hf_to_gguf.py's llama set_vocab
            writer.add_add_space_prefix(bool(prefix))
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")  # llama.cpp's SPM tokenizer has no pre-tokenizer
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        _add_special_vocab(writer, folder, vocab_size, add_bos, merges=False)
        return
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
    for token_id, (_, special) in _added_tokens(folder).items():  # as convert_hf_to_gguf.py marks them
        if token_id < len(types):
            types[token_id] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    for i in range(len(tokens), vocab_size):  # the embedding may be padded past the vocabulary
        tokens.append(f"[PAD{i}]".encode())
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens[:vocab_size])
    writer.add_token_types(types[:vocab_size])
    _add_special_vocab(writer, folder, vocab_size, add_bos, merges=model == "gpt2")


def _add_special_vocab(writer: gguf.GGUFWriter, folder: Path, vocab_size: int, add_bos: bool | None,
                       merges: bool) -> None:
    special_vocab = gguf.SpecialVocab(folder, load_merges=merges, n_vocab=vocab_size)
    if add_bos is not None:
        special_vocab.add_special_token["bos"] = add_bos
    if merges and _byte_level_post_processor(folder):  # as convert_hf_to_gguf.py's gguf-py reads it
        special_vocab.add_special_token.setdefault("eos", False)
    special_vocab.add_to_gguf(writer)


def _byte_level_post_processor(folder: Path) -> bool:
    """Whether tokenizer.json's post-processor is, or holds, a ByteLevel one (Llama 3's, Qwen2's):
    llama.cpp's converter takes it to add neither BOS nor EOS where nothing else says so."""
    path = folder / "tokenizer.json"
    processor = json.loads(path.read_text(encoding="utf-8")).get("post_processor") if path.is_file() else None
    processors = (processor.get("processors") or [processor]) if isinstance(processor, dict) else []
    return any(isinstance(p, dict) and p.get("type") == "ByteLevel" for p in processors)


def sentencepiece_vocab(folder: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]] | None:
    """Tokens, scores and types of the folder's sentencepiece tokenizer.model, as
    convert_hf_to_gguf.py's ``_create_vocab_sentencepiece`` makes them: the model's pieces
    (unknown, control, unused, byte or normal), then the tokens added_tokens.json and
    tokenizer_config.json's ``added_tokens_decoder`` add or rename (control when special or
    looking special, else user-defined), ids past them padded. tokenizer.json's added tokens
    fill ids that none of those name (llama.cpp would leave them as padding). None without a
    sentencepiece tokenizer.model."""
    sp = _sentencepiece_model(folder)
    if sp is None:
        return None
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [PAD_SCORE] * vocab_size
    types: list[int] = [gguf.TokenType.UNUSED] * vocab_size
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens[i], scores[i] = sp.IdToPiece(i).encode("utf-8"), sp.GetScore(i)
        types[i] = (gguf.TokenType.UNKNOWN if sp.IsUnknown(i) else gguf.TokenType.CONTROL if sp.IsControl(i)
                    else gguf.TokenType.UNUSED if sp.IsUnused(i) else gguf.TokenType.BYTE if sp.IsByte(i)
                    else gguf.TokenType.NORMAL)
    named = set(range(sp.vocab_size()))

    def add(token_id: int, text: str, token_type: int) -> None:
        if token_id < vocab_size:
            tokens[token_id], scores[token_id], types[token_id] = text.encode("utf-8"), ADDED_SCORE, token_type
            named.add(token_id)

    added_file = folder / "added_tokens.json"
    if added_file.is_file():
        for text, token_id in json.loads(added_file.read_text(encoding="utf-8")).items():
            add(int(token_id), text, gguf.TokenType.USER_DEFINED)
    for token_id, data in (_tokenizer_config(folder).get("added_tokens_decoder") or {}).items():
        text = str(data["content"])
        if data.get("special") or _looks_special(text):
            add(int(token_id), text, gguf.TokenType.CONTROL)
        else:
            add(int(token_id), text.replace("\u2581", " "), gguf.TokenType.USER_DEFINED)  # sentencepiece's space
    for token_id, (text, special) in _added_tokens(folder).items():
        if token_id not in named:
            add(token_id, text, gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    return tokens, scores, types


def _sentencepiece_model(folder: Path):
    """The folder's tokenizer.model loaded, or None: there is none, or it is no sentencepiece
    model (Llama 3 ships a tiktoken one)."""
    path = folder / "tokenizer.model"
    if not path.is_file():
        return None
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError):
        return None
    return sp


def _sentencepiece_space_prefix(folder: Path) -> bool:
    """Whether the folder's sentencepiece model puts "▁" in front of a text (its normalizer's
    ``add_dummy_prefix``: Llama 2's and Mistral's do, Gemma's does not); llama.cpp's default
    where it cannot be read."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]  # generated by protobuf
    try:
        model.ParseFromString((folder / "tokenizer.model").read_bytes())
    except (OSError, DecodeError):
        return True
    return bool(model.normalizer_spec.add_dummy_prefix)


def _looks_special(text: str) -> bool:
    """convert_hf_to_gguf.py's ``does_token_look_special``: added tokens some models leave
    unmarked that are control tokens all the same."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _added_tokens(folder: Path) -> dict[int, tuple[str, bool]]:
    """id -> (text, special?) for tokenizer.json's added tokens."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return {}
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens") or []
    return {int(t["id"]): (str(t["content"]), bool(t.get("special"))) for t in added}


def add_hf_metadata(writer: gguf.GGUFWriter, folder: Path, config: Mapping, spec: ArchSpec, pre_tokenizer: str,
                    add_bos: bool | None = None) -> None:
    add_hparams(writer, config, spec, model_name(config, folder))
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
    ``reference_ids`` (the HF tokenizer's ids for it); for a sentencepiece folder, "default"
    (the only one written) once it does."""
    candidates = ("default",) if _sentencepiece_model(folder) is not None else PRE_TOKENIZERS
    for name in candidates:
        path = workdir / f"vocab-{name}.gguf"
        write_vocab_only(folder, config, spec, name, path, add_bos)
        try:
            if list(llama_tokenize(path, TOKENIZER_PROBE)) == list(reference_ids):
                return name
        finally:
            path.unlink(missing_ok=True)
    raise TokenizerError("llama.cpp tokenizes this model's text differently from its own tokenizer under every "
                         f"known pre-tokenizer ({', '.join(candidates)}); it cannot be converted safely.")
