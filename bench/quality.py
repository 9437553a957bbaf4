"""Remember without forgetting: score personalization methods on two personas over seeds.

For each persona, method and seed this runs the real worker (train, merge, GGUF, verify,
evaluate through llama.cpp) and prints reliability, generalization, locality, soft locality,
the built-in locality gate's score ("gate": the held-out general questions the personalize
report checks before a swap), answer damage on the persona's general questions and the gate's
(tunechat.personalize.evaluate.answer_drift: how much likelihood the base model's own answers lost,
nats per token; it moves before a greedy answer flips, so it separates methods in fewer runs)
and seconds; then the same scores "in chat", as the chat answers with scoping on
(tunechat.core.scope: the base model takes the questions that do not speak of the user); "prompt" is the no-training baseline with the facts in the system prompt, and
"sequential" teaches half the facts, personalizes again with the rest, and scores all.

    python bench/quality.py                       # every method, both personas, 3 seeds
    python bench/quality.py --methods replay --seeds 0
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

from tunechat.personalize.evaluate import ProbeSet, engine_answerer, load_persona, persona_pairs, score  # noqa: E402
from tunechat.personalize.general import base_answers  # noqa: E402
from tunechat.personalize.base import file_fingerprint  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402

PERSONAS = {
    "public": ROOT.parent / "shared" / "data" / "persona-public.json",
    "second": ROOT / "tests" / "data" / "persona-second.json",
    # Written after the paraphrase few-shot examples were fixed; never used to tune anything.
    "third": ROOT / "tests" / "data" / "persona-third.json",
}
KEYS = ("reliability", "generalization", "locality", "soft_locality")


def probes_json(probes: ProbeSet) -> dict:
    as_list = lambda items: [[p.question, p.key] for p in items]  # noqa: E731
    return {"taught": as_list(probes.taught), "paraphrases": as_list(probes.paraphrases), "locality": as_list(probes.locality)}


def misses(probes: ProbeSet, answers: dict) -> list[list[str]]:
    """[kind, question, answer] for every probe the personal model got wrong (what to look at)."""
    from tunechat.personalize.evaluate import contains_key

    kinds = {"taught": probes.taught, "paraphrases": probes.paraphrases, "locality": probes.locality}
    return [[kind, p.question, answers[kind][p.question]] for kind, items in kinds.items() for p in items
            if p.question in answers.get(kind, {}) and not contains_key(answers[kind][p.question], p.key)]


def gate_misses(answers: dict[str, str]) -> list[list[str]]:
    """[question, answer] for the built-in gate's questions the personal model got wrong."""
    from tunechat.personalize.evaluate import builtin_locality_probes

    gate = ProbeSet([], locality=builtin_locality_probes())
    return [miss[1:] for miss in misses(gate, {"locality": answers})]


def worker_result(job_dir: Path, job: dict) -> dict:
    """Run the personalize worker on ``job`` in ``job_dir``: its manifest, or RuntimeError with
    the worker's message."""
    (job_dir / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "tunechat.personalize.worker", str(job_dir)], cwd=ROOT,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event["event"] == "done":
            return event["result"]
        if event["event"] == "error":
            raise RuntimeError(event["message"])
    raise RuntimeError(f"worker failed: {proc.stderr[-2000:]}")


def run_worker(pairs, probes: ProbeSet, method: str, seed: int, outtype: str, overrides: dict | None = None) -> dict:
    base = embedded_model_path()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TUNECHAT_HOME")) as tmp:
        job = {"pairs": pairs, "base_path": str(base), "recipe": method, "seed": seed,
               "outtype": outtype, "probes": probes_json(probes), "recipe_overrides": overrides or {},
               "score_gate": True, "score_drift": True}
        start = time.monotonic()
        result = worker_result(Path(tmp), job)
        seconds = time.monotonic() - start
    after = result["metrics"]["after"]
    scoped = result["metrics"].get("scoped") or {}  # as the chat answers (tunechat.core.scope)
    gate = result.get("gate") or {}
    drift = (result.get("drift") or {}).get("locality") or {}
    gate_drift = (result.get("drift") or {}).get("gate") or {}
    return {**{k: after[k] for k in KEYS}, "gate": gate.get("locality"), "seconds": seconds,
            "drift": drift.get("mean"), "damage": drift.get("damage"), "gate_damage": gate_drift.get("damage"),
            **{f"chat_{k}": scoped.get(k) for k in KEYS}, "chat_gate": gate.get("scoped_locality"),
            "steps": result["train"]["steps"],
            "train_seconds": result["timings"].get("train"),
            "confirm_seconds": result["train"].get("confirm_seconds"), "timings": result["timings"],
            "losses": [round(x, 3) for x in result["train"]["losses"]],
            "checks_passed": all(c["passed"] for c in result["checks"]),
            "misses": misses(probes, result["answers"] or {}),
            "gate_misses": gate_misses(gate.get("answers") or {}),
            "near_prompts": result.get("near_prompts")}


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
    return {**{k: getattr(scores, k) for k in KEYS}, "seconds": time.monotonic() - start, "steps": 0, "checks_passed": True}


def run_sequential(path: Path, method: str, seed: int, outtype: str, overrides: dict | None = None) -> dict:
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
    parser.add_argument("--methods", nargs="+", default=["prompt", "naive", "replay", "replay-kl"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--outtype", default=None, help="GGUF output type (default: what personalize writes, q8_0)")
    parser.add_argument("--sequential", action="store_true", help="also run the teach-half-then-rest experiment")
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
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
                    result = run_worker(persona_pairs(path), load_persona(path), method, seed, args.outtype, overrides)
                rows.append({"persona": persona, "method": method + (variant if method != "prompt" else ""),
                             "seed": seed, **result})
                print(json.dumps(rows[-1]), flush=True)
            if args.sequential and method != "prompt":
                result = run_sequential(path, method, args.seeds[0], args.outtype, overrides)
                rows.append({"persona": persona, "method": f"{method}{variant} (sequential)", "seed": args.seeds[0], **result})
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print()
    print(f"{'method':40} {'persona':8} {'reliab.':>8} {'general.':>8} {'locality':>8} {'soft loc.':>9} "
          f"{'gate':>6} {'damage':>7} {'g.damage':>8} {'seconds':>8}  | in chat: {'reliab.':>7} {'general.':>8} "
          f"{'locality':>8} {'gate':>5}")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["persona"]), []).append(r)
    for (method, persona), items in groups.items():
        mean = lambda k: statistics.mean([i[k] for i in items if i.get(k) is not None] or [float("nan")])  # noqa: E731
        print(f"{method:40} {persona:8} {mean('reliability'):8.0%} {mean('generalization'):8.0%} "
              f"{mean('locality'):8.0%} {mean('soft_locality'):9.2f} {mean('gate'):6.0%} {mean('damage'):7.3f} {mean('gate_damage'):8.3f} {mean('seconds'):8.0f}  | "
              f"{'':9}{mean('chat_reliability'):7.0%} {mean('chat_generalization'):8.0%} {mean('chat_locality'):8.0%} "
              f"{mean('chat_gate'):5.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
