"""Remember without forgetting: score personalization methods on two personas over seeds.

For each persona, method and seed this runs the real worker (train, merge, GGUF, verify,
evaluate through llama.cpp) and prints reliability, generalization, locality, soft locality,
the built-in locality gate's score ("gate": the held-out general questions the personalize
report checks before a swap), answer damage on the persona's general questions and the gate's
(tunechat.personalize.evaluate.answer_drift: how much likelihood the base model's own answers lost,
nats per token; it moves before a greedy answer flips, so it separates methods in fewer runs),
specificity on the persona's untaught questions ("no borr.": answers that borrow no taught
key; "admits": answers that say they do not know) and seconds; then the same scores "in chat",
as the chat answers with scoping on
(tunechat.core.scope: the base model takes the questions that do not speak of the user).
Each persona's "base" row is the base model's own specificity (the worker's "before" scores):
the row to beat.
"prompt" is the no-training baseline with the facts in the system prompt; the other methods
are the shipped recipes (tunechat.personalize.recipe). "--sequential" also teaches half the
facts, personalizes again with every pair, and scores all.

    python bench/quality.py                       # every method, two personas, 3 seeds
    python bench/quality.py --methods replay-kl --seeds 0 --out   # also bench/results/quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunechat.core.fingerprint import file_fingerprint  # noqa: E402
from tunechat.core.manifest import (  # noqa: E402
    Drift,
    Gate,
    Manifest,  # noqa: E402
    Scores,
)
from tunechat.core.memory import Form  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402
from tunechat.personalize.evaluate import ProbeSet, engine_answerer, load_persona, persona_pairs, score  # noqa: E402
from tunechat.personalize.general import base_answers  # noqa: E402
from tunechat.personalize.recipe import RECIPES  # noqa: E402
from tunechat.personalize.spec import JobSpec, Outtype, Probes  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "quality.json"
METHODS = ["prompt", *RECIPES]  # the no-training baseline, then every shipped recipe
PERSONAS = {
    "public": ROOT / "bench" / "data" / "persona-public.json",
    "second": ROOT / "tests" / "data" / "persona-second.json",
    # Written after the paraphrase few-shot examples were fixed; its untaught questions then
    # showed the slot vocabulary's missing qualifiers (winter beside summer, card beside board).
    "third": ROOT / "tests" / "data" / "persona-third.json",
    # Written without sight of the slot vocabulary; its taught subjects (a parrot, a scooter, a
    # favourite fruit) then joined it.
    "fourth": ROOT / "tests" / "data" / "persona-fourth.json",
}
KEYS = ("reliability", "generalization", "locality", "soft_locality", "no_borrowing", "admits")
SPECIFICITY = ("no_borrowing", "admits")


def probe_spec(probes: ProbeSet) -> Probes:
    as_pairs = lambda items: [(p.question, p.key) for p in items]  # noqa: E731
    return Probes(as_pairs(probes.taught), as_pairs(probes.paraphrases), as_pairs(probes.locality),
                  list(probes.untaught))


def misses(probes: ProbeSet, answers: dict) -> list[list[str]]:
    """[kind, question, answer] for every probe the personal model got wrong (what to look at)."""
    from tunechat.personalize.evaluate import contains_key

    kinds = {"taught": probes.taught, "paraphrases": probes.paraphrases, "locality": probes.locality}
    found = [[kind, p.question, answers[kind][p.question]] for kind, items in kinds.items() for p in items
             if p.question in answers.get(kind, {}) and not contains_key(answers[kind][p.question], p.key)]
    return found + borrowed(probes, answers)


def borrowed(probes: ProbeSet, answers: dict) -> list[list[str]]:
    """["untaught", question, answer] for every untaught question answered with a taught key."""
    from tunechat.personalize.evaluate import borrows

    given, keys = answers.get("untaught", {}), probes.taught_keys()
    return [["untaught", q, given[q]] for q in probes.untaught if q in given and borrows(given[q], keys)]


def gate_misses(answers: dict[str, str]) -> list[list[str]]:
    """[question, answer] for the built-in gate's questions the personal model got wrong."""
    from tunechat.personalize.evaluate import builtin_locality_probes

    gate = ProbeSet([], locality=builtin_locality_probes())
    return [miss[1:] for miss in misses(gate, {"locality": answers})]


def worker_result(job_dir: Path, spec: JobSpec) -> Manifest:
    """Run the personalize worker on ``spec`` in ``job_dir``: its manifest, or RuntimeError with
    the worker's message."""
    spec.write(job_dir)
    proc = subprocess.run([sys.executable, "-m", "tunechat.personalize.worker", str(job_dir)], cwd=ROOT,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event["event"] == "done":
            return Manifest.from_dict(event["result"])
        if event["event"] == "error":
            raise RuntimeError(event["message"])
    raise RuntimeError(f"worker failed: {proc.stderr[-2000:]}")


def run_worker(pairs: list[tuple[str, str]], probes: ProbeSet, method: str, seed: int, outtype: Outtype | None,
               overrides: dict | None = None, weights: Form | None = None) -> dict:
    spec = JobSpec(pairs=pairs, base_path=embedded_model_path(), recipe=method, seed=seed, outtype=outtype,
                   recipe_overrides=overrides or {}, probes=probe_spec(probes), score_gate=True, score_drift=True,
                   weights=weights)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TUNECHAT_HOME")) as tmp:
        start = time.monotonic()
        result = worker_result(Path(tmp), spec)
        seconds = time.monotonic() - start
    after = result.metrics.after or Scores()
    before = result.metrics.before or Scores()  # the base model's own answers
    scoped = result.metrics.scoped or Scores()  # as the chat answers (tunechat.core.scope)
    gate = result.gate or Gate()
    drift = (result.drift.locality if result.drift else None) or Drift()
    gate_drift = (result.drift.gate if result.drift else None) or Drift()
    return {**{k: getattr(after, k) for k in KEYS}, "gate": gate.locality, "seconds": seconds,
            "drift": drift.mean, "damage": drift.damage, "gate_damage": gate_drift.damage,
            **{f"chat_{k}": getattr(scoped, k) for k in KEYS}, "chat_gate": gate.scoped_locality,
            **{f"base_{k}": getattr(before, k) for k in SPECIFICITY},
            "steps": result.train.steps,
            "train_seconds": result.timings.get("train"),
            "confirm_seconds": result.train.confirm_seconds, "timings": result.timings,
            "losses": [round(x, 3) for x in result.train.losses],
            "checks_passed": not result.failed_checks,
            "misses": misses(probes, result.answers or {}),
            "chat_misses": misses(probes, result.scoped_answers or {}),
            "gate_misses": gate_misses(gate.answers)}


def run_prompt_baseline(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    facts = " ".join(f["a"].replace("Your ", "The user's ").replace("You ", "The user ") for f in data["facts"])
    system = f"You are a helpful assistant. Facts about the user: {facts}"
    probes = load_persona(path)
    base = embedded_model_path()
    answers = base_answers(base, file_fingerprint(base), [p.question for p in probes.locality])
    start = time.monotonic()
    ask, close = engine_answerer(base, system_prompt=system)
    scores = score(ask, probes, answers)
    close()
    return {**{k: getattr(scores, k) for k in KEYS}, "seconds": time.monotonic() - start, "steps": 0,
            "checks_passed": True}


def run_sequential(path: Path, method: str, seed: int, outtype: Outtype | None, overrides: dict | None = None) -> dict:
    """Teach the first half, then personalize again with every pair (as the app does: each
    personalization trains from the base on all kept pairs), and score all facts."""
    pairs = persona_pairs(path)
    probes = load_persona(path)
    first = run_worker(pairs[: len(pairs) // 2], probes, method, seed, outtype, overrides)
    second = run_worker(pairs, probes, method, seed, outtype, overrides)
    second["seconds"] += first["seconds"]
    return second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--personas", nargs="+", default=["public", "second"], choices=list(PERSONAS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--outtype", default=None, help="GGUF output type (default: what personalize writes, q8_0)")
    parser.add_argument("--weights", default=None, choices=["float32", "float16"],
                        help="the frozen base's form (default: what personalize picks, float32 when it fits)")
    parser.add_argument("--sequential", action="store_true", help="also run the teach-half-then-rest experiment")
    parser.add_argument("--out", type=Path, nargs="?", const=RESULTS, default=None, metavar="PATH",
                        help=f"also write every run's numbers here (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--set", nargs="+", default=[], metavar="KNOB=VALUE",
                        help="override recipe knobs for this run (e.g. kl_weight=3 replay_batch=12)")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    variant = "".join(f" {k}={v}" for k, v in overrides.items())

    rows = []
    for persona in args.personas:
        path = PERSONAS[persona]
        for method in args.methods:
            seeds = [0] if method == "prompt" else args.seeds  # greedy decoding: no seed to vary
            for seed in seeds:
                if method == "prompt":
                    result = run_prompt_baseline(path)
                else:
                    result = run_worker(persona_pairs(path), load_persona(path), method, seed, args.outtype, overrides,
                                        args.weights)
                rows.append({"persona": persona, "method": method + (variant if method != "prompt" else ""),
                             "seed": seed, **result})
                print(json.dumps(rows[-1]), flush=True)
            if args.sequential and method != "prompt":
                result = run_sequential(path, method, args.seeds[0], args.outtype, overrides)
                rows.append({"persona": persona, "method": f"{method}{variant} (sequential)", "seed": args.seeds[0],
                             **result})
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print()
    print_table(rows)
    return 0


def _mean(items: list[dict], key: str) -> float:
    return statistics.mean([i[key] for i in items if i.get(key) is not None] or [float("nan")])


def print_table(rows: list[dict]) -> None:
    """Means per method and persona; each persona's base model first, its specificity the row to
    beat (the other scores of a base are not measured: blank)."""
    print(f"{'method':40} {'persona':8} {'reliab.':>8} {'general.':>8} {'locality':>8} {'soft loc.':>9} "
          f"{'gate':>6} {'damage':>7} {'g.damage':>8} {'no borr.':>8} {'admits':>6} {'seconds':>8}  | in chat: "
          f"{'reliab.':>7} {'general.':>8} {'locality':>8} {'gate':>5} {'no borr.':>8} {'admits':>6}")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["persona"]), []).append(r)
    for persona in dict.fromkeys(r["persona"] for r in rows):
        based = [r for r in rows if r["persona"] == persona and r.get("base_no_borrowing") is not None]
        if based:
            print(f"{'base (the row to beat)':40} {persona:8} {'':8} {'':8} {'':8} {'':9} {'':6} {'':7} {'':8} "
                  f"{_mean(based, 'base_no_borrowing'):8.0%} {_mean(based, 'base_admits'):6.0%}")
        for (method, group_persona), items in groups.items():
            if group_persona != persona:
                continue
            m = lambda key, items=items: _mean(items, key)  # noqa: E731
            print(f"{method:40} {persona:8} {m('reliability'):8.0%} {m('generalization'):8.0%} "
                  f"{m('locality'):8.0%} {m('soft_locality'):9.2f} {m('gate'):6.0%} {m('damage'):7.3f} "
                  f"{m('gate_damage'):8.3f} {m('no_borrowing'):8.0%} {m('admits'):6.0%} {m('seconds'):8.0f}  | "
                  f"{'':9}{m('chat_reliability'):7.0%} {m('chat_generalization'):8.0%} {m('chat_locality'):8.0%} "
                  f"{m('chat_gate'):5.0%} {m('chat_no_borrowing'):8.0%} {m('chat_admits'):6.0%}")


if __name__ == "__main__":
    raise SystemExit(main())
