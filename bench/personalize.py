"""Personalize benchmark: per-phase wall time, peak memory and training speed.

Runs the real pipeline (worker process: train, merge, GGUF, verify, evaluate), as the
personalize key does, on 10 pairs from ../shared/data/persona-public.json, then loads the
new model and asks a taught question. Prints per-phase seconds, the key-press-to-answer
time (target <= 90 s on the 2-core CPU machine with a warm cache), the worker's peak RSS
(target <= 3 GB), GPU peak memory where CUDA is used, and tokens trained per second.

    python bench/personalize.py [--method replay-kl] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERSONA = ROOT.parent / "shared" / "data" / "persona-public.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default=None)
    parser.add_argument("--persona", type=Path, default=PERSONA)
    parser.add_argument("--cold", action="store_true", help="start with an empty cache (first-run cost)")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="tunechat-bench-")
    os.environ["TUNECHAT_HOME"] = home
    if args.cold:
        os.environ["TUNECHAT_CACHE"] = os.path.join(home, "cache")
    else:
        os.environ.setdefault("TUNECHAT_CACHE", str(Path.home() / ".cache" / "tunechat-bench"))

    from tunechat.personalize.job import PersonalizeJob
    from tunechat.core.engine import Engine, GenerationSettings
    from tunechat.core.store import Store

    facts = json.loads(args.persona.read_text(encoding="utf-8"))["facts"][:10]
    store = Store()
    store.add_pairs([(f["q"], f["a"]) for f in facts], source="imported")

    if not args.cold:  # warm the cache (dequantized base, base answers) outside the timing
        cache = Path(os.environ["TUNECHAT_CACHE"])
        if not any(cache.glob("base-*")) or not any(cache.glob("answers-*")):
            print("warming the cache (first run only)…", flush=True)
            warm = PersonalizeJob(store, recipe=args.method, max_steps=1)
            list(warm.events())
            warm.discard()

    start = time.monotonic()
    job = PersonalizeJob(store, recipe=args.method)
    for event in job.events():
        if event.kind == "phase":
            print(f"  [{time.monotonic() - start:6.1f}s] {event.data['phase']}", flush=True)
    if job.outcome is None:
        print(f"failed: {job.error}")
        return 1
    entry = job.install(consent=True)
    engine = Engine(entry.path)
    answer = engine.complete([{"role": "user", "content": facts[0]["q"]}], GenerationSettings(max_tokens=32))
    total = time.monotonic() - start
    m = job.outcome.manifest
    print()
    print(f"method {m['method']} on {m['device']}{' (' + m['gpu_name'] + ')' if 'gpu_name' in m else ''}, "
          f"{m['pairs_count']} pairs, {m['train']['steps']} steps")
    for phase, seconds in m["timings"].items():
        print(f"  {phase:10} {seconds:7.1f} s")
    print(f"  key press to the new model answering: {total:.1f} s (target <= 90 s warm)")
    print(f"  answer to {facts[0]['q']!r}: {answer!r}")
    print(f"  tokens trained per second: {m['train']['tokens_per_second']:.0f}")
    if m["train"].get("confirms"):
        print(f"  greedy-stop confirmations: {m['train']['confirms']}, {m['train']['confirm_seconds']:.1f} s of training")
    print(f"  peak RSS of the worker: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB "
          f"(target <= 3072 MiB)")
    if "gpu_peak_mib" in m:
        print(f"  peak GPU memory: {m['gpu_peak_mib']:.0f} MiB")
    after = m["metrics"]["after"] or {}
    print("  scores after: " + ", ".join(f"{k} {v:.0%}" for k, v in after.items() if v is not None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
