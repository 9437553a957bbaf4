"""Personalize benchmark: per-phase wall time, peak memory and training speed.

Runs the real pipeline (worker process: train, merge, GGUF, verify, evaluate), as the
personalize key does, on 10 pairs from bench/data/persona-public.json, then loads the
new model and asks a taught question. Prints per-phase seconds, the key-press-to-answer
time (target <= 90 s on the 2-core CPU machine with a warm cache), the worker's peak RSS
(target <= 3 GB), GPU peak memory where CUDA is used, and tokens trained per second.

    python bench/personalize.py [--method replay-kl] [--cold] [--out [PATH]]
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

from tunechat.personalize.recipe import RECIPES  # noqa: E402

PERSONA = ROOT / "bench" / "data" / "persona-public.json"
RESULTS = ROOT / "bench" / "results" / "personalize.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default=None, choices=list(RECIPES), help="default: the default recipe")
    parser.add_argument("--persona", type=Path, default=PERSONA)
    parser.add_argument("--cold", action="store_true", help="start with an empty cache (first-run cost)")
    parser.add_argument("--out", type=Path, nargs="?", const=RESULTS, default=None, metavar="PATH",
                        help=f"also write the numbers here (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    home = tempfile.mkdtemp(prefix="tunechat-bench-")
    os.environ["TUNECHAT_HOME"] = home
    if args.cold:
        os.environ["TUNECHAT_CACHE"] = os.path.join(home, "cache")
    else:
        os.environ.setdefault("TUNECHAT_CACHE", str(Path.home() / ".cache" / "tunechat-bench"))

    from tunechat.core.engine import Engine, GenerationSettings
    from tunechat.core.store import Store
    from tunechat.personalize.job import PersonalizeJob

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
            say(f"  [{time.monotonic() - start:6.1f}s] {event.data['phase']}")
    if job.outcome is None:
        say(f"failed: {job.error}")
        return 1
    entry = job.install(consent=True)
    engine = Engine(entry.path)
    answer = engine.complete([{"role": "user", "content": facts[0]["q"]}], GenerationSettings(max_tokens=32))
    total = time.monotonic() - start
    m = job.outcome.manifest
    gpu = f" ({m.gpu_name})" if m.gpu_name else ""
    say()
    say(f"method {m.method} on {m.device}{gpu}, {m.pairs_count} pairs, {m.train.steps} steps")
    for phase, seconds in m.timings.items():
        say(f"  {phase:10} {seconds:7.1f} s")
    say(f"  key press to the new model answering: {total:.1f} s (target <= 90 s warm)")
    say(f"  answer to {facts[0]['q']!r}: {answer!r}")
    say(f"  tokens trained per second: {m.train.tokens_per_second or 0:.0f}")
    if m.train.confirms:
        say(f"  greedy-stop confirmations: {m.train.confirms}, {m.train.confirm_seconds:.1f} s of training")
    say(f"  peak RSS of the worker: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB "
        f"(target <= 3072 MiB)")
    if m.gpu_peak_mib is not None:
        say(f"  peak GPU memory: {m.gpu_peak_mib:.0f} MiB")
    after = m.metrics.after
    scores = {k: v for k, v in vars(after).items() if v is not None} if after else {}
    say("  scores after: " + ", ".join(f"{k} {v:.0%}" for k, v in scores.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
