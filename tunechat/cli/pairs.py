"""``tunechat pairs``: add, list, import, export, check, retire, restore and delete pairs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tunechat.core import faults, pair_checks
from tunechat.core.facts import looks_like_fact, pair_from_fact
from tunechat.core.store import Store
from tunechat.core.wording import count


def add_arguments(sub) -> None:
    """The ``pairs`` actions, on the sub-parsers object of the ``pairs`` command."""
    add = sub.add_parser("add", help="add one pair, or a fact said as a sentence (\"My dog is called Biscuit.\")")
    add.add_argument("question", help="the question, or a fact alone: the model writes the pair, and it is shown")
    add.add_argument("answer", nargs="?", default="")
    lst = sub.add_parser("list", help="list the pairs in use")
    lst.add_argument("--search", default="", help="only pairs whose question or answer contains this")
    lst.add_argument("--retired", action="store_true", help="the retired pairs as well, marked")
    imp = sub.add_parser("import", help="import pairs from JSONL (OpenAI chat fine-tuning format)")
    imp.add_argument("file", type=Path)
    exp = sub.add_parser("export", help="export the pairs in use to JSONL (OpenAI chat fine-tuning format)")
    exp.add_argument("file", type=Path)
    check = sub.add_parser("check", help="look for duplicates, contradictions, overlong answers and questions "
                           "that ask nothing (exit 10 when there are)")
    check.add_argument("--quick", action="store_true", help="without the model: no answer lengths, no "
                       "contradictions in other words, no pairs the model already answers")
    retire = sub.add_parser("retire", help="stop training on a pair, keeping it in history (a fact that changed)")
    retire.add_argument("id", type=int)
    retire.add_argument("--by", type=int, default=None, metavar="NEW_ID", help="the pair that replaces it")
    restore = sub.add_parser("restore", help="put a retired pair back in use")
    restore.add_argument("id", type=int)
    delete = sub.add_parser("delete", help="delete a pair by id")
    delete.add_argument("id", type=int)


def run(args: argparse.Namespace, store: Store, open_checker, open_base) -> int:
    """``open_checker()``: the model-backed checks' arguments (``pair_checks.model_checks``);
    ``open_base()``: the current model's base, loaded (it writes a fact's pair)."""
    from tunechat.core import jsonl
    from tunechat.core.text import one_line

    cmd = args.pairs_command
    if cmd == "add" and not args.answer.strip() and looks_like_fact(args.question):
        written = pair_from_fact(open_base(), args.question)
        if written is None:
            print(f"tunechat: this sentence could not be turned into a pair safely; give the question it answers "
                  f"too: tunechat pairs add \"QUESTION\" {json.dumps(args.question, ensure_ascii=False)}",
                  file=sys.stderr)
            return faults.EXIT_REFUSED
        pair = store.add_pair(written.question, written.answer, source="added")
        print(f"Added pair {pair.id}: {pair.question} → {pair.answer}\n{count(store.count_pairs(), 'pair')} kept. "
              f"Not what you meant? tunechat pairs delete {pair.id}")
        print_problems([p for p in pair_checks.check_pairs(store.pairs()) if pair.id in p.pair_ids],
                       file=sys.stderr, quiet=True)
    elif cmd == "add":
        pair = store.add_pair(args.question, args.answer, source="added")
        print(f"Added pair {pair.id}. {count(store.count_pairs(), 'pair')} kept.")
        print_problems([p for p in pair_checks.check_pairs(store.pairs()) if pair.id in p.pair_ids],
                       file=sys.stderr, quiet=True)
    elif cmd == "list":
        rows = store.pairs(args.search, retired=args.retired)
        for p in rows:
            mark = "" if not p.retired else f"\t(retired{f' for {p.replaced_by}' if p.replaced_by else ''})"
            print(f"{p.id}\t{one_line(p.question, 60)}\t{one_line(p.answer, 60)}{mark}")
        print(count(len(rows), "pair"), file=sys.stderr)
    elif cmd == "import":
        items = jsonl.parse_pairs(args.file)
        n = store.add_pairs(items, source="imported")
        skipped = f" ({count(len(items) - n, 'pair')} already kept, skipped)" if n < len(items) else ""
        print(f"Imported {count(n, 'pair')} from {args.file}{skipped}. {count(store.count_pairs(), 'pair')} kept.")
        if n:
            problems = pair_checks.check_pairs(store.pairs())
            if problems:
                print(f"{pair_checks.summary(problems)} See: tunechat pairs check", file=sys.stderr)
    elif cmd == "export":
        rows = store.pairs()
        jsonl.write_pairs(args.file, rows)
        print(f"Exported {count(len(rows), 'pair')} to {args.file}.")
    elif cmd == "check":
        problems = pair_checks.check_pairs(store.pairs(), **({} if args.quick else open_checker()))
        print_problems(problems)
        return faults.EXIT_DATA_PROBLEMS if any(p.blocking for p in problems) else 0
    elif cmd == "retire":
        store.retire_pair(args.id, replaced_by=args.by)
        by = f" for pair {args.by}" if args.by else ""
        print(f"Retired pair {args.id}{by}: kept in history, not trained again. Undo: tunechat pairs restore {args.id}")
    elif cmd == "restore":
        store.restore_pair(args.id)
        print(f"Pair {args.id} is in use again.")
    elif cmd == "delete":
        store.delete_pair(args.id)
        print(f"Deleted pair {args.id}.")
    return 0


def print_problems(problems: Sequence[pair_checks.Problem], file=sys.stdout, quiet: bool = False) -> None:
    """Each problem on its line, with the command that fixes it, then the summary (``quiet``:
    nothing at all when there is no problem)."""
    for p in problems:
        print(f"{'note' if not p.blocking else p.kind}: {p.text}{_command(p)}", file=file)
    if problems or not quiet:
        print(pair_checks.summary(problems), file=file)


def _command(problem: pair_checks.Problem) -> str:
    first, *rest = problem.pair_ids
    if problem.kind == "duplicate":
        return f" (tunechat pairs delete {rest[0]})"
    if problem.kind == "contradiction":
        return f" (tunechat pairs retire {first} --by {rest[0]})"
    if problem.kind == "nothing_new":
        return f" (tunechat pairs delete {first})"
    return ""

