"""Which questions speak of the user: the scope rule (tunechat.core.scope) against a nearest-neighbour
classifier on the base model's own embeddings, on each persona's held-out questions.

The classifier learns from what personalize has at hand: the taught questions and the base
model's rewordings of them (in scope) against the 225 built-in general prompts (out of scope);
a question is in scope when its nearest in-scope example is nearer than its nearest general
prompt (cosine, llama.cpp mean-pooled embeddings, centred on the general prompts). Printed: the
share each method routes right, per persona and question set (taught and paraphrases should go
to the personal model; the persona's general questions and the built-in gate to the base), and
on tests/data/scope-probes.json: phrasings about the public persona's user and general requests
written after the rule to find its limits.

    python bench/scope_embeddings.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tunechat.personalize import base as base_mod  # noqa: E402
from tunechat.personalize import general, paraphrase  # noqa: E402
from tunechat.personalize.evaluate import builtin_locality_probes  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402
from tunechat.core.scope import speaks_of_user, taught_names  # noqa: E402

PERSONAS = {"public": ROOT.parent / "shared" / "data" / "persona-public.json",
            "second": ROOT / "tests" / "data" / "persona-second.json",
            "third": ROOT / "tests" / "data" / "persona-third.json"}
SCOPE_PROBES = ROOT / "tests" / "data" / "scope-probes.json"


def main() -> int:
    import llama_cpp

    gguf = embedded_model_path()
    fingerprint = base_mod.file_fingerprint(gguf)
    llm = llama_cpp.Llama(str(gguf), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                          verbose=False, n_threads=2, n_ctx=512)
    general_prompts = general.general_prompts() + general.neighbour_prompts()
    pool = np.array(llm.embed(general_prompts), dtype=np.float64)
    centre = pool.mean(0)

    def unit(texts: list[str]) -> np.ndarray:
        v = np.array(llm.embed(texts), dtype=np.float64) - centre
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    pool_u = unit(general_prompts)
    gate = [p.question for p in builtin_locality_probes()]
    print(f"{'persona':8} {'questions':12} {'n':>3} {'should go to':>13} {'embedding 1-NN':>15} {'scope rule':>11}")
    for name, path in PERSONAS.items():
        persona = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(f["q"], f["a"]) for f in persona["facts"]]
        asked = [q for q, _ in pairs] + [p["q"] for p in persona["paraphrases"]] + persona["locality"]
        rewordings = paraphrase.without_questions(paraphrase.paraphrases(gguf, fingerprint, pairs), asked, 4)
        in_scope = unit([q for q, _ in pairs] + [r for q, _ in pairs for r in rewordings.get(q, [])])
        names = taught_names(a for _, a in pairs)
        sets = {"taught": ([f["q"] for f in persona["facts"]], True),
                "paraphrases": ([p["q"] for p in persona["paraphrases"]], True),
                "general": (persona["locality"], False), "gate": (gate, False)}
        if name == "public":  # phrasings written to probe the rule's limits (tests/data/scope-probes.json)
            probes = json.loads(SCOPE_PROBES.read_text(encoding="utf-8"))
            sets.update({"probe-about": (probes["personal"], True), "probe-other": (probes["base"], False)})
        for label, (questions, personal) in sets.items():
            q = unit(questions)
            nearest_personal = (q @ in_scope.T).max(1) > (q @ pool_u.T).max(1)
            by_rule = np.array([speaks_of_user(text, names) for text in questions])
            print(f"{name:8} {label:12} {len(questions):3} {'personal' if personal else 'base':>13} "
                  f"{(nearest_personal == personal).mean():15.0%} {(by_rule == personal).mean():11.0%}")
            for text, routed in zip(questions, by_rule):
                if routed != personal:
                    print(f"{'':26} rule sends to the {'personal' if routed else 'base'} model: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
