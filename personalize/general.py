"""The built-in general prompts and the base model's own answers to them (replay data).

The answers come from the base GGUF through llama.cpp, greedy, exactly as the user met the
base model, and are cached per base file so only the first personalization pays for them.
For the embedded model, the answers to the built-in general prompts and locality probes ship
with the package (``data/base_answers.json``, keyed by the GGUF's sha256), so a new user's first
personalization computes only the answers to its own questions. On one machine a greedy answer
is a function of the prompt and the weights alone (``tunechat.core.engine`` evaluates prompts in
fixed chunks); another CPU's kernels round differently, and where two tokens nearly tie its
greedy answer may take the other one. So what a shipped answer promises, on any CPU, is to be
the greedy answer up to near-ties: each of its tokens within ``NEAR_TIE`` logits of the greedy
choice there (``off_greedy``; ``tests/test_general.py`` holds a sample to it). The shipped
answers serve as the base's answers to rehearse (replay) and to compare with, never as a text a
run must reproduce. Regenerate the file with ``python -m tunechat.personalize.general`` after
changing the prompts, the probes, the engine or ``REPLAY_MAX_TOKENS``.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tunechat.core import paths
from tunechat.core.atomic import write_json_atomic

if TYPE_CHECKING:
    from tunechat.core.engine import Engine

REPLAY_MAX_TOKENS = 48
# Rounding moves a logit by far less than this; another model's answer, or one cut short, is
# several logits off its greedy choice somewhere.
NEAR_TIE = 0.5
DATA = Path(__file__).parent / "data"
SHIPPED_FILE = DATA / "base_answers.json"


def _prompt_file() -> dict:
    return json.loads((DATA / "general_prompts.json").read_text(encoding="utf-8"))


def general_prompts() -> list[str]:
    """Replayed at random every personalization; never asked by the evaluation."""
    return list(_prompt_file()["prompts"])


def replay_prompts(asked: Iterable[str]) -> list[str]:
    """The general prompts a run replays: none that is ``asked`` (a taught question, one the
    evaluation asks), in any case or spacing. A user who corrects the base model's answer to
    "What is the capital of Australia?" must not be trained on the base model's answer too."""
    taken = {" ".join(q.casefold().split()) for q in asked}
    return [p for p in general_prompts() if " ".join(p.casefold().split()) not in taken]


def builtin_questions() -> list[str]:
    """The prompts whose base answers are the same for every user of a base: the general
    prompts and the built-in locality probes."""
    probes = json.loads((DATA / "locality_probes.json").read_text(encoding="utf-8"))["probes"]
    return list(dict.fromkeys([*general_prompts(), *probes]))


def shipped_answers(fingerprint: str) -> dict[str, str]:
    """The answers shipped for the base whose sha256 is ``fingerprint`` (none for other bases,
    or when they were produced with other generation settings than the ones used now)."""
    try:
        shipped = json.loads(SHIPPED_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    entry = shipped.get("bases", {}).get(fingerprint)
    if not entry or entry.get("max_tokens") != REPLAY_MAX_TOKENS:
        return {}
    return dict(entry["answers"])


def base_answers(
    base_gguf: Path,
    fingerprint: str,
    prompts: list[str],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, str]:
    """Greedy answers of the base model to ``prompts``: shipped, cached or computed."""
    cache = paths.cache_dir() / f"answers-{fingerprint[:16]}.json"
    known: dict[str, str] = shipped_answers(fingerprint)
    if cache.is_file():
        try:
            known.update(json.loads(cache.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            pass
    missing = [p for p in prompts if p not in known]
    if missing:
        known.update(compute_answers(base_gguf, missing, progress))
        write_json_atomic(cache, known)
    return {p: known[p] for p in prompts}


def compute_answers(base_gguf: Path, prompts: list[str],
                    progress: Callable[[int, int], None] = lambda done, total: None,
                    n_threads: int | None = None) -> dict[str, str]:
    """The base model's greedy answers through llama.cpp, one fresh chat turn each
    (``n_threads``: llama.cpp's, every core by default; each output value is computed by one
    thread, so the answers do not depend on it)."""
    from tunechat.core.engine import Engine, GenerationSettings

    engine = Engine(base_gguf, n_threads=n_threads)
    settings = GenerationSettings(max_tokens=REPLAY_MAX_TOKENS, temperature=0.0)
    answers = {}
    try:
        for i, prompt in enumerate(prompts):
            answers[prompt] = engine.complete([{"role": "user", "content": prompt}], settings)
            progress(i + 1, len(prompts))
    finally:
        engine.close()
    return answers


def off_greedy(engine: Engine, prompt: str, answer: str) -> float:
    """How far ``answer`` strays from ``engine``'s greedy answer to ``prompt``, as replay
    generates it: the largest logit gap between a token of it (or its end) and the greedy
    choice there (0: it is that answer; ``Engine.greedy_gaps``)."""
    from tunechat.core.engine import GenerationSettings

    settings = GenerationSettings(max_tokens=REPLAY_MAX_TOKENS, temperature=0.0)
    return max(engine.greedy_gaps([{"role": "user", "content": prompt}], answer, settings))


def write_shipped(base_gguf: Path, out: Path = SHIPPED_FILE, n_threads: int | None = None) -> dict:
    """Compute the base model's answers to ``builtin_questions`` and record them in ``out``
    under the base file's sha256 (other bases already in the file are kept)."""
    from importlib.metadata import version

    from tunechat.core.fingerprint import file_fingerprint

    fingerprint = file_fingerprint(base_gguf)
    answers = compute_answers(base_gguf, builtin_questions(),
                              lambda done, total: print(f"\r{done}/{total}", end="", flush=True), n_threads)
    print()
    try:
        shipped = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        shipped = {}
    shipped["about"] = ("Greedy answers (llama.cpp, temperature 0) of a base model to the built-in general prompts "
                        "and locality probes, keyed by the sha256 of its GGUF; written by "
                        "`python -m tunechat.personalize.general`.")
    shipped.setdefault("bases", {})[fingerprint] = {
        "file": base_gguf.name, "max_tokens": REPLAY_MAX_TOKENS,
        "produced_with": f"llama-cpp-python {version('llama-cpp-python')}, {platform.machine()}",
        "answers": answers,
    }
    out.write_text(json.dumps(shipped, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return shipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the embedded model's answers to the built-in prompts into "
                                     f"{SHIPPED_FILE.name} (shipped in the package).")
    parser.add_argument("--base", type=Path, default=None, help="a GGUF base (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=SHIPPED_FILE)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: every core)")
    args = parser.parse_args(argv)
    if args.base is None:
        from tunechat.core.registry import embedded_model_path

        args.base = embedded_model_path()
    shipped = write_shipped(args.base, args.out, args.threads)
    print(f"{args.out}: {sum(len(b['answers']) for b in shipped['bases'].values())} answers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
