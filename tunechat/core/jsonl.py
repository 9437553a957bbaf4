"""Pairs as JSONL in OpenAI's chat fine-tuning format: one ``{"messages": [...]}`` per line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tunechat.core.atomic import atomic_path
from tunechat.core.store import Pair, StoreError, validate_pair


class ImportFormatError(StoreError):
    """A JSONL file that cannot be imported; names the offending line."""


def parse_pairs(path: Path) -> list[tuple[str, str]]:
    """Read every pair of a JSONL file, or raise naming the first bad line (and import nothing).

    Each line holds user/assistant turns (a system turn is allowed and ignored); every user
    turn followed by an assistant turn becomes one pair. Blank lines are skipped.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImportFormatError(f"{path}: no such file.") from None
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pairs.extend(_pairs_from_record(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from None
        except StoreError as exc:
            raise ImportFormatError(f"{path}, line {number}: {exc}") from None
    if not pairs:
        raise ImportFormatError(f"{path}: no pairs found (the file is empty).")
    return pairs


def _pairs_from_record(record: object) -> list[tuple[str, str]]:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise StoreError('expected an object with a "messages" list.')
    turns = record["messages"]
    out: list[tuple[str, str]] = []
    question: str | None = None
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise StoreError('each message needs a "role" and a text "content".')
        role = turn.get("role")
        if role == "system":
            continue
        if role == "user":
            question = turn["content"]
        elif role == "assistant":
            if question is None:
                raise StoreError("an assistant message comes before any user message.")
            out.append(validate_pair(question, turn["content"]))
            question = None
        else:
            raise StoreError(f"unknown role {role!r} (expected system, user or assistant).")
    if not out:
        raise StoreError("no user message followed by an assistant message.")
    return out


def write_pairs(path: Path, pairs: Sequence[Pair | tuple[str, str]]) -> None:
    """Write pairs atomically: the target is either untouched or complete."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for p in pairs:
                question, answer = (p.question, p.answer) if isinstance(p, Pair) else p
                record = {"messages": [{"role": "user", "content": question},
                                       {"role": "assistant", "content": answer}]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
