"""A zoo of tiny random-weight models, one per supported family, built locally (no downloads).

Each is a real Hugging Face folder (config.json, model.safetensors, tokenizer files, the chat
template that family ships) with a tokenizer of the kind the family ships (``Family.tokenizer``):
the embedded model's (SmolLM2's) byte-level BPE, a byte-level BPE with Llama 3's or Qwen2's
pre-tokenizer trained here (``BPE_KINDS``), or a sentencepiece model trained here with Llama 2's,
Mistral v0.3's, Gemma's or Phi-3's settings (``SPM_KINDS``); plus that family's special tokens; 2 layers and
hidden size 256 (the smallest row K-quants accept), and weights drawn so the next-token
distribution is peaked: logits spread ~12 wide, attention scores ~2, every norm
weight off 1. A flat model would let a logit check pass on noise; ``peakedness`` measures it.

``Zoo`` builds a family on first use and keeps every file it writes for the session.
"""

from __future__ import annotations

import ctypes
import json
import math
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tunechat.convert.architectures import spec_for, spec_for_config
from tunechat.convert.hf_metadata import choose_pre_tokenizer
from tunechat.convert.verify import TOKENIZER_PROBE
from tunechat.convert.writer import write_gguf

from .zoo_templates import TEMPLATES

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from tokenizers.processors import PostProcessor

HIDDEN = 256
COMMON = {"hidden_size": HIDDEN, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "max_position_embeddings": 4096}

@dataclass(frozen=True)
class Family:
    name: str
    config: dict
    template: str | None  # a key of TEMPLATES; None: the embedded model's own (SmolLM2's ChatML)
    bos: str | None  # None: the tokenizer has none (Qwen2.5's)
    eos: str
    specials: tuple[str, ...] = ()
    qk_gain: float = 2.0  # scale of q/k weights: how sharp attention is
    output_scale: float = 0.04  # scale of the output matrix: how wide the logits spread
    # "smollm2": the embedded model's BPE (base_tokenizer_folder); a key of SPM_KINDS: a
    # sentencepiece model trained here (spm_tokenizer_folder); of BPE_KINDS: a byte-level BPE
    # trained here (bpe_tokenizer_folder)
    tokenizer: str = "smollm2"

    @property
    def model_type(self) -> str:
        return str(self.config["model_type"])

    @property
    def spm(self) -> bool:
        return self.tokenizer in SPM_KINDS


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 500000.0}

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama", {"model_type": "llama", "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
                     "rope_theta": 10000.0}, None, "<|im_start|>", "<|im_end|>"),
    Family("llama3", {"model_type": "llama", "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
                      "rope_parameters": LLAMA3_ROPE}, "llama3",
           "<|begin_of_text|>", "<|eot_id|>", ("<|start_header_id|>", "<|end_header_id|>"), tokenizer="llama3"),
    Family("mistral", {"model_type": "mistral", "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "head_dim": 64,
                       "sliding_window": 4096, "rope_theta": 1000000.0}, "mistral",
           "<s>", "</s>", ("[INST]", "[/INST]"), tokenizer="mistral"),
    Family("qwen2", {"model_type": "qwen2", "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
                     "rope_theta": 1000000.0}, "qwen2", None, "<|im_end|>",
           tokenizer="qwen2"),
    Family("qwen2-untied", {"model_type": "qwen2", "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
                            "rope_theta": 1000000.0}, "qwen2", None, "<|im_end|>",
           tokenizer="qwen2"),
    Family("qwen3", {"model_type": "qwen3", "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "head_dim": 128,
                     "rope_theta": 1000000.0}, "qwen2", None, "<|im_end|>",
           tokenizer="qwen2"),
    # head_dim 256 = query_pre_attn_scalar, as gemma-2-2b/9b (transformers' GGUF loader assumes it)
    Family("gemma2", {"model_type": "gemma2", "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "head_dim": 256,
                      "query_pre_attn_scalar": 256, "sliding_window": 16, "attn_logit_softcapping": 10.0,
                      "final_logit_softcapping": 30.0, "hidden_activation": "gelu_pytorch_tanh"}, "gemma",
           "<bos>", "<eos>", ("<start_of_turn>", "<end_of_turn>"), qk_gain=4.0, output_scale=0.03, tokenizer="gemma"),
    Family("phi3", {"model_type": "phi3", "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
                    "sliding_window": 2047, "rope_theta": 10000.0, "pad_token_id": None}, "phi3",
           "<s>", "<|endoftext|>", ("<|user|>", "<|assistant|>", "<|end|>", "<|system|>"), tokenizer="phi3"),
)}

# Families whose tokenizer is a sentencepiece model with byte fallback and scores (tokenizer.model
# beside tokenizer.json), as Llama 2's and Mistral 7B v0.1's: llama.cpp's SPM tokenizer, not BPE.
SPM_FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama2", {"model_type": "llama", "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
                      "rope_theta": 10000.0}, "llama2", "<s>", "</s>", tokenizer="llama2"),
)}

# Plain texts of several lengths (gemma2's 16-token window is passed by the longer ones) and a
# chat turn rendered with the family's template (``Zoo.prompts``).
TEXTS = (
    "The quick brown fox",
    "def fibonacci(n):\n    return",
    "Once upon a time, in a land far away, there lived a king who had three daughters and a",
    "Grüße aus Köln: 3.14159 ist ungefähr π, und 東京 liegt in Japan, wo man",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
)
CHAT = ({"role": "user", "content": "What is the capital of Japan?"},)


def base_tokenizer_folder(cache: Path) -> Path:
    """The embedded model's tokenizer as an HF tokenizer folder (built once: ~7 s)."""
    folder = cache / "smollm2-tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoTokenizer

    from tunechat.core.registry import embedded_model_path

    gguf_path = embedded_model_path()
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(tmp)
    tmp.rename(folder)
    return folder


@dataclass(frozen=True)
class SpmKind:
    """A sentencepiece tokenizer (BPE, byte fallback, scores) as one family ships it: the
    tokenizer.model trained here with the family's piece ids and settings, and the
    tokenizer.json transformers 4 wrote for it."""

    name: str
    ids: tuple[int, int, int, int]  # <unk>, <s>/<bos>, </s>/<eos>, <pad> (-1: none)
    pieces: tuple[str, str, str, str] = ("<unk>", "<s>", "</s>", "<pad>")
    control: tuple[str, ...] = ()  # control pieces of the model itself (Mistral v0.3's [INST])
    user_defined: tuple[str, ...] = ()  # pieces always whole (Gemma's turn markers)
    space_prefix: bool = True  # a "▁" in front of every text between special tokens (not Gemma's)
    # Tokens added after the model's pieces, in added_tokens.json and tokenizer_config.json
    # (Phi-3's), each eating the whitespace after it when rstrip (as Phi-3's tokenizer.json says)
    added: tuple[str, ...] = ()
    rstrip: tuple[str, ...] = ()
    # tokenizer_config.json lists the added tokens (added_tokens_decoder), as transformers saves
    # it; Llama 2's as first published did not: both of the converters' paths are taken
    lists_added: bool = True


SPM_KINDS: dict[str, SpmKind] = {k.name: k for k in (
    # Llama 2 (and Mistral 7B v0.1): every space kept, digits split, <unk> <s> </s> as ids 0-2
    SpmKind("llama2", ids=(0, 1, 2, -1), lists_added=False),
    # Mistral 7B v0.3: [INST] and [/INST] control pieces of the model, ids 3 and 4
    SpmKind("mistral", ids=(0, 1, 2, -1), control=("[INST]", "[/INST]")),
    # Gemma: <pad> <eos> <bos> <unk> as ids 0-3, no space prefix, the turn markers whole
    SpmKind("gemma", ids=(3, 2, 1, 0), pieces=("<unk>", "<bos>", "<eos>", "<pad>"),
            user_defined=("<start_of_turn>", "<end_of_turn>"), space_prefix=False),
    # Phi-3: Llama 2's model, its chat tokens added after it; all but <|endoftext|> strip the
    # whitespace after them, and so does </s>
    SpmKind("phi3", ids=(0, 1, 2, -1), added=("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
            rstrip=("</s>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>")),
)}
SPM_PIECES = 800  # the vocabulary trained (with the 256 byte pieces)


def _spm_training_text() -> list[str]:
    """The zoo's texts, the tokenizer probe and the public persona's strings (~4 kB)."""
    texts = [*TEXTS, TOKENIZER_PROBE, *(m["content"] for m in CHAT)]
    persona = json.loads((Path(__file__).resolve().parents[1] / "bench" / "data" / "persona-public.json")
                         .read_text(encoding="utf-8"))

    def strings(value: object) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                strings(v)
        elif isinstance(value, list):
            for v in value:
                strings(v)

    strings(persona)
    return texts


def _train_spm(kind: SpmKind) -> bytes:
    """``kind``'s tokenizer.model: BPE, no normalization, every space kept, digits split,
    unknown characters spelled as bytes (~1 s)."""
    import io

    import sentencepiece

    unk, bos, eos, pad = kind.ids
    unk_piece, bos_piece, eos_piece, pad_piece = kind.pieces
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_spm_training_text()), model_writer=model, model_type="bpe", vocab_size=SPM_PIECES,
        hard_vocab_limit=False, byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
        add_dummy_prefix=kind.space_prefix, unk_id=unk, bos_id=bos, eos_id=eos, pad_id=pad, unk_piece=unk_piece,
        bos_piece=bos_piece, eos_piece=eos_piece, pad_piece=pad_piece, control_symbols=list(kind.control),
        user_defined_symbols=list(kind.user_defined), num_threads=1, minloglevel=2)
    return model.getvalue()


def spm_tokenizer_folder(cache: Path, kind: SpmKind) -> Path:
    """``kind``'s sentencepiece tokenizer trained here (~800 pieces) as an HF folder:
    tokenizer.model, and the tokenizer.json transformers 4 wrote for such a model (the space
    prefix as a normalizer, so after every special token too, as sentencepiece and llama.cpp put
    it; transformers 5's LlamaTokenizer puts it only where a text does not start with a space;
    Gemma's only turns spaces into "▁"), its pieces of the model's own control and user-defined
    kinds special added tokens."""
    folder = cache / f"{kind.name}-spm-tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    from tokenizers import AddedToken, normalizers
    from transformers import LlamaTokenizer

    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "tokenizer.model").write_bytes(_train_spm(kind))
    _, bos, eos, _ = kind.pieces
    tok = LlamaTokenizer.from_pretrained(tmp, legacy=True, add_bos_token=True, add_eos_token=False,
                                         bos_token=bos, eos_token=eos, unk_token=kind.pieces[0])
    backend = tok.backend_tokenizer
    replace = normalizers.Replace(" ", "▁")
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), replace]) if kind.space_prefix else replace
    backend.pre_tokenizer = None
    whole = (*kind.control, *kind.user_defined)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in whole])
    tok.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


# Byte-level BPE tokenizers as Llama 3 and Qwen2 ship them (their tokenizer.json layouts): a
# Split by the family's regex, then ByteLevel without its own regex; Llama 3 adds BOS through a
# TemplateProcessing post-processor and looks a whole pre-token up before merging
# (ignore_merges), Qwen2 normalizes to NFC and adds nothing. Trained here on the zoo's texts.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_MERGES = 800  # merges learned on top of the 256 byte tokens
# Words Llama 3's kind has whole though no merge makes them (as some of Llama 3's own tokens):
# only a tokenizer that looks a pre-token up before merging (ignore_merges) gives them.
WHOLE_WORDS = (" Zürich", " hippopotamus")
WHOLE_WORDS_TEXT = "From Zürich, a hippopotamus."


@dataclass(frozen=True)
class BpeKind:
    """A byte-level BPE tokenizer as one family ships it."""

    name: str
    split: str  # the pre-tokenizer's regex
    specials: tuple[str, ...]  # added after the learned tokens, as the family numbers them
    tokenizer_class: str  # tokenizer_config.json's
    config_bos: str  # the token config.json's bos_token_id names
    config_eos: tuple[str, ...]  # the tokens its eos_token_id names: one, or a list (Llama 3.2's)
    pad: str | None  # tokenizer_config.json's pad_token
    bos: str | None = None  # put in front of every text by the post-processor
    nfc: bool = False
    ignore_merges: bool = False
    rows_multiple: int = 1  # the embedding's rows: the vocabulary rounded up to a multiple of this


BPE_KINDS: dict[str, BpeKind] = {k.name: k for k in (
    BpeKind("llama3", LLAMA3_SPLIT, ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                     "<|end_header_id|>", "<|eot_id|>"),
            tokenizer_class="PreTrainedTokenizerFast", config_bos="<|begin_of_text|>",
            config_eos=("<|end_of_text|>", "<|eot_id|>"), pad=None, bos="<|begin_of_text|>", ignore_merges=True),
    BpeKind("qwen2", QWEN2_SPLIT, ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            tokenizer_class="Qwen2Tokenizer", config_bos="<|endoftext|>", config_eos=("<|im_end|>",),
            pad="<|endoftext|>", nfc=True, rows_multiple=128),  # Qwen2.5: 151936 rows for 151665 tokens
)}


def _train_bpe(kind: BpeKind) -> Tokenizer:
    """``kind``'s tokenizer, its merges learned on ``_spm_training_text`` (~1 s)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC() if kind.nfc else None
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(kind.split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + BPE_MERGES, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_spm_training_text(), trainer)
    if kind.ignore_merges:
        tok = _with_whole_words(tok, WHOLE_WORDS)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in kind.specials])
    tok.post_processor = _bpe_post_processor(kind, tok)
    return tok


def _with_whole_words(tok: Tokenizer, words: tuple[str, ...]) -> Tokenizer:
    """``tok`` looking a pre-token up before merging, with ``words`` added to its vocabulary
    and no merge making them."""
    from tokenizers import Tokenizer, pre_tokenizers

    layout = json.loads(tok.to_str())
    vocab = layout["model"]["vocab"]
    spell = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for word in words:
        vocab.setdefault(spell.pre_tokenize_str(word)[0][0], len(vocab))
    layout["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(layout))


def _bpe_post_processor(kind: BpeKind, tok: Tokenizer) -> PostProcessor:
    from tokenizers import processors

    if kind.bos is None:  # Qwen2's
        return processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    byte_level = processors.ByteLevel(trim_offsets=False)  # Llama 3's: offsets only
    bos = (kind.bos, tok.token_to_id(kind.bos))
    framed = processors.TemplateProcessing(single=f"{kind.bos}:0 $A:0", pair=f"{kind.bos}:0 $A:0 {kind.bos}:1 $B:1",
                                           special_tokens=[bos])
    return processors.Sequence([byte_level, framed])


def _bpe_folder_name(kind: BpeKind) -> str:
    return f"{kind.name}-bpe-tokenizer"


def _bpe_kind_of(source: Path) -> BpeKind | None:
    """The BPE kind ``source`` (a tokenizer folder) was trained as, or None (SmolLM2's, sentencepiece)."""
    return next((k for k in BPE_KINDS.values() if source.name == _bpe_folder_name(k)), None)


def bpe_tokenizer_folder(cache: Path, kind: BpeKind) -> Path:
    """``kind``'s tokenizer trained here, as an HF folder (tokenizer.json)."""
    folder = cache / _bpe_folder_name(kind)
    if (folder / "tokenizer.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _train_bpe(kind).save(str(tmp / "tokenizer.json"))
    tmp.rename(folder)
    return folder


def tokenizer_folder(family: Family, cache: Path) -> Path:
    """The folder whose tokenizer the family's model starts from."""
    if family.tokenizer == "smollm2":
        return base_tokenizer_folder(cache)
    if family.spm:
        return spm_tokenizer_folder(cache, SPM_KINDS[family.tokenizer])
    return bpe_tokenizer_folder(cache, BPE_KINDS[family.tokenizer])


def _write_tokenizer(family: Family, source: Path, folder: Path) -> int:
    """The base tokenizer with the family's special tokens, BOS/EOS and chat template; returns
    the vocabulary size."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    spm = SPM_KINDS.get(family.tokenizer)
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    wanted = [*(spm.added if spm else ()), *(t for t in (family.bos, family.eos, *family.specials) if t is not None)]
    new = list(dict.fromkeys(t for t in wanted if t not in added))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    layout = json.loads(tok.to_str())
    for token in layout["added_tokens"]:  # as Phi-3's tokenizer.json has them
        token["rstrip"] = bool(spm and token["content"] in spm.rstrip)
    (folder / "tokenizer.json").write_text(json.dumps(layout, ensure_ascii=False), encoding="utf-8")
    chat = TEMPLATES[family.template] if family.template else (source / "chat_template.jinja").read_text("utf-8")
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": family.bos, "eos_token": family.eos,
                "pad_token": family.eos, "chat_template": chat, "model_max_length": 4096}
    kind = _bpe_kind_of(source)
    if kind is not None:  # transformers' Qwen2Tokenizer puts its own pre-tokenizer in: only over Qwen2's kind
        settings |= {"tokenizer_class": kind.tokenizer_class, "pad_token": kind.pad}
    if spm is not None:  # as Llama 2's, Mistral's, Gemma's and Phi-3's tokenizer_config.json
        shutil.copyfile(source / "tokenizer.model", folder / "tokenizer.model")
        settings |= {"tokenizer_class": "GemmaTokenizer" if spm.name == "gemma" else "LlamaTokenizer",
                     "unk_token": spm.pieces[0], "add_bos_token": True, "add_eos_token": False, "legacy": True}
        if spm.added:  # Phi-3's also names its added tokens in added_tokens.json
            ids = {t["content"]: int(t["id"]) for t in layout["added_tokens"]}
            (folder / "added_tokens.json").write_text(json.dumps({t: ids[t] for t in spm.added}, indent=1))
        if spm.lists_added:
            settings["added_tokens_decoder"] = {
                str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
                for t in layout["added_tokens"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))
    return int(tok.get_vocab_size(with_added_tokens=True))


def _init_weights(model, family: Family, seed: int) -> None:
    """Peaked random weights (see the module docstring). Gemma stores norm weights as w - 1."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    offset = spec_for(family.model_type).norm_offset
    tied = bool(family.config.get("tie_word_embeddings"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name == "model.norm.weight":
                value = 4.0 + 0.3 * noise
            elif name.endswith("norm.weight"):
                value = 1.0 + 0.2 * noise
            elif name.endswith(".bias"):
                value = 0.5 * noise
            elif "embed_tokens" in name or name == "lm_head.weight":
                # Rows of log-normal length: a heavy-tailed logit distribution, whose top token
                # stands clear of the next (Gaussian rows leave near-ties among 49k tokens).
                rows = torch.exp(0.5 * torch.randn((p.shape[0], 1), generator=gen))
                output = name == "lm_head.weight" or tied
                value = noise * (rows * family.output_scale if output else 1.0)
            else:
                short = name.rsplit(".", 2)[-2]
                gain = family.qk_gain if short in ("q_proj", "k_proj") else 1.0
                value = noise * gain / math.sqrt(p.shape[1])
                if short == "qkv_proj":  # phi3: q and k rows sharpened, v rows as they are
                    n_q = family.config.get("num_attention_heads", 4) * (HIDDEN // 4)
                    n_k = COMMON["num_key_value_heads"] * (HIDDEN // 4)
                    value[: n_q + n_k] *= family.qk_gain
            if name.endswith("norm.weight"):
                value = value - offset
            p.copy_(value)


@dataclass
class ZooModel:
    family: Family
    folder: Path
    work: Path  # where this model's GGUFs go
    _ggufs: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def config(self) -> dict:
        return json.loads((self.folder / "config.json").read_text(encoding="utf-8"))

    @cached_property
    def state(self) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        return {k: v.astype(np.float32) for k, v in load_file(self.folder / "model.safetensors").items()}

    @cached_property
    def tokenizer(self):
        from tunechat.personalize.base import load_tokenizer

        return load_tokenizer(self.folder)

    @cached_property
    def hf_model(self):
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=torch.float32, attn_implementation="eager")
        return model.eval()

    @cached_property
    def prompts(self) -> list[list[int]]:
        return zoo_prompts(self.tokenizer)

    @cached_property
    def hf_logits(self) -> np.ndarray:
        return hf_next_token_logits(self.hf_model, self.prompts)

    @cached_property
    def pre_tokenizer(self) -> tuple[str, bool]:
        """(llama.cpp pre-tokenizer, add BOS?), chosen as ``gguf_of_folder`` chooses them."""
        from tunechat.core.engine import tokenize_with_vocab

        tok = self.tokenizer
        reference = tok(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
        plain, framed = tok("x", add_special_tokens=False)["input_ids"], tok("x")["input_ids"]
        add_bos = len(framed) > len(plain) and framed[0] == tok.bos_token_id
        spec = spec_for_config(self.config)
        pre = choose_pre_tokenizer(self.folder, self.config, spec, reference, tokenize_with_vocab, self.work, add_bos)
        return pre, add_bos

    def write(self, out: Path, outtype: str = "f16", state: dict | None = None, config: dict | None = None) -> Path:
        """This model (or ``state``/``config`` standing for it) written from its HF folder as GGUF."""
        pre, add_bos = self.pre_tokenizer
        write_gguf(self.state if state is None else state, self.config if config is None else config,
                   self.folder, out, outtype, pre_tokenizer=pre, add_bos=add_bos)
        return out

    def gguf(self, outtype: str) -> Path:
        """The HF folder as a GGUF: f16 / q8_0 / f32 by our writer, Q4_K_M by llama.cpp's quantizer."""
        if outtype not in self._ggufs:
            out = self.work / f"{self.family.name}-{outtype}.gguf"
            if outtype == "Q4_K_M":
                quantize_q4_k_m(self.gguf("f16"), out)
            else:
                self.write(out, outtype)
            self._ggufs[outtype] = out
        return self._ggufs[outtype]


def hf_next_token_logits(model, prompts: list[list[int]]) -> np.ndarray:
    import torch

    rows = []
    with torch.no_grad():
        for ids in prompts:
            out = model(input_ids=torch.tensor([ids]))
            rows.append(out.logits[0, -1].float().numpy())
    return np.stack(rows)


def peakedness(logits: np.ndarray) -> tuple[float, float]:
    """(smallest top-1 probability, smallest top-1 minus top-2 logit) over the rows."""
    shifted = logits - logits.max(-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return float(probs.max(-1).min()), float((top2[:, 1] - top2[:, 0]).min())


def quantize_q4_k_m(source: Path, out: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    failed = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if failed:
        raise RuntimeError(f"llama.cpp could not quantize {source.name} to Q4_K_M")


# What every zoo model must give on every zoo prompt (HF, float32): the top token's probability
# and its lead over the runner-up in logits; and the prompts' top tokens must differ (all but
# one pair), so the model reads its input. Seeds are tried in order until one does.
MIN_TOP1_PROB, MIN_TOP1_MARGIN = 0.5, 1.0


def is_peaked(logits: np.ndarray) -> bool:
    prob, margin = peakedness(logits)
    distinct = len(set(logits.argmax(-1).tolist()))
    return prob >= MIN_TOP1_PROB and margin >= MIN_TOP1_MARGIN and distinct >= len(logits) - 1


def zoo_prompts(tokenizer) -> list[list[int]]:
    """Token ids of the chat turn (rendered by the family's template) and the plain texts."""
    chat = tokenizer.apply_chat_template(list(CHAT), tokenize=False, add_generation_prompt=True)
    return [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (chat, *TEXTS)]


def _embedding_rows(kind: BpeKind | None, tokens: int) -> int:
    """config.json's vocab_size: the tokenizer's size, padded as the family pads it."""
    multiple = kind.rows_multiple if kind is not None else 1
    return -(-tokens // multiple) * multiple


def _config_token_ids(kind: BpeKind | None, tokenizer) -> dict[str, int | list[int]]:
    """config.json's bos_token_id and eos_token_id as the family's own has them (Qwen2.5 names
    <|endoftext|> BOS there, though its tokenizer has none; Llama 3.2 a list of EOS); the
    tokenizer's own BOS and EOS for the others."""
    if kind is None:
        return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    eos = [tokenizer.convert_tokens_to_ids(t) for t in kind.config_eos]
    return {"bos_token_id": tokenizer.convert_tokens_to_ids(kind.config_bos),
            "eos_token_id": eos[0] if len(eos) == 1 else eos}


def build_folder(family: Family, tokenizer_source: Path, folder: Path, max_seeds: int = 32) -> Path:
    """The family's tiny model saved as an HF folder (config, safetensors, tokenizer, template):
    the first seed whose weights are peaked on every zoo prompt."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunechat.personalize.base import load_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer(family, tokenizer_source, folder)
    tokenizer = load_tokenizer(folder)
    prompts = zoo_prompts(tokenizer)
    kind = _bpe_kind_of(tokenizer_source)
    settings = {**COMMON, **family.config, "vocab_size": _embedding_rows(kind, vocab),
                **_config_token_ids(kind, tokenizer)}
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(model_type, **settings)
    config._name_or_path = f"zoo-{family.name}"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()
    for seed in range(max_seeds):
        _init_weights(model, family, seed)
        if is_peaked(hf_next_token_logits(model, prompts)):
            model.save_pretrained(folder)
            return folder
    raise RuntimeError(f"no seed below {max_seeds} gives a peaked {family.name} model")


class Zoo:
    """The session's models, each built on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict[str, ZooModel] = {}
        self._failed: dict[str, str] = {}

    def __getitem__(self, name: str) -> ZooModel:
        if name in self._failed:  # not built again for every test of the family
            raise RuntimeError(self._failed[name])
        if name not in self._models:
            family = FAMILIES.get(name) or SPM_FAMILIES[name]
            try:
                folder = build_folder(family, tokenizer_folder(family, self.root), self.root / name / "hf")
            except Exception as exc:
                self._failed[name] = f"building the {name} model failed: {exc}"
                raise
            work = self.root / name / "gguf"
            work.mkdir(parents=True, exist_ok=True)
            self._models[name] = ZooModel(family, folder, work)
        return self._models[name]



def copy_gguf(source: Path, out: Path, drop_key: str | None = None, drop_tensor: str | None = None) -> Path:
    """``source`` (an F16/F32 GGUF) written again without one metadata field or tensor."""
    import gguf

    from tunechat.convert.header import decode_value, read_header, read_tensor_bytes

    header = read_header(source)
    writer = gguf.GGUFWriter(out, arch=header.strings[gguf.Keys.General.ARCHITECTURE])
    for key, raw in header.metadata_raw.items():
        if key in (drop_key, gguf.Keys.General.ARCHITECTURE):
            continue
        value, val_type, sub_type = decode_value(raw)
        writer.add_key_value(key, value, gguf.GGUFValueType(val_type),
                             sub_type=gguf.GGUFValueType(sub_type) if sub_type is not None else None)
    dtypes = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}
    for info in header.tensors:
        if info.name == drop_tensor:
            continue
        _, data = read_tensor_bytes(source, header, info.name)
        array = np.frombuffer(data, dtype=dtypes[gguf.GGMLQuantizationType(info.type_id)])
        writer.add_tensor(info.name, array.reshape(tuple(reversed(info.shape))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
