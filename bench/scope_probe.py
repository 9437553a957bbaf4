"""Routing by a probe on the base model's own representations (SERAC-style), against the words
rule: per persona, a logistic regression on the base model's llama.cpp embedding of a message,
trained on a bank of personal and general messages in six languages plus the persona's taught
questions (positives) and the built-in general prompts (negatives), decides whether a message
speaks of the user. Printed per variant and persona: the right routes per kind of question.

    python bench/scope_probe.py --bank FILE [--pooling mean last] [-v]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import llama_cpp  # noqa: E402
from routing import PERSONAS  # noqa: E402

from tunechat.core.engine import Engine, _without_extra_buffer_types  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402
from tunechat.core.turns import Taught, decide, words_of  # noqa: E402
from tunechat.personalize.general import general_prompts  # noqa: E402

TUNED = ("public", "second", "third")
EXTRA = {"ninth": Path("/tmp/persona-ninth.json")}
POOLING = {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "last": llama_cpp.LLAMA_POOLING_TYPE_LAST}


class Embedder:
    def __init__(self, pooling: str, templated: bool) -> None:
        self.pooling, self.templated = pooling, templated
        if pooling == "mean" and not templated:
            self.engine = Engine(embedded_model_path())
        else:
            with _without_extra_buffer_types():
                self.llm = llama_cpp.Llama(str(embedded_model_path()), embedding=True, n_ctx=512, verbose=False,
                                           pooling_type=POOLING[pooling])
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self.cache:
            if self.pooling == "mean" and not self.templated:
                self.cache[text] = self.engine.embed([text])[0]
            else:
                shown = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n" if self.templated else text
                v = np.array(self.llm.embed(shown), dtype=np.float64)
                self.cache[text] = v / np.linalg.norm(v)
        return self.cache[text]


def fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = 1e-2, steps: int = 300) -> tuple:
    """L2 logistic regression by Newton's method on standardized features."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    for _ in range(30):
        p = 1 / (1 + np.exp(-z @ w))
        g = z.T @ (weight * (p - y)) + l2 * len(x) * np.r_[w[:-1], 0]
        h = (z * (weight * p * (1 - p))[:, None]).T @ z + l2 * len(x) * np.diag(np.r_[np.ones(len(w) - 1), 0])
        w -= np.linalg.solve(h, g)
    return mu, sd, w


def score(model: tuple, v: np.ndarray) -> float:
    mu, sd, w = model
    return float(np.r_[(v - mu) / sd, 1] @ w)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--pooling", nargs="+", default=["mean"])
    parser.add_argument("--templated", action="store_true")
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-2])
    parser.add_argument("--taught", choices=("none", "all", "about-user"), nargs="+", default=["about-user"],
                        help="which taught questions join the positives: none, all, or those the bank's probe "
                             "or the words say speak of the user")
    parser.add_argument("-v", action="store_true")
    args = parser.parse_args()
    bank = json.loads(args.bank.read_text(encoding="utf-8"))["languages"]
    personas = {**PERSONAS, **{k: v for k, v in EXTRA.items() if v.exists()}}
    languages = json.loads((ROOT / "tests" / "data" / "routing-languages.json").read_text(encoding="utf-8"))["languages"]
    for pooling in args.pooling:
        emb = Embedder(pooling, args.templated)
        bank_pos = [q for lang in bank.values() for q in lang["personal"]]
        bank_neg = [q for lang in bank.values() for q in lang["general"]] + general_prompts()
        xb = np.stack([emb(q) for q in bank_pos + bank_neg])
        yb = np.r_[np.ones(len(bank_pos)), np.zeros(len(bank_neg))]
        for l2, taught_kind in ((l2, t) for l2 in args.l2 for t in args.taught):
            # cross-validated on the bank itself, by language held out
            cv = []
            for held in bank:
                tr_pos = [q for lang, v in bank.items() if lang != held for q in v["personal"]]
                tr_neg = [q for lang, v in bank.items() if lang != held for q in v["general"]] + general_prompts()
                m = fit(np.stack([emb(q) for q in tr_pos + tr_neg]), np.r_[np.ones(len(tr_pos)), np.zeros(len(tr_neg))],
                        np.ones(len(tr_pos) + len(tr_neg)), l2)
                ok_p = sum(score(m, emb(q)) > 0 for q in bank[held]["personal"])
                ok_g = sum(score(m, emb(q)) <= 0 for q in bank[held]["general"])
                cv.append(f"{held} {ok_p}/{len(bank[held]['personal'])} {ok_g}/{len(bank[held]['general'])}")
            print(f"== pooling {pooling} templated {args.templated} l2 {l2} taught {taught_kind}: bank, language held out: " + " | ".join(cv))
            nothing = fit(xb, yb, np.ones(len(yb)), l2)
            line = []
            for lang, qs in languages.items():
                p = sum(score(nothing, emb(q)) > 0 for q in qs["personal"])
                g = sum(score(nothing, emb(q)) <= 0 for q in qs["general"])
                line.append(f"{lang} {p}/{len(qs['personal'])} {g}/{len(qs['general'])}")
            print("   routing-languages (probe alone): " + " | ".join(line))
            print(f"   {'persona':8} {'rule':12} {'taught':>7} {'reworded':>9} {'untaught':>9} {'general':>8}")
            for name, path in personas.items():
                data = json.loads(path.read_text(encoding="utf-8"))
                pairs = [(f["q"], f["a"]) for f in data["facts"]]
                taught = Taught.from_pairs(pairs)
                tq = [q for q, _ in pairs]
                if taught_kind == "none":
                    joined = []
                elif taught_kind == "all":
                    joined = tq
                else:
                    joined = [q for q in tq if score(nothing, emb(q)) > 0
                              or decide([{"role": "user", "content": q}], Taught()).route == "personal"
                              or any(w in taught.verbs for w in words_of(q))]
                if joined:
                    x = np.vstack([xb, np.stack([emb(q) for q in joined])])
                    y = np.r_[yb, np.ones(len(joined))]
                    wt = np.r_[np.ones(len(yb)), np.full(len(joined), 5.0)]
                    model = fit(x, y, wt, l2)
                else:
                    model = nothing
                kinds = {"taught": tq, "reworded": [p["q"] for p in data.get("paraphrases", [])],
                         "untaught": list(data.get("untaught", [])),
                         "general": [i["q"] if isinstance(i, dict) else i for i in data.get("locality", [])]}
                rules = {
                    "words": lambda q: decide([{"role": "user", "content": q}], taught).route == "personal",
                    "probe": lambda q: score(model, emb(q)) > 0,
                }
                rules["words|probe"] = lambda q: rules["words"](q) or rules["probe"](q)
                for rule, f in rules.items():
                    cells = []
                    for kind, qs in kinds.items():
                        want = kind != "general"
                        wrong = [q for q in qs if f(q) != want]
                        cells.append(f"{len(qs) - len(wrong)}/{len(qs)}")
                        if args.v and rule == "words|probe":
                            for q in wrong:
                                print(f"      miss {name} {kind}: {q}")
                    held = "" if name in TUNED else "*"
                    print(f"   {name + held:8} {rule:12} " + " ".join(f"{c:>8}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
