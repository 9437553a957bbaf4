"""The worker's phases, one function each, in the order ``tunechat.personalize.worker`` runs
them: prepare, baseline, paraphrase, load, train, merge, convert, verify, evaluate, and the
manifest that records them.

The worker imports this module inside its "prepare" phase: loading torch and transformers is
most of that phase's time, and the parent is told of the phase before it starts.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunechat.convert.header import read_header
from tunechat.convert.lora import write_lora_gguf
from tunechat.convert.verify import CheckResult
from tunechat.convert.writer import DEFAULT_OUTTYPE, write_gguf
from tunechat.core import jsonl, memory, paths
from tunechat.core.chat_template import CHATML_TEMPLATE
from tunechat.core.engine import Engine, tokenize_all_with_vocab
from tunechat.core.fingerprint import base_fingerprint, file_fingerprint
from tunechat.core.gguf_check import check_gguf_file
from tunechat.core.manifest import Check, Drift, DriftScores, Gate, Manifest, Metrics, Scores, TrainStats
from tunechat.core.registry import ADAPTER_FILE, MODEL_FILE, PAIRS_FILE
from tunechat.core.scope import remembered_about_user, remembered_base_likelihood, working
from tunechat.core.scope_probe import ScopeProbe
from tunechat.core.turns import Taught, decide, settle
from tunechat.personalize import base as base_mod
from tunechat.personalize import (
    checks,
    data,
    evaluate,
    frames,
    general,
    negatives,
    paraphrase,
    scope_fit,
    siblings,
    train,
)
from tunechat.personalize.data import Example, TemplateInfo
from tunechat.personalize.evaluate import ProbeSet, greedy_answer
from tunechat.personalize.merge import folder_weights, merged_weights
from tunechat.personalize.progress import Reporter
from tunechat.personalize.ranks import ALONE, Ranks
from tunechat.personalize.recipe import Recipe
from tunechat.personalize.reference import ReferenceCache
from tunechat.personalize.spec import JobSpec, Outtype, Pair
from tunechat.personalize.train import Device, TrainResult


@dataclass(frozen=True)
class Job:
    """The spec resolved against the base model: what every later phase reads."""

    spec: JobSpec
    reporter: Reporter
    pairs: list[Pair]
    recipe: Recipe
    base_gguf: Path  # the base as llama.cpp loads it (an HF folder's GGUF twin)
    fingerprint: str  # of base_gguf: the key of every per-base cache
    folder: Path  # the base as transformers loads it
    device: Device
    form: memory.Form  # the frozen base's form in training (tunechat.core.memory.training_form)
    outtype: Outtype
    probes: ProbeSet
    gate: ProbeSet | None  # the built-in locality gate, when the spec brings probes of its own
    write_merged: bool  # also write the merged GGUF (JobSpec.writes_merged)
    taught: Taught  # what the pairs teach, as the chat derives it (tunechat.core.turns)

    @property
    def eval_questions(self) -> list[str]:
        return _questions(self.probes) + (_questions(self.gate) if self.gate else [])


@dataclass(frozen=True)
class Baseline:
    answers: dict[str, str]  # the base model's greedy answers to the replay prompts and every probe
    replay_prompts: list[str]
    before: evaluate.Scores

    def replayed(self) -> list[Pair]:
        """The replay prompts the base model answered, with its answers: what training replays."""
        return [(p, self.answers[p]) for p in self.replay_prompts if self.answers[p]]


@dataclass
class Loaded:
    model: Any  # the base model with LoRA adapters (peft)
    tokenizer: Any
    template: TemplateInfo
    facts: list[list[Example]]  # per pair, its wordings (the user's own first)
    replay: list[Example]
    pad_id: int
    negatives: list[Example]  # untold personal questions (tunechat.personalize.negatives)


@dataclass
class Merged:
    model: Any  # the model with its adapters active: what the merged weights compute (peft)
    state: Mapping[str, np.ndarray]  # the merged weights, each computed when read (LazyState)
    delta: float  # relative change of the weights against the base
    adapter: dict[str, np.ndarray]  # the LoRA factors alone (peft's keys)


@dataclass(frozen=True)
class Written:
    model: Path | None  # the merged GGUF, when the job writes one
    adapter: Path  # the llama.cpp LoRA GGUF over the base


@dataclass(frozen=True)
class Evaluation:
    after: evaluate.Scores  # the personal model alone, on every question
    scoped: evaluate.Scores  # as the chat answers (tunechat.core.turns.decide)
    gate_after: evaluate.Scores | None
    gate_scoped: evaluate.Scores | None
    drift: DriftScores | None


def prepare(spec: JobSpec, reporter: Reporter) -> Job:
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    pairs = list(spec.pairs)
    data.require_pairs(pairs)
    device, _ = train.pick_device()
    if not spec.ignore_memory:  # across processes, this one holds the base after training, on the CPU
        require_memory(spec.base_path, "cpu" if spec.processes > 1 else device)
    recipe = spec.training_recipe()
    base = spec.base_path
    say = lambda d: reporter.phase("prepare", d)  # noqa: E731
    # An HF folder trains as it is; its GGUF twin (written once) serves the chat, the
    # baseline answers and the converter's metadata.
    base_gguf = base_mod.gguf_of_folder(base, say) if base.is_dir() else base
    check_gguf_file(base_gguf)
    fingerprint = base_fingerprint(base_gguf)
    form = spec.weights or memory.training_form(base, gpu=device == "cuda")
    folder = base if base.is_dir() else base_mod.cached_base_folder(base_gguf, say, form)
    tokenizer = base_mod.load_tokenizer(folder)
    checks.require_training_tokenizer(base_gguf, tokenizer, template_info(base_gguf, tokenizer))
    return Job(
        spec=spec, reporter=reporter, pairs=pairs, recipe=recipe, base_gguf=base_gguf,
        fingerprint=fingerprint, folder=folder, device=device, form=form,
        outtype=spec.outtype or DEFAULT_OUTTYPE,
        probes=_probe_set(spec, pairs),
        gate=ProbeSet([], locality=evaluate.builtin_locality_probes()) if spec.score_gate else None,
        write_merged=spec.writes_merged(base_gguf.stat().st_size),
        taught=Taught.from_pairs(pairs),
    )


def offloaded(job: Job) -> Job:
    """``job`` on the CPU: after training across processes, the base they sharded is loaded whole
    for the merge and the checks, and on a GPU machine it need not fit one device."""
    return dataclasses.replace(job, device="cpu")


def require_memory(base: Path, device: Device) -> None:
    """Refuse a base this machine cannot hold before anything is loaded: device memory on CUDA
    (which only this process can read), else the parent's CPU check again (the parent guessed
    CUDA from the driver alone)."""
    override = "tunechat personalize --ignore-memory tries anyway"
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        refused = memory.device_refusal(base, free, total, override)
    else:
        refused = memory.refusal(base, override, gpu=False)
    if refused:
        raise memory.NotEnoughMemory(refused)


def baseline(job: Job) -> Baseline:
    """The base model's answers (cached per base file) and its scores."""
    asked = [q for q, _ in job.pairs] + job.eval_questions
    prompts = general.replay_prompts(asked) if job.recipe.replay_batch else []
    answers = general.base_answers(job.base_gguf, job.fingerprint, prompts + job.eval_questions,
                                   lambda done, total: job.reporter.progress("baseline", done, total))
    return Baseline(answers, prompts, evaluate.score(lambda q: answers[q], job.probes, answers))


def reword(job: Job) -> dict[str, list[str]]:
    """Up to ``recipe.paraphrases`` base-model rewordings per taught question, none of them a
    question the evaluation asks."""
    found = paraphrase.paraphrases(job.base_gguf, job.fingerprint, job.pairs,
                                   lambda done, total: job.reporter.progress("paraphrase", done, total))
    return paraphrase.without_questions(found, job.eval_questions, job.recipe.paraphrases)


def load(job: Job, replayed: list[Pair], rewordings: dict[str, list[str]], device: str | None = None) -> Loaded:
    """The base weights with fresh adapters (on ``device``, else the job's), and the examples
    rendered with its chat template: the taught pairs and the untold negatives in their wordings
    (``wordings``), the ``replayed`` general answers (``Baseline.replayed``). In the float16
    form each layer's activations are recomputed in the backward pass too."""
    model, tokenizer = base_mod.load_base(job.folder, device or job.device, job.form)
    info = template_info(job.base_gguf, tokenizer)
    trained = trained_wordings(job, rewordings)
    facts = [data.build_examples(tokenizer, info, forms, "fact") for forms in trained.facts]
    replay = data.build_examples(tokenizer, info, replayed, "replay", max_answer_tokens=job.recipe.replay_answer_tokens)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = train.add_lora(model, job.recipe)
    if job.form == "float16":
        train.recompute_layers(model)
    negative_examples = data.build_examples(tokenizer, info, trained.negatives, "negative")
    return Loaded(model, tokenizer, info, facts, replay, pad_id, negative_examples)


@dataclass(frozen=True)
class Trained:
    """What a run trains on besides the replay (``trained_wordings``)."""

    facts: list[list[Pair]]  # per taught pair, its wordings (``wordings``)
    untold: list[Pair]  # the untold questions drawn (``negatives``), as drawn
    negatives: list[Pair]  # those and their wrapped forms: what is trained
    wrapped: list[list[str]]  # per taught pair, its wrapped forms (the last of its wordings)


def trained_wordings(job: Job, rewordings: Mapping[str, list[str]]) -> Trained:
    """Each taught pair in its wordings, and the untold negatives (``negatives``, when the recipe
    has them) in theirs (``wordings``). Deterministic: the manifest records what ``load`` trained
    by calling it again."""
    untold = negatives.negatives(job.pairs, [r for forms in rewordings.values() for r in forms],
                                 excluded=job.eval_questions) if job.recipe.negatives else []
    return wordings(job.pairs, rewordings, untold, job.recipe, job.eval_questions)


def wordings(pairs: Sequence[Pair], rewordings: Mapping[str, list[str]], untold: Sequence[Pair], recipe: Recipe,
             eval_questions: Sequence[str]) -> Trained:
    """Per taught pair, the wordings it is trained in (the user's own first, then the base
    model's ``rewordings``, then ``recipe.wrapped`` forms: ``frames``), and the ``untold``
    negatives with ``recipe.wrapped_negatives`` forms each: how a question is wrapped tells
    nothing, its subject does. No wrapped form is one of ``eval_questions``."""
    rng = random.Random(f"wrapped-{recipe.seed}")
    asked = {paraphrase.normalize_question(q) for q in eval_questions}
    wrapped = [frames.forms_of(q, recipe.wrapped, rng, asked) for q, _ in pairs]
    facts = [[(v, a) for v in [q, *rewordings.get(q, []), *forms]] for (q, a), forms in zip(pairs, wrapped)]
    untold_forms = [(v, a) for q, a in untold
                    for v in frames.forms_of(q, recipe.wrapped_negatives, rng, asked)]
    return Trained(facts, list(untold), [*untold, *untold_forms], wrapped)


def template_info(base_gguf: Path, tokenizer: Any) -> TemplateInfo:
    """The base's chat template (ChatML when the file has none, as in the chat) with the training
    tokenizer's BOS and EOS."""
    template = read_header(base_gguf).strings.get("tokenizer.chat_template") or CHATML_TEMPLATE
    return TemplateInfo(template, tokenizer.bos_token or "", tokenizer.eos_token or "")


def train_adapter(job: Job, loaded: Loaded, ranks: Ranks = ALONE) -> TrainResult:
    """Train the adapters in place; the base model's distributions on the replay answers are
    kept between runs (per base file; the first rank keeps those it computed)."""
    reference = ReferenceCache(paths.cache_dir() / f"reference-{job.fingerprint[:16]}.safetensors", job.fingerprint)
    result = train.train(
        loaded.model, loaded.facts, loaded.replay, job.recipe, loaded.pad_id, job.device,
        lambda step, total, loss, eta: job.reporter.progress("train", step, total, loss, eta),
        reference=reference, negatives=loaded.negatives, ranks=ranks,
    )
    if ranks.rank == 0:
        reference.save()
    return result


def take_adapter(loaded: Loaded, state: Mapping[str, Any]) -> None:
    """Put adapter factors trained elsewhere (the ranks of ``--processes N``) into ``loaded``."""
    from peft import set_peft_model_state_dict

    dtype = next(p for p in loaded.model.parameters() if p.requires_grad).dtype
    found = set_peft_model_state_dict(loaded.model, {k: v.to(dtype) for k, v in state.items()})
    if found.unexpected_keys:
        raise ValueError(f"The trained adapter does not fit this base: {found.unexpected_keys[:3]}")
    loaded.model.eval()


def merge(job: Job, loaded: Loaded, out: Path) -> Merged:
    """Save the adapter (peft format, safetensors) and fold it into the weights lazily: each
    merged weight is computed when it is read (tunechat.personalize.merge), so no copy of the
    model is made; the model keeps its adapters, which compute what the merged weights do. The
    base part is read from the base's files: exact in either form."""
    from peft import get_peft_model_state_dict

    loaded.model.save_pretrained(out / "adapter")
    adapter = {k: v.detach().float().cpu().numpy() for k, v in get_peft_model_state_dict(loaded.model).items()}
    state = merged_weights(loaded.model, folder_weights(job.folder))
    return Merged(loaded.model, state, checks.relative_delta_to_folder(state, job.folder), adapter)


def convert(job: Job, merged: Merged, out: Path) -> Written:
    """The adapter as a llama.cpp LoRA over the base (what the chat runs: one model in memory,
    the adapter switched per turn) and, when the job writes one, the merged GGUF."""
    config = merged.model.config.to_dict()
    written = Written(out / MODEL_FILE if job.write_merged else None, out / ADAPTER_FILE)
    write_lora_gguf(merged.adapter, job.recipe.alpha, config, job.base_gguf, written.adapter)
    if written.model is not None:
        write_gguf(merged.state, config, job.base_gguf, written.model, job.outtype,
                   lambda done, total: job.reporter.progress("convert", done, total))
    return written


def torch_side(job: Job, loaded: Loaded, merged: Merged) -> checks.TorchSide:
    """What verify needs from the merged torch model (tunechat.personalize.checks.TorchSide),
    taken so the model can be let go before llama.cpp maps the new files."""
    prompts = [data.split_rendering(loaded.template, q, a)[0] for q, a in job.pairs]
    return checks.torch_side(
        merged.model, loaded.tokenizer, tokenize_all_with_vocab(job.base_gguf, prompts), job.device,
        train.reproduces_answers(merged.model, [forms[0] for forms in loaded.facts], loaded.pad_id, job.device),
        merged.delta, checks.probe_texts(loaded.template),
    )


def verify(job: Job, torch_side: checks.TorchSide, engine: Engine, adapted: Engine,
           written: Written) -> list[CheckResult]:
    """Every check the new version must pass before it can be used (tunechat.personalize.checks):
    the merged file (``engine``) and the base with the adapter (``adapted``); without a merged
    file, ``engine`` is ``adapted`` and the checks read the base with the adapter."""
    return checks.run_checks(
        base_gguf=job.base_gguf, new_gguf=written.model, engine=engine, torch_side=torch_side,
        adapter_engine=adapted if written.model is not None else None, outtype=job.outtype, taught=job.pairs,
        gguf_answers=[greedy_answer(engine, q) for q, _ in job.pairs],
    )


def fit_scope_probe(job: Job, adapted: Engine, out: Path) -> ScopeProbe | None:
    """The version's scope probe, written beside it (``adapted``: the base model, whose
    embeddings the probe reads whatever adapter it carries). A probe that cannot be fitted (a
    full disk for the cache, say) leaves the version scoped by the words alone: training is not
    lost to it."""
    try:
        return scope_fit.fit_scope_probe(adapted, job.fingerprint, job.pairs, job.taught, out)
    except (OSError, RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
        job.reporter.phase("verify", f"no scope probe ({exc}): the words alone will decide")
        return None


def evaluate_model(job: Job, base: Baseline, engine: Engine, adapted: Engine,
                   scope_probe: ScopeProbe | None = None) -> Evaluation:
    """The new model's scores alone (``engine``: the merged file or, without one, the base with
    the adapter, as the chat answers with scoping off) and as the chat answers with scoping on,
    the version's ``scope_probe`` included: a question that speaks of the user gets the base
    with the adapter, any other the base model's own answer, which the baseline holds."""
    about_user = remembered_about_user(scope_probe, adapted) if scope_probe is not None else None

    def alone(question: str) -> str:
        return greedy_answer(engine, question)

    def scoped(question: str) -> str:
        decision = decide([{"role": "user", "content": question}], job.taught, about_user=about_user)
        if decision.route == "base":
            return base.answers[question]
        if decision.untold is not None:
            return decision.untold
        answer = greedy_answer(adapted, question)
        settled = settle(decision, answer, job.taught, base_likelihood, working(about_user))
        if settled.said is not None:
            return settled.said
        return base.answers[question] if settled.route == "base" else answer

    base_likelihood = remembered_base_likelihood(adapted)

    gate = job.gate
    counted = _counted(job.reporter, 2 * (_asks(job.probes) + (_asks(gate) if gate else 0)))
    return Evaluation(
        after=evaluate.score(counted(alone), job.probes, base.answers),
        scoped=evaluate.score(counted(scoped), job.probes, base.answers),
        gate_after=evaluate.score(counted(alone), gate, base.answers) if gate else None,
        gate_scoped=evaluate.score(counted(scoped), gate, base.answers) if gate else None,
        drift=_drift(job, engine, base.answers) if job.spec.score_drift else None,
    )


def _asks(probes: ProbeSet) -> int:
    """How many questions ``evaluate.score`` asks of ``probes`` (each locality question once,
    whether it counts or only feeds the soft score)."""
    return len(probes.taught) + len(probes.paraphrases) + len(probes.locality) + len(probes.untaught)


def _counted(reporter: Reporter, total: int):
    """Wraps answerers so that each question asked reports the evaluate phase's progress (it
    takes a minute on a CPU: without it the phase looks frozen)."""
    done = 0

    def wrap(ask: evaluate.Answerer) -> evaluate.Answerer:
        def counted(question: str) -> str:
            nonlocal done
            answer = ask(question)
            done += 1
            reporter.progress("evaluate", min(done, total), total)
            return answer

        return counted

    return wrap


def record_pairs(job: Job, out: Path) -> None:
    """The pairs this version learned, beside it: the models screen compares versions by them
    and an export carries them."""
    jsonl.write_pairs(out / PAIRS_FILE, job.pairs)


def manifest(job: Job, base: Baseline, rewordings: dict[str, list[str]], result: TrainResult,
             results: list[CheckResult], evaluation: Evaluation | None, written: Written,
             timings: dict[str, float], peaks: Mapping[str, float]) -> Manifest:
    after = evaluation.after if evaluation else None
    trained = trained_wordings(job, rewordings)
    wrapped = {q: forms for (q, _), forms in zip(job.pairs, trained.wrapped) if forms}
    gate = None
    if evaluation and evaluation.gate_after and evaluation.gate_scoped:
        gate = Gate(evaluation.gate_after.locality, evaluation.gate_scoped.locality,
                    evaluation.gate_after.details["locality"])
    on_gpu = job.device == "cuda"
    return Manifest(
        created_at=time.time(),
        base_path=str(job.base_gguf),
        base_source=str(job.spec.base_path),
        base_sha256=job.fingerprint,
        pairs_count=len(job.pairs),
        pairs_sha256=job.spec.pairs_sha256,
        method=job.recipe.name,
        recipe=job.recipe.as_dict(),
        outtype=job.outtype,
        model_sha256=file_fingerprint(written.model) if written.model is not None else None,
        adapter_sha256=file_fingerprint(written.adapter),
        device=job.device,
        train=TrainStats(
            steps=result.steps, final_loss=result.final_loss, losses=result.losses,
            seconds=round(result.seconds, 2), tokens=result.tokens,
            tokens_per_second=round(result.tokens / max(result.seconds, 1e-9), 1),
            stopped_early=result.stopped_early, confirms=result.confirms, confirm_seconds=result.confirm_seconds,
            weights=job.form, processes=job.spec.processes,
        ),
        checks=[Check(r.name, r.passed, r.detail) for r in results],
        metrics=Metrics(before=_summary(base.before), after=_summary(after) if after else None,
                        scoped=_summary(evaluation.scoped) if evaluation else None),
        scope_names=list(job.taught.signals),  # read back only for a version without its pairs file
        taught_subjects=list(job.taught.subjects or ()),
        answers=after.details if after else None,
        scoped_answers=evaluation.scoped.details if evaluation else None,
        gate=gate,
        drift=evaluation.drift if evaluation else None,
        paraphrases=rewordings,
        wrapped=wrapped,
        untold_questions=[q for q, _ in trained.untold],
        timings=dict(timings),
        peak_rss_mib=dict(peaks),
        gpu_peak_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu else None,
        gpu_name=torch.cuda.get_device_name(0) if on_gpu else None,
    )


def _summary(scores: evaluate.Scores) -> Scores:
    return Scores(scores.reliability, scores.generalization, scores.locality, scores.soft_locality,
                  scores.no_borrowing, scores.admits)


def _drift(job: Job, engine: Engine, base_answers: dict[str, str]) -> DriftScores:
    """Answer drift (evaluate.answer_drift) on the probes' general questions and the gate's."""
    base_engine = Engine(job.base_gguf)
    try:
        personal, base = evaluate.engine_scorer(engine), evaluate.engine_scorer(base_engine)

        def drift(probe_set: ProbeSet | None) -> Drift | None:
            questions = [p.question for p in probe_set.locality] if probe_set else []
            found = evaluate.answer_drift(personal, base, base_answers, questions)
            return Drift(found.mean, found.damage) if found else None

        return DriftScores(drift(job.probes), drift(job.gate))
    finally:
        base_engine.close()


def _probe_set(spec: JobSpec, pairs: list[Pair]) -> ProbeSet:
    """The spec's own probes (their keys are what an untaught answer must not borrow), else the
    taught pairs, the built-in locality probes and the pairs' sibling questions as untaught ones
    (borrowing read from the taught answers: evaluate.answer_keys)."""
    if spec.probes:
        mk = lambda items: [evaluate.Probe(q, k) for q, k in items]  # noqa: E731
        return ProbeSet(mk(spec.probes.taught), mk(spec.probes.paraphrases), mk(spec.probes.locality),
                        list(spec.probes.untaught))
    return ProbeSet(taught=[evaluate.Probe(q, a) for q, a in pairs], locality=evaluate.builtin_locality_probes(),
                    untaught=siblings.sibling_questions([q for q, _ in pairs]),
                    borrow_keys=evaluate.answer_keys(a for _, a in pairs))


def _questions(probes: ProbeSet) -> list[str]:
    seen: dict[str, None] = {}
    for question in [p.question for p in probes.taught + probes.paraphrases + probes.locality] + probes.untaught:
        seen.setdefault(question, None)
    return list(seen)
