"""The built-in replay prompts stay apart from every question the evaluation asks."""

from __future__ import annotations

import json
from pathlib import Path

from tunechat.personalize.evaluate import builtin_locality_probes
from tunechat.personalize.general import general_prompts

ROOT = Path(__file__).resolve().parents[1]


def test_replayed_prompts_never_include_a_question_the_evaluation_asks():
    asked = {p.question for p in builtin_locality_probes()}
    personas = [ROOT / "bench" / "data" / "persona-public.json",
                *sorted((ROOT / "tests" / "data").glob("persona-*.json"))]
    for persona in personas:
        if persona.is_file():
            data = json.loads(persona.read_text(encoding="utf-8"))
            asked |= {f["q"] for f in data["facts"]} | {p["q"] for p in data.get("paraphrases", [])}
            asked |= set(data.get("locality", []))
    prompts = general_prompts()
    assert len(asked) > 50 and len(prompts) > 50
    assert not set(prompts) & asked
