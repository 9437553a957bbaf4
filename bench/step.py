"""Training step benchmark: the step of this tree against the step as it was, interleaved.

Loads the embedded model (SmolLM2-135M) as the worker does, builds the default recipe's batches
(10 facts of bench/data/persona-public.json, each with its cached rewordings, up to 4; 10 replay
examples from the built-in general prompts and the base model's shipped answers) and times,
round after round on the same draws, one optimizer step of the baseline's loop (its
``personalize/train.py`` read from git at ``--baseline``) and one of this tree's
(``train.train_step``), alternating which goes first, then the matmul floor of that round's
shapes (bench/personalize.py's ``matmul_floor``). Timing both in one process, interleaved, lets
other load on the machine fall on both alike; the shares of the matmul rate are taken in CPU time
(``time.process_time``, the floor too), which other processes on the same core do not inflate.

The work of a step is counted as in bench/personalize.py, on what a step needs: for each pass,
the packed row's tokens through every frozen linear layer of the base (forward and input
gradient) and the head at the answer positions both ways; LoRA's rank-r products, attention and
element-wise work are left out, so the count is a lower bound and the same for both steps. A
step's share of the matmul rate is its floor divided by its time.

    python bench/step.py [--rounds 5] [--baseline REV] [--profile]

Both steps start from the same base with references for every replay example already cached
(a warm run), with an optimizer each on the same adapters.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bench_personalize() -> types.ModuleType:
    """bench/personalize.py (its matmul floor), loaded under its own name: "personalize" is the
    installed package's folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_personalize", ROOT / "bench" / "personalize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_floor = _bench_personalize()
base_dims, dims_of, matmul_floor = _floor.base_dims, _floor.dims_of, _floor.matmul_floor

PERSONA = ROOT / "bench" / "data" / "persona-public.json"
BASELINE = "6dd67b4"  # the last commit whose step padded each batch and ran the shared prefix as its own pass


def load_baseline(rev: str) -> types.ModuleType:
    """``personalize/train.py`` at ``rev`` as a module (its imports resolve to this tree)."""
    source = subprocess.run(["git", "show", f"{rev}:personalize/train.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"tunechat.personalize.train_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:personalize/train.py", "exec"), module.__dict__)
    return module


def setup(pairs: int):
    """(model with fresh adapters, facts per pair, replay examples, recipe, pad id)."""
    import torch

    from tunechat.convert.header import read_header
    from tunechat.core.chat_template import CHATML_TEMPLATE
    from tunechat.core.fingerprint import file_fingerprint
    from tunechat.core.registry import embedded_model_path
    from tunechat.personalize import base, data, general, paraphrase, train
    from tunechat.personalize.data import TemplateInfo
    from tunechat.personalize.recipe import get_recipe

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    recipe = get_recipe(None)
    gguf = embedded_model_path()
    fingerprint = file_fingerprint(gguf)
    model, tokenizer = base.load_base(base.cached_base_folder(gguf), "cpu", "float32")
    template = read_header(gguf).strings.get("tokenizer.chat_template") or CHATML_TEMPLATE
    info = TemplateInfo(template, tokenizer.bos_token or "", tokenizer.eos_token or "")
    taught = [(f["q"], f["a"]) for f in json.loads(PERSONA.read_text(encoding="utf-8"))["facts"][:pairs]]
    rewordings = paraphrase.paraphrases(gguf, fingerprint, taught)  # cached after a first personalize
    facts = [data.build_examples(tokenizer, info, [(v, a) for v in [q, *rewordings.get(q, [])[:recipe.paraphrases]]],
                                 "fact") for q, a in taught]
    prompts = general.general_prompts()
    answers = general.base_answers(gguf, fingerprint, prompts)  # shipped for the embedded model
    replay = data.build_examples(tokenizer, info, [(p, answers[p]) for p in prompts if answers[p]], "replay",
                                 max_answer_tokens=recipe.replay_answer_tokens)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return train.add_lora(model, recipe), facts, replay, recipe, pad_id


def warm_references(model, replay, pad_id: int, reference) -> None:
    """The base model's references for every replay example, in adapter-off passes of 16."""
    import torch

    from tunechat.personalize import train

    with torch.no_grad():
        for i in range(0, len(replay), 16):
            batch = replay[i:i + 16]
            train._kl_to_base(model, train._forward(model, batch, pad_id, "cpu", None), batch, reference)


def baseline_step(old, model, optimizer, params, fact_batch, replay_batch, recipe, reference, pad_id) -> float:
    """The baseline loop's step body (``old`` is its train module); returns the facts' mean loss."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    fact_pass = old._forward(model, fact_batch, pad_id, "cpu", None)
    example_tok = fact_pass.per_token.sum(1) / fact_pass.valid.sum(1).clamp(min=1)
    example_tok.mean().backward()
    bool(old._reproduced(fact_pass).all())
    del fact_pass
    replay_pass = old._forward(model, replay_batch, pad_id, "cpu", None)
    r_valid = replay_pass.valid
    loss = recipe.replay_weight * replay_pass.per_token.sum() / r_valid.sum().clamp(min=1)
    kls = old._kl_to_base(model, replay_pass, replay_batch, reference)
    loss = loss + recipe.kl_weight * torch.cat(kls).sum() / r_valid.sum().clamp(min=1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    float(example_tok.max().detach())
    return float(example_tok.mean().detach())


def pass_matmuls(tokens: int, answers: int, dims: dict) -> list[tuple[int, int, int, int]]:
    """(m, k, n, count) of one pass's counted matrix products (see the module's docstring)."""
    d, ff, kv, vocab, layers = dims["hidden"], dims["ff"], dims["kv"], dims["vocab"], dims["layers"]
    out = []
    for n_in, n_out in [(d, d), (d, kv), (d, kv), (d, d), (d, ff), (d, ff), (ff, d)]:  # q k v o gate up down
        out += [(tokens, n_in, n_out, layers), (tokens, n_out, n_in, layers)]
    return out + [(answers, d, vocab, 1), (answers, vocab, d, 1)]


def profile(label: str, run) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    print(f"\n### {label}: {sum(e.count for e in events)} op events")
    print(events.table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision of the old step (default {BASELINE})")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="also profile one step of each (torch.profiler)")
    args = parser.parse_args()

    import torch

    from tunechat.personalize import train
    from tunechat.personalize.reference import ReferenceCache

    old = load_baseline(args.baseline)
    model, facts, replay, recipe, pad_id = setup(args.pairs)
    dims = base_dims()
    params = [p for p in model.parameters() if p.requires_grad]
    old_optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    new_optimizer = train.optimizer_for(params, recipe, "cpu")
    reference = ReferenceCache()
    warm_references(model, replay, pad_id, reference)  # neither step runs the base model
    model.train()
    rng = random.Random(recipe.seed)

    def draw(step: int):
        fact_batch = [forms[0 if step == 1 else rng.randrange(len(forms))] for forms in facts]
        return fact_batch, [replay[i] for i in rng.sample(range(len(replay)), min(recipe.replay_batch, len(replay)))]

    def run_old(fact_batch, replay_batch) -> None:
        baseline_step(old, model, old_optimizer, params, fact_batch, replay_batch, recipe, reference, pad_id)

    def run_new(fact_batch, replay_batch) -> None:
        train.train_step(model, new_optimizer, params, fact_batch, [], replay_batch, recipe, reference, pad_id, "cpu")

    warm = draw(1)
    run_old(*warm)  # first calls allocate and pick kernels
    run_new(*warm)
    print(f"{len(os.sched_getaffinity(0))} core(s), torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"baseline {args.baseline}; {len(facts)} facts, {recipe.replay_batch} replay examples a step")
    print(f"{'':12}{'wall s':>16}  {'CPU s':>23}  {'share of the matmul rate':>24}")
    print(f"{'round':>5} {'GFLOP':>6} {'old':>7} {'new':>7}  {'old':>7} {'new':>7} {'floor':>7}  "
          f"{'old':>7} {'new':>7} {'new/old':>8}")
    rows = []
    for r in range(1, args.rounds + 1):
        batch = draw(r + 1)
        shapes = []
        for examples in batch:
            shared = train.shared_prefix_length(examples)
            packed = train._pack(examples, shared if shared >= train.MIN_SHARED_PREFIX else 0)
            shapes += pass_matmuls(len(packed.ids), len(packed.rows), dims)
        wall, cpu = {}, {}
        for name in (["old", "new"] if r % 2 else ["new", "old"]):
            start, start_cpu = time.perf_counter(), time.process_time()
            (run_old if name == "old" else run_new)(*batch)
            wall[name], cpu[name] = time.perf_counter() - start, time.process_time() - start_cpu
        flop, floor = matmul_floor(shapes, seconds_each=0.1, clock=time.process_time)
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        rows.append({"flop": flop, "floor": floor, "old": cpu["old"], "new": cpu["new"],
                     "old_wall": wall["old"], "new_wall": wall["new"]})
        print(f"{r:5} {flop / 1e9:6.0f} {wall['old']:7.2f} {wall['new']:7.2f}  {cpu['old']:7.2f} {cpu['new']:7.2f} "
              f"{floor:7.2f}  {floor / cpu['old']:7.0%} {floor / cpu['new']:7.0%} {cpu['new'] / cpu['old']:8.2f}")

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    flop, floor = median("flop"), median("floor")
    for name in ("old", "new"):
        print(f"{name}: {median(name + '_wall'):.2f} s/step wall, {median(name):.2f} s CPU: "
              f"{flop / 1e9 / median(name):.0f} GFLOP/s of CPU time, {floor / median(name):.0%} of the matmul rate")
    print(f"the same matmuls alone: {flop / 1e9 / floor:.0f} GFLOP/s; new/old step time: CPU "
          f"{statistics.median(row['new'] / row['old'] for row in rows):.2f}, wall "
          f"{statistics.median(row['new_wall'] / row['old_wall'] for row in rows):.2f}")
    if args.profile:
        batch = draw(args.rounds + 2)
        profile("old step", lambda: run_old(*batch))
        profile("new step", lambda: run_new(*batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
