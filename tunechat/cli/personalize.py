"""``tunechat personalize``: run a job headless, print progress and the report, swap or explain."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tunechat.cli.pairs import print_problems
from tunechat.core import faults, memory, pair_checks, scope
from tunechat.core.registry import Registry
from tunechat.core.store import Pair, Store
from tunechat.core.wording import count
from tunechat.personalize.base import refusal
from tunechat.personalize.job import Event, PersonalizeError, PersonalizeJob
from tunechat.personalize.progress import PHASE_TITLES, RunProgress
from tunechat.personalize.report import full_report


def run_personalize(args: argparse.Namespace, store: Store) -> int:
    """Exit 0 only when the new model is the current one; non-zero with the reason otherwise."""
    from tunechat.personalize.data import EmptyDatasetError

    base = Path(args.base).expanduser().resolve() if getattr(args, "base", None) else None
    if base is not None and not base.exists():
        print(f"tunechat: {args.base} does not exist: --base takes a GGUF file or a Hugging Face model folder.",
              file=sys.stderr)
        return 1
    if base is not None and not (base.is_file() or (base / "config.json").is_file()):
        print(f"tunechat: {args.base} is neither a GGUF file nor a Hugging Face model folder (no config.json).",
              file=sys.stderr)
        return 1
    refused = refusal(base) if base is not None else None
    if refused:
        print(f"tunechat: {refused}", file=sys.stderr)
        return 3
    ignore_memory = bool(getattr(args, "ignore_memory", False))
    too_big = None if ignore_memory else memory.refusal(base or Registry(store).current().base_path,
                                                        "run again with --ignore-memory to try anyway")
    if too_big:
        print(f"tunechat: {too_big}", file=sys.stderr)
        return faults.EXIT_NOT_ENOUGH_MEMORY
    try:
        job = PersonalizeJob(store, base=base, recipe=args.method, seed=args.seed, outtype=args.outtype,
                             max_steps=args.max_steps, write_merged=getattr(args, "merged", None),
                             ignore_memory=ignore_memory, weights=getattr(args, "weights", None),
                             processes=getattr(args, "processes", None))
    except EmptyDatasetError as exc:
        print(f"tunechat: {exc}", file=sys.stderr)
        return 2
    pairs = store.pairs()
    problems = [p for p in pair_checks.check_pairs(pairs, **_token_counter(job.base, pairs)) if p.blocking]
    if problems and not args.yes:
        job.discard()
        print_problems(problems, file=sys.stderr)
        print("tunechat: not personalizing until these are looked at (tunechat pairs check); "
              "run again with --yes to train on the pairs as they are.", file=sys.stderr)
        return faults.EXIT_DATA_PROBLEMS
    progress, busy_said = job.progress(), False
    print(f"Personalizing {job.base.name} on {count(store.count_pairs(), 'pair')}. {progress.estimate_text()}",
          file=sys.stderr)
    try:
        for event in job.events():
            progress.feed(event.kind, event.data)
            busy_said = _print_event(event, progress, busy_said)
    except KeyboardInterrupt:
        job.cancel()
        print("\ntunechat: cancelled; the current model is unchanged.", file=sys.stderr)
        return 130
    if job.outcome is None:
        job.discard()
        print(f"tunechat: personalization failed: {job.error}", file=sys.stderr)
        return job.error_code
    print(full_report(job.outcome.manifest, in_chat=scope.scoping_enabled(store)))
    try:
        entry = job.install(consent=args.yes)
    except PersonalizeError as exc:
        print(f"tunechat: {exc}", file=sys.stderr)
        if job.outcome.needs_consent and not job.outcome.failed_checks:
            print("Run again with --yes to use it anyway.", file=sys.stderr)
        job.discard()
        return 3
    print(f"Now using {entry.name}. Roll back with: tunechat models rollback")
    return 0


def _token_counter(base: Path, pairs: Sequence[Pair]) -> dict:
    """``check_pairs``'s answer-length check with the base's own tokenizer (a GGUF file's
    vocabulary, loaded alone, once); none for a Hugging Face folder."""
    if not base.is_file():
        return {}
    from tunechat.core.engine import tokenize_all_with_vocab

    answers = [p.answer for p in pairs]
    lengths = dict(zip(answers, map(len, tokenize_all_with_vocab(base, answers))))
    return {"count_tokens": lengths.__getitem__}


def _print_event(event: Event, progress: RunProgress, busy_said: bool) -> bool:
    """Phases and training steps, each with the run's time left; once, that the machine is
    busy. Returns whether that was said."""
    data = event.data
    if event.kind == "phase":
        title = PHASE_TITLES.get(data["phase"], data["phase"])
        print(f"[{title}] {data.get('detail', '')}  ({progress.eta_text()})", file=sys.stderr)
    elif event.kind == "progress" and data.get("phase") == "train":
        loss = f"  loss {data['loss']:.4f}" if data.get("loss") is not None else ""
        print(f"  {progress.phase_text('train')}{loss}  ({progress.eta_text()})", file=sys.stderr)
        if progress.busy and not busy_said:
            print(f"  {progress.busy}", file=sys.stderr)
            return True
    return busy_said
