"""Remember without forgetting in a conversation: the same questions asked in one chat and alone.

For each persona and seed this personalizes the embedded model once (the real worker, default
method; the version is kept under --versions and reused), then runs a 30-turn chat through the
chat's own engine and decision (tunechat.core.scope.ScopedEngine, tunechat.core.turns.decide),
greedy: the persona's taught questions, rewordings, general questions, general questions asked
in the first person and untaught personal questions, in a few seeded orders, each follow-up
("How old is she?") right after the question it follows. Every turn is scored as the user sees
it (the taught key given; a general question's key given; an untaught question answered
without a taught key) and against the same question asked alone in a new chat. Each context
policy (what a turn's model sees: tunechat.core.turns.CONTEXTS) runs the same chats.

Printed per persona and policy: right alone, right in the chat (and by kind), the points lost,
and how often a general question the base model answered in the chat got the base model's
own answer (its answer asked alone, to the letter). The routing of each kind of question is
printed too (the share sent to the personal model).

    python bench/conversation.py --personas public fifth sixth --seeds 0
    python bench/conversation.py --contexts chain --orders 0 1 2 --out bench/results/conversation.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import PERSONAS, probe_spec, worker_result  # noqa: E402

from tunechat.core.engine import Engine, GenerationSettings  # noqa: E402
from tunechat.core.fingerprint import base_fingerprint  # noqa: E402
from tunechat.core.jsonl import parse_pairs  # noqa: E402
from tunechat.core.manifest import MANIFEST_FILE, Manifest  # noqa: E402
from tunechat.core.registry import ADAPTER_FILE, PAIRS_FILE, PROBE_FILE, embedded_model_path  # noqa: E402
from tunechat.core.scope import ScopedEngine, read_probe, working  # noqa: E402
from tunechat.core.turns import BY_KEY, CONTEXTS, Taught, decide, settle  # noqa: E402
from tunechat.personalize.evaluate import EVAL_MAX_TOKENS, borrows, contains_key, load_persona  # noqa: E402
from tunechat.personalize.spec import JobSpec  # noqa: E402

PERSONAS = {**PERSONAS,
            "fifth": ROOT / "tests" / "data" / "persona-fifth.json",
            "sixth": ROOT / "tests" / "data" / "persona-sixth.json",
            "seventh": ROOT / "tests" / "data" / "persona-seventh.json",
            "eighth": ROOT / "tests" / "data" / "persona-eighth.json",
            "ninth": ROOT / "tests" / "data" / "persona-ninth.json",
            "tenth": ROOT / "tests" / "data" / "persona-tenth.json",
            "eleventh": ROOT / "tests" / "data" / "persona-eleventh.json",
            "twelfth": ROOT / "tests" / "data" / "persona-twelfth.json",
            "thirteenth": ROOT / "tests" / "data" / "persona-thirteenth.json",
            "fourteenth": ROOT / "tests" / "data" / "persona-fourteenth.json",
            "fifteenth": ROOT / "tests" / "data" / "persona-fifteenth.json",
            "sixteenth": ROOT / "tests" / "data" / "persona-sixteenth.json",
            "seventeenth": ROOT / "tests" / "data" / "persona-seventeenth.json",
            "eighteenth": ROOT / "tests" / "data" / "persona-eighteenth.json",
            "nineteenth": ROOT / "tests" / "data" / "persona-nineteenth.json"}
# The tenth is not among them: two rules of turns.py were written from its misses; nor the
# fourteenth to seventeenth: the wrapped forms were chosen on them, and two rules of turns.py
# written from the fifteenth's and seventeenth's misses.
HELD_OUT = ("fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "eleventh", "twelfth", "thirteenth",
            "eighteenth", "nineteenth")
# General questions asked in the first person: the rule sends them to the personal model.
FIRST_PERSON_GENERAL = [
    ("I wonder what the capital of Italy is.", "Rome"),
    ("My son asked me how many legs a spider has. What should I tell him?", "8"),
    ("I need the chemical formula for water.", "H2O"),
    ("I forgot: what color is the sky on a clear day?", "blue"),
]
KINDS = ("taught", "reworded", "general", "first-person general", "untaught", "follow-up")
TURNS = {"taught": 8, "reworded": 6, "general": 7, "first-person general": 3, "untaught": 6}
SETTINGS = GenerationSettings(max_tokens=EVAL_MAX_TOKENS, temperature=0.0)


@dataclass(frozen=True)
class Turn:
    kind: str
    question: str
    key: str  # what a right answer holds; a follow-up: the key of the question it follows


def persona_turns(path: Path) -> tuple[dict[str, list[Turn]], dict[str, list[Turn]]]:
    """Every question of the persona by kind, and its follow-ups by the question they follow."""
    data = json.loads(path.read_text(encoding="utf-8"))
    probes = load_persona(path)
    by_kind = {
        "taught": [Turn("taught", p.question, p.key) for p in probes.taught],
        "reworded": [Turn("reworded", p.question, p.key) for p in probes.paraphrases],
        "general": [Turn("general", p.question, p.key) for p in probes.locality],
        "first-person general": [Turn("first-person general", q, k) for q, k in FIRST_PERSON_GENERAL],
        "untaught": [Turn("untaught", q, "") for q in probes.untaught],
    }
    keys = {t.question: t.key for kind in ("taught", "reworded") for t in by_kind[kind]}
    follow: dict[str, list[Turn]] = {}
    for item in data.get("conversation_followups", []):
        follow.setdefault(item["after"], []).append(Turn("follow-up", item["q"], keys.get(item["after"], "")))
    return by_kind, follow


def conversation(by_kind: dict[str, list[Turn]], follow: dict[str, list[Turn]], order: int) -> list[Turn]:
    """About 30 turns in a seeded order, each follow-up right after the question it follows."""
    rng = random.Random(order)
    picked = [t for kind, n in TURNS.items() for t in rng.sample(by_kind[kind], min(n, len(by_kind[kind])))]
    rng.shuffle(picked)
    out: list[Turn] = []
    for turn in picked:
        out.append(turn)
        out.extend(follow.get(turn.question, []))
    return out


def right(turn: Turn, answer: str, taught_keys: list[str]) -> bool:
    """A taught, reworded or general question: its key given. An untaught question: no taught
    key given. A follow-up (untaught in every persona): no taught key but the one of the
    question it follows ("What year did I buy it?" may name the taught car)."""
    if turn.kind == "untaught":
        return not borrows(answer, taught_keys)
    if turn.kind == "follow-up":
        return not borrows(answer, [k for k in taught_keys if k != turn.key])
    return contains_key(answer, turn.key)


def version(persona: str, seed: int, versions: Path, overrides: dict | None = None, base: Path | None = None) -> Path:
    """The personal version of ``persona`` at ``seed`` on ``base`` (a GGUF; the embedded model
    by default): trained once (with the recipe's fields ``overrides`` changed: a variant, kept
    in a ``versions`` folder of its own), then reused if it was trained on the same base."""
    base = base or embedded_model_path()
    out = versions / f"{persona}-s{seed}"
    if (out / "out" / ADAPTER_FILE).is_file():
        trained_on = Manifest.read(out / "out" / MANIFEST_FILE)
        if trained_on.base_sha256 != base_fingerprint(base):
            raise SystemExit(f"{out} was trained on {trained_on.base_source}, not {base}: "
                             "give this base --versions of its own.")
        return out / "out"
    out.mkdir(parents=True, exist_ok=True)
    path = PERSONAS[persona]
    pairs = [(f["q"], f["a"]) for f in json.loads(path.read_text(encoding="utf-8"))["facts"]]
    spec = JobSpec(pairs=pairs, base_path=base, seed=seed, probes=probe_spec(load_persona(path)),
                   recipe_overrides=overrides or {})
    manifest = worker_result(out, spec)
    scoped = manifest.metrics.scoped
    print(f"# {persona} seed {seed}: {manifest.train.steps} steps; single questions in chat: {scoped}",
          file=sys.stderr, flush=True)
    return out / "out"


def version_arguments(parser: argparse.ArgumentParser, personas: list[str]) -> None:
    """The --personas, --seeds and --versions every bench on the trained versions takes."""
    parser.add_argument("--personas", nargs="+", default=personas, choices=list(PERSONAS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--versions", type=Path, default=Path(os.environ.get("TUNECHAT_BENCH_VERSIONS", "")
                                                               or tempfile.gettempdir()) / "tunechat-bench-versions",
                        help="where the trained versions are kept and reused")
    parser.add_argument("--base", type=Path, default=None,
                        help="the base model to personalize and chat with, a GGUF file (default: the embedded model)")


def run_chat(engine: ScopedEngine, turns: list[Turn], context: str) -> list[tuple[str, str]]:
    """(answer, who answered) for each turn, asked in one chat under the ``context`` policy."""
    history: list[dict[str, str]] = []
    out = []
    for turn in turns:
        history.append({"role": "user", "content": turn.question})
        decision = decide(history, engine.taught, context=context,  # type: ignore[arg-type]
                          about_user=engine.about_user)
        answer = decision.untold if decision.untold is not None else \
            engine.engine_for(decision.route).complete(decision.context, SETTINGS)
        if decision.answered_by == "personal":  # as ScopedEngine.stream settles it
            decision = settle(decision, answer, engine.taught, engine.base_likelihood, working(engine.about_user))
            if decision.said is not None:
                answer = decision.said
            elif decision.route == "base":
                answer = engine.engine_for("base").complete(decision.context, SETTINGS)
        by = decision.answered_by
        history.append({"role": "assistant", "content": answer, BY_KEY: by})
        out.append((answer, by))
    return out


def scoped_version(folder: Path, base: Path | None = None) -> ScopedEngine:
    """The chat's engine over a version ``folder``: its base (the embedded model by default)
    with its adapter, what its pairs taught (read as the chat reads them: ``scope.taught_by``)
    and its scope probe."""
    return ScopedEngine(Engine(base or embedded_model_path(), lora_path=folder / ADAPTER_FILE),
                        taught=Taught.from_pairs(parse_pairs(folder / PAIRS_FILE)),
                        probe=read_probe(folder / PROBE_FILE))


def run_persona(persona: str, seed: int, versions: Path, contexts: list[str], orders: list[int],
                base: Path | None = None) -> list[dict]:
    folder = version(persona, seed, versions, base=base)
    by_kind, follow = persona_turns(PERSONAS[persona])
    taught_keys = [t.key for t in by_kind["taught"]]
    engine = scoped_version(folder, base)
    base_alone: dict[str, str] = {}
    rows = []
    try:
        for order in orders:
            turns = conversation(by_kind, follow, order)
            alone = [run_chat(engine, [t], "whole")[0] for t in turns]  # each in a new chat
            for t in turns:
                if t.question not in base_alone:
                    base_alone[t.question] = engine.engine_for("base").complete(
                        [{"role": "user", "content": t.question}], SETTINGS)
            for context in contexts:
                chat = run_chat(engine, turns, context)
                rows.append(score_chat(persona, seed, order, context, turns, alone, chat, base_alone, taught_keys))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        engine.close()
    return rows


def score_chat(persona: str, seed: int, order: int, context: str, turns: list[Turn], alone: list[tuple[str, str]],
               chat: list[tuple[str, str]], base_alone: dict[str, str], taught_keys: list[str]) -> dict:
    kinds: dict[str, dict[str, list[bool]]] = {}
    base_same: list[bool] = []
    misses = []
    for turn, (a_answer, _), (c_answer, by) in zip(turns, alone, chat):
        k = kinds.setdefault(turn.kind, {"alone": [], "chat": [], "personal": []})
        k["alone"].append(right(turn, a_answer, taught_keys))
        k["chat"].append(right(turn, c_answer, taught_keys))
        k["personal"].append(by != "base")
        if turn.kind == "general" and by == "base":
            base_same.append(c_answer.strip() == base_alone[turn.question].strip())
        if not k["chat"][-1]:
            misses.append([turn.kind, turn.question, c_answer, by])
    flat = lambda key: [x for v in kinds.values() for x in v[key]]  # noqa: E731
    return {"persona": persona, "seed": seed, "order": order, "context": context, "turns": len(turns),
            "alone": statistics.mean(flat("alone")), "chat": statistics.mean(flat("chat")),
            "base_same": statistics.mean(base_same) if base_same else None,
            "by_kind": {kind: {key: statistics.mean(v) for key, v in vals.items()} for kind, vals in kinds.items()},
            "misses": misses}


def print_table(rows: list[dict]) -> None:
    print(f"{'persona':8} {'held':5} {'context':7} {'alone':>6} {'chat':>6} {'lost':>6} {'base=':>6}  "
          + " ".join(f"{k[:11]:>11}" for k in KINDS) + "   (right in chat; routed personal)")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["persona"], r["context"]), []).append(r)
    for (persona, context), items in groups.items():
        def mean(f, items=items) -> float:
            return statistics.mean([f(i) for i in items if f(i) is not None] or [float("nan")])

        kinds = []
        for kind in KINDS:
            got = [i["by_kind"][kind] for i in items if kind in i["by_kind"]]
            share = lambda key, got=got: statistics.mean(g[key] for g in got)  # noqa: E731
            kinds.append(f"{share('chat'):5.0%};{share('personal'):4.0%}" if got else f"{'':>11}")
        print(f"{persona:8} {'yes' if persona in HELD_OUT else '':5} {context:7} {mean(lambda i: i['alone']):6.0%} "
              f"{mean(lambda i: i['chat']):6.0%} {100 * (mean(lambda i: i['alone']) - mean(lambda i: i['chat'])):6.1f} "
              f"{mean(lambda i: i['base_same']):6.0%}  " + " ".join(f"{k:>11}" for k in kinds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    version_arguments(parser, list(PERSONAS))
    parser.add_argument("--orders", nargs="+", type=int, default=[0, 1, 2], help="seeds of the turns' order")
    parser.add_argument("--contexts", nargs="+", default=list(CONTEXTS), choices=list(CONTEXTS))
    parser.add_argument("--out", type=Path, default=None, help="also write every chat's numbers here (JSON)")
    args = parser.parse_args()
    rows = []
    for persona in args.personas:
        for seed in args.seeds:
            rows += run_persona(persona, seed, args.versions, args.contexts, args.orders, args.base)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
