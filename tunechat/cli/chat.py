"""``tunechat chat``: a conversation without the TUI. Each line of standard input is one
message; each answer is printed on standard output, who gave it and why on standard error. The
chat is stored like the TUI's (F2 lists it), and ``--continue`` goes on with the latest one, as
``llm -c`` does."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tunechat.core import scope
from tunechat.core.engine import GenerationSettings
from tunechat.core.store import Store
from tunechat.core.turns import as_history

WHO = {"personal": "personal model", "base": "base model", "untold": "not taught yet"}


def run_chat(args: argparse.Namespace, store: Store, engine: scope.ChatEngine,
             lines: TextIO = sys.stdin, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Answer each line of ``lines`` in one stored chat with ``engine`` (closed at the end)."""
    try:
        chat = store.latest_chat() if args.continue_chat else None
        if chat is None:
            chat = store.create_chat(system_prompt=args.system)
        elif args.system:
            err.write("tunechat: --system applies to a new chat; the chat continued keeps its own.\n")
        settings = GenerationSettings(max_tokens=args.max_tokens, temperature=args.temperature)
        force = scope.forced_route(scope.chat_mode(store, chat.id)) if isinstance(engine, scope.ScopedEngine) else None
        for line in lines:
            text = line.strip()
            if not text:
                continue
            store.add_message(chat.id, "user", text)
            if chat.title == "New chat":
                store.rename_chat(chat.id, text[:40])
                chat = store.get_chat(chat.id)
            history = as_history(store.messages(chat.id), chat.system_prompt)
            answer = ""
            for delta in scope.stream_answer(engine, history, settings, force=force):
                answer += delta
                out.write(delta)
                out.flush()
            out.write("\n")
            by, why = scope.answered_by(engine), scope.answer_reason(engine)
            if by is not None:
                err.write(f"({WHO[by]}: {why})\n")
            if answer.strip():
                store.add_message(chat.id, "assistant", answer.strip(), by, why)
    finally:
        engine.close()
    return 0
