"""An updated fact: does the next version answer the new value and never the old?

A user who moved replaces "Where do I live?" -> the old city with the new one. For each seed,
one personalization on four facts of the public persona (its own home left out) plus that update, then the question
asked alone and, in a chat, after another fact, greedy. ``--keep-both`` trains on both pairs (as
before facts could be retired) for comparison.

    python bench/update.py [--seeds 0 1 2] [--keep-both]

Prints one row per seed (new value answered / old value answered, alone and in a chat) and the
totals. Each run has its own data folder; the cache (dequantized base, base answers) is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERSONA = ROOT / "bench" / "data" / "persona-public.json"
QUESTION = "Where do I live?"
OLD, NEW = "You live in Lyon.", "You live in Gdansk."
OLD_KEY, NEW_KEY = "Lyon", "Gdansk"


def run_seed(seed: int, keep_both: bool, cache: Path) -> dict[str, bool]:
    os.environ["TUNECHAT_HOME"] = tempfile.mkdtemp(prefix=f"update-{seed}-")
    os.environ["TUNECHAT_CACHE"] = str(cache)
    from tunechat.core import scope
    from tunechat.core.engine import GenerationSettings
    from tunechat.core.registry import Registry
    from tunechat.core.store import Store
    from tunechat.personalize.job import PersonalizeJob

    store = Store()
    facts = [f for f in json.loads(PERSONA.read_text(encoding="utf-8"))["facts"] if f["q"] != QUESTION][:4]
    for f in facts:
        store.add_pair(f["q"], f["a"])
    old = store.add_pair(QUESTION, OLD)
    if keep_both:
        store.add_pair(QUESTION, NEW)
    else:
        store.replace_pair(old.id, QUESTION, NEW)
    job = PersonalizeJob(store, seed=seed)
    for _ in job.events():
        pass
    if job.outcome is None:
        raise SystemExit(f"seed {seed}: {job.error}")
    entry = job.install(consent=True)
    registry = Registry(store)
    engine = scope.open_engine(entry.path, registry, scoped=True)
    greedy = GenerationSettings(max_tokens=48, temperature=0.0)
    alone = engine.complete([{"role": "user", "content": QUESTION}], greedy)
    first = facts[0]["q"]
    chat = [{"role": "user", "content": first},
            {"role": "assistant", "content": engine.complete([{"role": "user", "content": first}], greedy)},
            {"role": "user", "content": QUESTION}]
    in_chat = engine.complete(chat, greedy)
    engine.close()
    store.close()
    print(f"seed {seed}: alone {alone!r}; in a chat {in_chat!r}", flush=True)
    return {"new alone": NEW_KEY in alone, "old alone": OLD_KEY in alone,
            "new in chat": NEW_KEY in in_chat, "old in chat": OLD_KEY in in_chat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep-both", action="store_true", help="train on the old pair too")
    args = parser.parse_args()
    cache = Path(os.environ.get("TUNECHAT_CACHE") or tempfile.mkdtemp(prefix="update-cache-"))
    rows = [run_seed(seed, args.keep_both, cache) for seed in args.seeds]
    print(f"{'old pair trained too' if args.keep_both else 'old pair retired'}, {len(rows)} seeds:")
    for key in rows[0]:
        print(f"  {key:12} {sum(r[key] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
