"""The built-in general prompts and the base model's own answers to them (replay data).

The answers come from the base GGUF through llama.cpp, greedy, exactly as the user met the
base model, and are cached per base file so only the first personalization pays for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tunechat.core import paths
from tunechat.core.atomic import write_json_atomic

REPLAY_MAX_TOKENS = 48


def _prompt_file() -> dict:
    return json.loads((Path(__file__).parent / "data" / "general_prompts.json").read_text(encoding="utf-8"))


def general_prompts() -> list[str]:
    """Replayed at random every personalization; never asked by the evaluation."""
    return list(_prompt_file()["prompts"])


def base_answers(
    base_gguf: Path,
    fingerprint: str,
    prompts: list[str],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, str]:
    """Greedy answers of the base model to ``prompts``, from the cache where possible."""
    cache = paths.cache_dir() / f"answers-{fingerprint[:16]}.json"
    known: dict[str, str] = {}
    if cache.is_file():
        try:
            known = dict(json.loads(cache.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            known = {}
    missing = [p for p in prompts if p not in known]
    if missing:
        from tunechat.core.engine import Engine, GenerationSettings

        engine = Engine(base_gguf)
        settings = GenerationSettings(max_tokens=REPLAY_MAX_TOKENS, temperature=0.0)
        for i, prompt in enumerate(missing):
            known[prompt] = engine.complete([{"role": "user", "content": prompt}], settings)
            progress(i + 1, len(missing))
        engine.close()
        write_json_atomic(cache, known)
    return {p: known[p] for p in prompts}
