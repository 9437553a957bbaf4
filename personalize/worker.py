"""The personalize worker process: data, base, train, merge, convert, verify, evaluate.

Run as ``python -m tunechat.personalize.worker JOB_DIR``. Reads ``JOB_DIR/job.json``, writes the
candidate model into ``JOB_DIR/out/`` (manifest last), and reports JSON lines on stdout
(see ``tunechat.personalize.progress``). It never touches the current model or the models folder:
installing the result is the parent's decision (``tunechat.personalize.job``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tunechat.personalize.progress import PARENT_ENV, Reporter


class Timings(dict):
    @contextmanager
    def phase(self, reporter: Reporter, name: str, detail: str = "") -> Iterator[None]:
        reporter.phase(name, detail)
        start = time.monotonic()
        yield
        self[name] = round(self.get(name, 0.0) + time.monotonic() - start, 2)


def run(job_dir: Path, reporter: Reporter) -> dict:
    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    timings = Timings()
    with timings.phase(reporter, "prepare", "loading libraries"):
        import numpy as np
        import torch

        from tunechat.convert.writer import DEFAULT_OUTTYPE, write_gguf
        from tunechat.personalize import base as base_mod
        from tunechat.personalize import checks, data, evaluate, general, train
        from tunechat.personalize.recipe import get_recipe
        from tunechat.core import scope
        from tunechat.core.engine import Engine
        from tunechat.core.wording import count

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        pairs = [(q, a) for q, a in job["pairs"]]
        data.require_pairs(pairs)
        recipe = get_recipe(job.get("recipe")).with_(seed=int(job.get("seed", 0)), **job.get("recipe_overrides", {}))
        base = Path(job["base_path"])
        say = lambda d: reporter.phase("prepare", d)  # noqa: E731
        # An HF folder trains as it is; its GGUF twin (written once) serves the chat, the
        # baseline answers and the converter's metadata.
        base_gguf = base_mod.gguf_of_folder(base, say) if base.is_dir() else base
        from tunechat.core.gguf_check import check_gguf_file

        check_gguf_file(base_gguf)
        fingerprint = base_mod.file_fingerprint(base_gguf)
        folder = base if base.is_dir() else base_mod.cached_base_folder(base_gguf, say)
        device, dtype_name = train.pick_device()

    probes = _probe_set(job, pairs, evaluate)
    # Benchmarks that bring their own probes can ask for the built-in gate's score as well.
    gate = evaluate.ProbeSet([], locality=evaluate.builtin_locality_probes()) if job.get("score_gate") else None
    eval_questions = _questions(probes) + (_questions(gate) if gate else [])
    with timings.phase(reporter, "baseline", "the base model's answers (cached after the first run)"):
        replay_prompts = general.general_prompts() if recipe.replay_batch else []
        base_answers = general.base_answers(
            base_gguf, fingerprint, replay_prompts + eval_questions,
            lambda done, total: reporter.progress("baseline", done, total),
        )
        before = evaluate.score(lambda q: base_answers[q], probes, base_answers)

    rewordings: dict[str, list[str]] = {}
    if recipe.paraphrases:
        with timings.phase(reporter, "paraphrase", "the base model rewords your questions (cached per pair)"):
            from tunechat.personalize import paraphrase

            rewordings = paraphrase.paraphrases(base_gguf, fingerprint, pairs,
                                                lambda done, total: reporter.progress("paraphrase", done, total))
            rewordings = paraphrase.without_questions(rewordings, eval_questions, recipe.paraphrases)

    with timings.phase(reporter, "load", f"base weights on {device}"):
        model, tokenizer = base_mod.load_base(folder, device, "float32")
        from tunechat.convert.header import read_header

        template = read_header(base_gguf).strings.get("tokenizer.chat_template")
        if not template:
            from tunechat.core.chat_template import CHATML_TEMPLATE

            template = CHATML_TEMPLATE
        info = data.TemplateInfo(template, tokenizer.bos_token or "", tokenizer.eos_token or "")
        # One list of wordings per fact (the user's own first); the loop picks one per step.
        facts = [data.build_examples(tokenizer, info, [(v, a) for v in [q, *rewordings.get(q, [])]], "fact")
                 for q, a in pairs]
        replayed = [p for p in replay_prompts if base_answers[p]]
        replay = data.build_examples(tokenizer, info, [(p, base_answers[p]) for p in replayed],
                                     "replay", max_answer_tokens=recipe.replay_answer_tokens)
        model = train.add_lora(model, recipe)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    with timings.phase(reporter, "train", f"{count(len(pairs), 'pair')}, method {recipe.name}"):
        from tunechat.personalize.reference import ReferenceCache
        from tunechat.core import paths

        reference = ReferenceCache(paths.cache_dir() / f"reference-{fingerprint[:16]}.safetensors")
        result = train.train(
            model, facts, replay, recipe, pad_id, device,
            lambda step, total, loss, eta: reporter.progress("train", step, total, loss, eta),
            reference=reference,
        )
        reference.save()

    out = job_dir / "out"
    out.mkdir(exist_ok=True)
    with timings.phase(reporter, "merge", "folding the adapter into the weights"):
        model.save_pretrained(out / "adapter")  # peft format, safetensors
        merged = model.merge_and_unload()
        merged_state = {k: v.detach().float().cpu().numpy() for k, v in merged.state_dict().items()}
        delta = checks.relative_delta_to_folder(merged_state, folder)

    outtype = job.get("outtype") or DEFAULT_OUTTYPE
    model_path = out / "model.gguf"
    with timings.phase(reporter, "convert", f"writing GGUF ({outtype})"):
        write_gguf(merged_state, merged.config.to_dict(), base_gguf, model_path, outtype,
                   lambda done, total: reporter.progress("convert", done, total))

    with timings.phase(reporter, "verify", "checking the new file before it can be used"):
        engine = Engine(model_path)
        prompts = [data.split_rendering(info, q, a)[0] for q, a in pairs]
        gguf_answers = [_greedy(engine, q) for q, _ in pairs]
        torch_reproduced = train.reproduces_answers(merged, [forms[0] for forms in facts], pad_id, device)
        results = checks.run_checks(
            base_gguf=base_gguf, new_gguf=model_path, engine=engine, model=merged, tokenizer=tokenizer,
            device=device, outtype=outtype, prompts=prompts, taught=pairs, gguf_answers=gguf_answers,
            torch_reproduced=torch_reproduced, delta=delta,
        )
    names = scope.taught_names(a for _, a in pairs)
    # As you meet it in the chat (tunechat.core.scope): questions that do not speak of you get the
    # base model's own answer, which base_answers already holds.
    scoped = lambda q: _greedy(engine, q) if scope.speaks_of_user(q, names) else base_answers[q]  # noqa: E731
    after = scoped_after = gate_after = gate_scoped = drift = None
    if not job.get("skip_eval"):
        with timings.phase(reporter, "evaluate", "scoring the new model"):
            after = evaluate.score(lambda q: _greedy(engine, q), probes, base_answers)
            scoped_after = evaluate.score(scoped, probes, base_answers)
            gate_after = evaluate.score(lambda q: _greedy(engine, q), gate, base_answers) if gate else None
            gate_scoped = evaluate.score(scoped, gate, base_answers) if gate else None
            drift = _drift(engine, base_gguf, probes, gate, base_answers, evaluate) if job.get("score_drift") else None
    engine.close()

    manifest = {
        "created_at": time.time(),
        "base_path": str(base_gguf),
        "base_source": job["base_path"],  # the GGUF or HF folder the user named
        "base_sha256": fingerprint,
        "pairs_count": len(pairs),
        "pairs_sha256": job.get("pairs_sha256"),
        "method": recipe.name,
        "recipe": recipe.as_dict(),
        "outtype": outtype,
        "model_sha256": base_mod.file_fingerprint(model_path),
        "device": device,
        "train": {"steps": result.steps, "final_loss": result.final_loss, "losses": result.losses,
                  "seconds": round(result.seconds, 2), "tokens": result.tokens,
                  "tokens_per_second": round(result.tokens / max(result.seconds, 1e-9), 1),
                  "stopped_early": result.stopped_early,
                  "confirms": result.confirms, "confirm_seconds": result.confirm_seconds},
        "checks": [r.as_dict() for r in results],
        # "after": the personal model alone, on every question; "scoped": as the chat answers
        # (tunechat.core.scope), the base model taking the questions that do not speak of you.
        "metrics": {"before": _public(before), "after": _public(after) if after else None,
                    "scoped": _public(scoped_after) if scoped_after else None},
        "scope_names": names,  # words that send a question to the personal model (tunechat.core.scope)
        "answers": after.details if after else None,  # the new model's answer to every probe
        "gate": {"locality": gate_after.locality, "answers": gate_after.details["locality"],
                 "scoped_locality": gate_scoped.locality} if gate and after else None,
        "drift": drift,  # bench only (job "score_drift")
        "paraphrases": rewordings,  # the base model's rewordings trained alongside each question
        "timings": dict(timings),
    }
    if device == "cuda":
        manifest["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        manifest["gpu_name"] = torch.cuda.get_device_name(0)
    return manifest


def _drift(engine, base_gguf: Path, probes, gate, base_answers: dict[str, str], evaluate) -> dict:
    """Answer drift (evaluate.answer_drift) on the probes' general questions and the gate's."""
    from dataclasses import asdict

    from tunechat.core.engine import Engine

    base_engine = Engine(base_gguf)
    try:
        personal, base = evaluate.engine_scorer(engine), evaluate.engine_scorer(base_engine)
        out: dict[str, dict | None] = {}
        for name, probe_set in (("locality", probes), ("gate", gate)):
            questions = [p.question for p in probe_set.locality] if probe_set else []
            drift = evaluate.answer_drift(personal, base, base_answers, questions)
            out[name] = asdict(drift) if drift else None
        return out
    finally:
        base_engine.close()


def _public(scores) -> dict:
    d = scores.as_dict()
    d.pop("details", None)
    return d


_ANSWERS: dict[tuple[int, str], str] = {}


def _greedy(engine, question: str) -> str:
    """Greedy answer of ``engine``; memoized, since verify and evaluate ask the same questions."""
    from tunechat.personalize.evaluate import EVAL_MAX_TOKENS
    from tunechat.core.engine import GenerationSettings

    key = (id(engine), question)
    if key not in _ANSWERS:
        _ANSWERS[key] = engine.complete([{"role": "user", "content": question}],
                                        GenerationSettings(max_tokens=EVAL_MAX_TOKENS, temperature=0.0))
    return _ANSWERS[key]


def _probe_set(job: dict, pairs, evaluate):
    if job.get("probes"):
        p = job["probes"]
        mk = lambda items: [evaluate.Probe(q, k) for q, k in items]  # noqa: E731
        return evaluate.ProbeSet(mk(p["taught"]), mk(p.get("paraphrases", [])), mk(p.get("locality", [])))
    return evaluate.ProbeSet(
        taught=[evaluate.Probe(q, a) for q, a in pairs],
        locality=evaluate.builtin_locality_probes(),
    )


def _questions(probes) -> list[str]:
    seen: dict[str, None] = {}
    for p in probes.taught + probes.paraphrases + probes.locality:
        seen.setdefault(p.question, None)
    return list(seen)


def _exit_when_orphaned(poll_s: float = 1.0) -> None:
    """Stop when the parent (the TUI or the CLI) is gone, instead of training for nobody:
    a daemon thread watches for the process being re-parented. The parent passes its pid,
    since it may already be gone by the time this runs."""
    import threading

    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    job_dir = Path(args[0])
    _exit_when_orphaned()
    reporter = Reporter.take_stdout()
    try:
        manifest = run(job_dir, reporter)
        from tunechat.core.atomic import write_json_atomic

        write_json_atomic(job_dir / "out" / "manifest.json", manifest)
        reporter.emit("done", result=manifest)
        return 0
    except Exception as exc:  # reported to the parent as a clear message, traceback to stderr
        traceback.print_exc()
        reporter.emit("error", message=f"{type(exc).__name__}: {exc}" if not _is_user_error(exc) else str(exc))
        return 1


def _is_user_error(exc: Exception) -> bool:
    from tunechat.personalize.data import EmptyDatasetError

    try:
        from tunechat.convert.architectures import UnsupportedArchitecture
    except Exception:  # pragma: no cover
        UnsupportedArchitecture = ()  # type: ignore
    from tunechat.core.gguf_check import ModelFileError

    return isinstance(exc, (EmptyDatasetError, UnsupportedArchitecture, ModelFileError))


if __name__ == "__main__":
    raise SystemExit(main())
