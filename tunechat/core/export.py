"""A personal version as a self-contained folder for other tools.

The folder holds the merged GGUF when the version has one (llama.cpp, LM Studio, Ollama through
its ``Modelfile``), the llama.cpp LoRA adapter with the base it belongs to named and hashed
(``llama-server -m BASE --lora ADAPTER``; Ollama's ``ADAPTER`` for a version kept as an adapter
only), the peft adapter (safetensors + adapter_config.json) for Hugging Face users,
the pairs it learned as OpenAI chat fine-tuning JSONL, and a README.txt saying how to run each.

It is written into a hidden staging folder beside the target and renamed into place once
complete and checked, so an export that fails (a full disk) or is killed leaves no folder
under the target's name; a leftover staging folder is removed by the next export there.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from tunechat.convert.header import decode_value, read_header
from tunechat.core import chat_template, jsonl
from tunechat.core.fingerprint import base_fingerprint, file_fingerprint
from tunechat.core.gguf_check import ModelFileError, check_gguf_file
from tunechat.core.registry import ADAPTER_FILE, MODEL_FILE, PAIRS_FILE, ModelEntry
from tunechat.core.store import Store, pairs_fingerprint

PEFT_FOLDER = "adapter"  # in a version and in an export
MODELFILE = "Modelfile"
BASE_INFO = "base.json"
STAGING_PREFIX = ".tunechat-export-"


class ExportError(Exception):
    pass


def store_pairs_if_trained_on(entry: ModelEntry, store: Store) -> list[tuple[str, str]] | None:
    """The store's pairs, when they are the very pairs ``entry`` was trained on (its manifest
    records their hash): what to export for a version that does not keep its own."""
    pairs = store.pairs()
    if entry.manifest is None or entry.manifest.pairs_sha256 != pairs_fingerprint(pairs):
        return None
    return [(p.question, p.answer) for p in pairs]


def export_version(entry: ModelEntry, target: Path, fallback_pairs: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write ``entry`` (a personal version) to the new folder ``target``; return it.

    ``fallback_pairs``: the pairs to export for a version that does not keep its own (one written
    before versions did), given only when they are the pairs it was trained on."""
    if entry.kind != "personal" or entry.folder is None or entry.manifest is None:
        raise ExportError(f"{entry.name} is not a personal version: only those can be exported.")
    target = target.expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"{target} already exists and is not an empty folder.")
    _check_sources(entry)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{STAGING_PREFIX}{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = parent / f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(mode=0o700)
        _write(entry, staging, fallback_pairs)
        _check_written(entry, staging)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    except OSError as exc:
        raise ExportError(f"Could not write the export to {target}: {exc.strerror or exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_sources(entry: ModelEntry) -> None:
    assert entry.folder is not None and entry.manifest is not None
    if not entry.base_path.is_file():
        raise ExportError(f"The base model of {entry.name} is missing ({entry.base_path}): the adapter "
                          "cannot be exported without it. Put the file back, or export another version.")
    merged = entry.merged_path
    try:
        for path in (merged, entry.adapter_path):
            if path is not None:
                check_gguf_file(path)
    except ModelFileError as exc:
        raise ExportError(f"{entry.name} is damaged: {exc}") from None
    for path, expected in ((merged, entry.manifest.model_sha256), (entry.adapter_path, entry.manifest.adapter_sha256)):
        if path is not None and expected and file_fingerprint(path) != expected:
            raise ExportError(f"{entry.name}'s {path.name} no longer matches the one that was verified.")


def _write(entry: ModelEntry, out: Path, fallback_pairs: Sequence[tuple[str, str]] | None) -> None:
    assert entry.folder is not None and entry.manifest is not None
    notes: list[str] = []
    if entry.merged_path is not None:
        shutil.copyfile(entry.merged_path, out / MODEL_FILE)
    else:
        notes.append("This version keeps only its adapter (its base is large): there is no merged "
                     "model.gguf. Run the adapter over the base, or personalize with --merged to write one.")
    if entry.adapter_path is not None:
        shutil.copyfile(entry.adapter_path, out / ADAPTER_FILE)
    else:
        notes.append("This version was written before adapters were kept: there is no adapter.gguf.")
    peft = entry.folder / PEFT_FOLDER
    if peft.is_dir():
        shutil.copytree(peft, out / PEFT_FOLDER)
    pairs_file = entry.folder / PAIRS_FILE
    if pairs_file.is_file():
        shutil.copyfile(pairs_file, out / PAIRS_FILE)
    elif fallback_pairs:
        jsonl.write_pairs(out / PAIRS_FILE, list(fallback_pairs))
    else:
        notes.append("The pairs this version learned were not kept with it, so pairs.jsonl is missing.")
    base = entry.base_path
    base_sha256 = entry.manifest.base_sha256 or base_fingerprint(base)
    (out / BASE_INFO).write_text(json.dumps({
        "base_file": base.name, "base_path": str(base), "base_sha256": base_sha256,
        "base_source": entry.manifest.base_source, "method": entry.manifest.method,
        "pairs_count": entry.manifest.pairs_count, "version": entry.name,
    }, indent=2) + "\n", encoding="utf-8")
    template, stop = _chat_format(entry.merged_path or base)
    source = None if entry.merged_path is not None else base
    (out / MODELFILE).write_text(modelfile(template, stop, source), encoding="utf-8")
    (out / "README.txt").write_text(readme(entry, base.name, base_sha256, notes), encoding="utf-8")
    for path in out.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def _check_written(entry: ModelEntry, out: Path) -> None:
    """The copies are the files the chat runs: whole GGUFs, bit for bit the verified ones."""
    m = entry.manifest
    assert m is not None
    written = [(out / name, sha256) for name, sha256 in ((MODEL_FILE, m.model_sha256), (ADAPTER_FILE, m.adapter_sha256))
               if (out / name).exists()]
    if not written:
        raise ExportError("The export holds no model file.")
    try:
        for path, _ in written:
            check_gguf_file(path)
    except ModelFileError as exc:
        raise ExportError(f"The exported file is damaged: {exc}") from None
    for path, expected in written:
        if expected and file_fingerprint(path) != expected:
            raise ExportError(f"The exported {path.name} differs from the verified one.")


def _chat_format(model: Path) -> tuple[str | None, str | None]:
    """The model's Jinja chat template and the text of its end-of-turn token."""
    header = read_header(model)
    eos, tokens = (header.metadata_raw.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.tokens"))
    stop = None
    if eos is not None and tokens is not None:
        eos_id, vocabulary = decode_value(eos)[0], decode_value(tokens)[0]
        if isinstance(eos_id, int) and isinstance(vocabulary, list) and 0 <= eos_id < len(vocabulary):
            stop = str(vocabulary[eos_id])
    return header.strings.get("tokenizer.chat_template"), stop


# Ollama writes prompts with Go templates, not Jinja. For ChatML (the embedded model's format)
# the Modelfile says it exactly, with the default system prompt the version was trained under;
# for other families Ollama reads the GGUF's own template.
_CHATML_GO = (
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    '<|im_start|>assistant\n'
)


def modelfile(template: str | None, stop: str | None, base: Path | None = None) -> str:
    """An Ollama Modelfile: ``FROM`` the merged GGUF, or, for a version without one, ``FROM``
    its ``base`` (where it lies on this machine) with the adapter as ``ADAPTER``."""
    lines = [f"FROM ./{MODEL_FILE}"] if base is None else [f"FROM {base}", f"ADAPTER ./{ADAPTER_FILE}"]
    if template and _is_chatml(template):
        system = _default_system_prompt(template)
        lines.append(f'TEMPLATE """{_CHATML_GO}"""')
        if system:
            lines.append(f'SYSTEM """{system}"""')
    if stop:
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"


def _is_chatml(template: str) -> bool:
    return "<|im_start|>" in template and "<|im_end|>" in template


def _default_system_prompt(template: str) -> str | None:
    """The system prompt a ChatML template adds when the conversation brings none."""
    text = chat_template.render(template, [{"role": "user", "content": "\x00"}], add_generation_prompt=False)
    head = "<|im_start|>system\n"
    if not text.startswith(head):
        return None
    return text[len(head):text.index("<|im_end|>")]


def readme(entry: ModelEntry, base_name: str, base_sha256: str, notes: Sequence[str]) -> str:
    m = entry.manifest
    assert m is not None
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.created_at))
    merged = entry.merged_path is not None
    files = [
        f"  model.gguf       the personal model, merged ({m.outtype}); runs anywhere llama.cpp does" if merged else "",
        "  adapter.gguf     the same version as a llama.cpp LoRA over its base model (below)",
        "  adapter/         the LoRA in peft format (safetensors + adapter_config.json) for Hugging Face",
        "  pairs.jsonl      the pairs it learned, OpenAI chat fine-tuning format",
        "  Modelfile        for Ollama" + ("" if merged else " (FROM the base on this machine, ADAPTER adapter.gguf)"),
        "  base.json        the base model the adapter belongs to",
    ]
    run = [
        "  llama.cpp:   llama-cli -m model.gguf -cnv" if merged else "",
        "               llama-server -m model.gguf" if merged else "",
        "  with the adapter over the base (one base file, many versions):",
        f"               llama-server -m /path/to/{base_name} --lora adapter.gguf",
        "  LM Studio:   import model.gguf (My Models, or copy it into its models folder)" if merged else "",
        "  Ollama:      ollama create my-personal-model -f Modelfile && ollama run my-personal-model",
        "  tunechat:    tunechat --model model.gguf" if merged else "",
        "  Python:      from llama_cpp import Llama",
        '               Llama("model.gguf")                       # or:' if merged else "",
        f'               Llama("/path/to/{base_name}", lora_path="adapter.gguf")',
        '  transformers + peft: PeftModel.from_pretrained(base_model, "adapter")',
        f"               (base_model: the Hugging Face model {base_name} was made from)",
    ]
    text = f"""tunechat personal version {entry.name} ({created}, {m.pairs_count} pairs, method {m.method})

Files
{chr(10).join(line for line in files if line)}

Base model: {base_name}
  sha256 {base_sha256}
  The adapter works only over this exact file; check with: sha256sum {base_name}

Run it
{chr(10).join(line for line in run if line)}
"""
    if notes:
        text += "\nNotes\n" + "".join(f"  {n}\n" for n in notes)
    return text
