"""The LoRA training loop: facts plus replay, early stopping, progress callbacks.

A small hand-written loop instead of transformers' Trainer: per-step control over the mix of
taught facts and replayed general answers, the KL term, and stopping as soon as every taught
answer is learned.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tunechat.personalize.data import IGNORE, Example
from tunechat.personalize.recipe import Recipe
from tunechat.personalize.reference import ReferenceCache, topk_kl
from tunechat.personalize.targets import target_modules

Device = Literal["cuda", "cpu"]
ProgressFn = Callable[[int, int, float, float], None]  # step, total, loss, eta seconds
CancelFn = Callable[[], bool]


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    losses: list[float]
    seconds: float
    tokens: int
    stopped_early: bool
    confirm_seconds: float = 0.0  # spent in the greedy stop's confirmation passes
    confirms: int = 0


def pick_device() -> tuple[Device, str]:
    """(device, autocast dtype name): CUDA with bf16 when present, else CPU float32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", "bfloat16"
    return "cpu", "float32"


def _collate(batch: Sequence[Example], pad_id: int, device: str):
    """Left-padded batch so every answer ends at the right edge; positions count real tokens
    only, so RoPE sees the same positions as at inference. Returns ids, labels, mask,
    position ids and how many trailing positions hold all the answers."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    answer_span = 1
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, width - n:] = torch.tensor(e.input_ids)
        labels[i, width - n:] = torch.tensor(e.labels)
        mask[i, width - n:] = 1
        first_label = next((j for j, lab in enumerate(e.labels) if lab != IGNORE), n)
        answer_span = max(answer_span, n - first_label + 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), labels.to(device), mask.to(device), positions.to(device), answer_span


def _token_losses(logits, labels):
    """Per-token cross entropy (shifted), and the mask of positions that count."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    valid = shift_labels != IGNORE
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.clamp(min=0).reshape(-1), reduction="none"
    ).view(shift_labels.shape)
    return losses * valid, valid


@dataclass
class _Pass:
    """One forward pass over a micro-batch, with what the losses need."""

    logits: Any  # torch tensors: torch is imported only where the loop runs
    per_token: Any
    valid: Any
    tokens: int
    inputs: dict
    prefix: Any  # the shared prefix's token ids (1, P), or None
    targets: Any  # the label each kept logit row should predict (IGNORE where none)
    span: int  # trailing positions whose logits are kept

    def run_again(self, model):
        """Logits of ``model`` (e.g. with the adapter disabled) on the same inputs."""
        inputs = dict(self.inputs)
        if self.prefix is not None:
            inputs["cache"] = _prefix_cache(model, self.prefix, inputs["input_ids"].size(0))
        return _last_logits(model, inputs, self.span)


def shared_prefix_length(batch: Sequence[Example]) -> int:
    """Tokens every example starts with (chat header, system prompt, user turn opening),
    stopping before the token that predicts the first answer token."""
    first = batch[0].input_ids
    limit = min(next((j for j, lab in enumerate(e.labels) if lab != IGNORE), len(e.labels)) for e in batch) - 1
    n = 0
    while n < limit and all(len(e.input_ids) > n and e.input_ids[n] == first[n] for e in batch):
        n += 1
    return n


def _prefix_cache(model, prefix, batch_size: int):
    """Keys and values of the shared prefix, computed once and repeated over the batch;
    gradients flow back through them into the prefix pass."""
    out = model(input_ids=prefix, use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_repeat_interleave(batch_size)
    return cache


def _cache_argument(model) -> str:
    """The keyword a decoder takes its KV cache by: "cache" in transformers 5.2x,
    "past_key_values" before (the CUDA machine's 5.17)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_keyword(type(causal_lm.model))


@functools.cache
def _cache_keyword(decoder_class: type) -> str:
    """Read once per decoder class: ``_forward`` runs several times a step."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


MIN_SHARED_PREFIX = 8


def _last_logits(model, inputs: dict, span: int):
    """Logits at the last ``span`` positions only: the 49k-wide head is a large share of the
    compute. The decoder's output is sliced and made contiguous before the head, since a
    linear layer on a strided 3-D slice runs as a batched matmul over a copied weight
    (2x slower forward and backward, measured)."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.model(**inputs).last_hidden_state
    return causal_lm.lm_head(hidden[:, -span:, :].contiguous())


def _forward(model, batch: Sequence[Example], pad_id: int, device: str, autocast_dtype) -> _Pass:
    """Forward pass over ``batch``. The prefix every example shares (about half of each short
    example: template header and system prompt) runs once, not once per example."""
    import torch

    shared = shared_prefix_length(batch) if len(batch) > 1 else 0
    prefix = None
    if shared >= MIN_SHARED_PREFIX:
        prefix = torch.tensor([batch[0].input_ids[:shared]], device=device)
        batch = [Example(e.input_ids[shared:], e.labels[shared:], e.kind) for e in batch]
    ids, labels, mask, positions, span = _collate(batch, pad_id, device)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    with torch.autocast(device_type=device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        run = dict(inputs)
        if prefix is not None:
            ones = torch.ones((len(batch), shared), dtype=mask.dtype, device=device)
            inputs["attention_mask"] = torch.cat([ones, mask], 1)
            inputs["position_ids"] = positions + shared
            run = {**inputs, _cache_argument(model): _prefix_cache(model, prefix, len(batch))}
        logits = _last_logits(model, run, span)
        per_token, valid = _token_losses(logits, labels[:, -span:])
    tokens = int(mask.sum()) + (prefix.size(1) if prefix is not None else 0)
    return _Pass(logits, per_token, valid, tokens, inputs, prefix, labels[:, -span:][:, 1:], span)


def _reproduced(run: _Pass):
    """Per example of a pass: is every answer token the argmax (greedy decoding would give
    exactly the answer, end-of-turn token included)?"""
    return ((run.logits[:, :-1].argmax(-1) == run.targets) | ~run.valid).all(1)


def reproduces_answers(model, examples: Sequence[Example], pad_id: int, device: str, chunk: int = 32) -> list[bool]:
    """Per example: does greedy decoding give exactly its answer? Teacher-forced, in batched
    no-grad passes of ``chunk`` examples."""
    import torch

    out: list[bool] = []
    with torch.no_grad():
        for i in range(0, len(examples), chunk):
            out += [bool(h) for h in _reproduced(_forward(model, examples[i:i + chunk], pad_id, device, None))]
    return out


def _kl_to_base(model, run: _Pass, batch: Sequence[Example], reference: ReferenceCache):
    """KL(base || tuned) at every answer position, one tensor per example of ``batch``; the
    base side comes from ``reference``, filled by one adapter-off pass when an example is new
    to it."""
    import torch

    if any(reference.get(e) is None for e in batch):
        with torch.no_grad(), model.disable_adapter():
            base_logits = run.run_again(model)[:, :-1]
        for b, example in enumerate(batch):
            if reference.get(example) is None:
                reference.put(example, base_logits[b][run.valid[b]])
    # Every answer position of the batch in one gather (batch-major, as the references are
    # concatenated): slicing example by example made autograd write one logits-sized zero
    # tensor per example on the way back (select_backward; large under the profiler, within
    # run-to-run noise in bench/personalize.py).
    tuned = run.logits[:, :-1][run.valid]
    refs = [reference.get(example) for example in batch]
    idx = torch.cat([r[0] for r in refs]).to(tuned.device)
    lp = torch.cat([r[1] for r in refs]).to(tuned.device)
    return list(topk_kl(tuned, idx, lp).split(run.valid.sum(1).tolist()))


def add_lora(model, recipe: Recipe):
    """``model`` with LoRA adapters (rank and alpha of ``recipe``) on every linear projection of
    every layer, named as its architecture names them (tunechat.personalize.targets)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=0.0,
        target_modules=target_modules(model), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train(
    model,
    facts: list[list[Example]],
    replay: list[Example],
    recipe: Recipe,
    pad_id: int,
    device: Device,
    progress: ProgressFn = lambda *a: None,
    cancelled: CancelFn = lambda: False,
    reference: ReferenceCache | None = None,
    negatives: Sequence[Example] = (),
) -> TrainResult:
    """Train the LoRA adapters of ``model`` (a peft model) in place.

    ``facts`` holds, per taught pair, its examples in one or more surface forms; each step
    uses one form of each fact in the batch: the original form at step 1, then one at random.
    ``reference`` keeps the base model's distributions on replay answers (for the KL term)
    between steps and runs; the caller saves it. ``negatives`` (personal questions never
    taught, answered that they were not: tunechat.personalize.negatives) join the facts' pass,
    ``recipe.negatives`` a step, drawn from their own random stream; they weigh as much as a
    fact each and never decide the stop."""
    import torch

    rng = random.Random(recipe.seed)
    negative_rng = random.Random(f"negatives-{recipe.seed}")
    torch.manual_seed(recipe.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    autocast_dtype = torch.bfloat16 if device == "cuda" else None
    model.train()
    losses: list[float] = []
    tokens = 0
    start = time.monotonic()
    stopped_early = False
    step = 0
    # With more facts than fit a batch, a fact is seen every ``rounds`` steps: judge the worst
    # loss over that window.
    rounds = max(1, math.ceil(len(facts) / recipe.fact_batch))
    recent_worst: list[float] = []
    every_form = [e for forms in facts for e in forms]
    last_confirm = -1
    confirms, confirm_seconds = 0, 0.0
    for step in range(1, recipe.max_steps + 1):
        if cancelled():
            raise KeyboardInterrupt
        everyone = len(facts) <= recipe.fact_batch
        chosen = range(len(facts)) if everyone else rng.sample(range(len(facts)), recipe.fact_batch)
        # A draw even for a fact with one form: the random stream stays the same whatever the forms.
        fact_batch = [facts[i][0 if step == 1 else rng.randrange(len(facts[i]))] for i in chosen]
        replay_batch = [replay[i] for i in rng.sample(list(range(len(replay))), min(recipe.replay_batch, len(replay)))]
        negative_batch = negative_rng.sample(list(negatives), min(recipe.negatives, len(negatives)))
        optimizer.zero_grad(set_to_none=True)
        # Two passes, facts (with negatives) then replay, each backpropagated at once: the same
        # summed loss as one batch, with half the activations alive at a time (peak memory).
        fact_pass = _forward(model, fact_batch + negative_batch, pad_id, device, autocast_dtype)
        tokens += fact_pass.tokens
        example_tok = fact_pass.per_token.sum(1) / fact_pass.valid.sum(1).clamp(min=1)
        example_tok.mean().backward()
        fact_tok = example_tok[:len(fact_batch)]
        drawn_reproduced = bool(_reproduced(fact_pass)[:len(fact_batch)].all())
        del fact_pass
        if replay_batch:
            replay_pass = _forward(model, replay_batch, pad_id, device, autocast_dtype)
            tokens += replay_pass.tokens
            r_valid = replay_pass.valid
            loss = recipe.replay_weight * replay_pass.per_token.sum() / r_valid.sum().clamp(min=1)
            if recipe.kl_weight > 0:
                kls = _kl_to_base(model, replay_pass, replay_batch,
                                  reference if reference is not None else ReferenceCache())
                loss = loss + recipe.kl_weight * torch.cat(kls).sum() / r_valid.sum().clamp(min=1)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        recent_worst = (recent_worst + [float(fact_tok.max().detach())])[-rounds:]
        losses.append(float(fact_tok.mean().detach()))
        elapsed = time.monotonic() - start
        progress(step, recipe.max_steps, losses[-1], elapsed / step * (recipe.max_steps - step))
        # Early stop: every taught answer is learned.
        if step < max(recipe.min_steps, rounds):
            continue
        if recipe.stop_when == "greedy":
            # This step's wordings all came out right (before the update): confirm on every
            # wording of every fact, after it. A failed confirmation waits a step.
            if drawn_reproduced and step > last_confirm + 1:
                last_confirm = step
                confirm_start = time.monotonic()
                confirmed = all(reproduces_answers(model, every_form, pad_id, device))
                confirms += 1
                confirm_seconds += time.monotonic() - confirm_start
                if confirmed:
                    stopped_early = True
                    break
        elif max(recent_worst) < recipe.stop_loss:
            stopped_early = True
            break
    model.eval()
    return TrainResult(step, losses[-1] if losses else math.nan, losses, time.monotonic() - start, tokens,
                       stopped_early, round(confirm_seconds, 2), confirms)
