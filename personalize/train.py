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
from tunechat.personalize.fused import fuse_lora_products
from tunechat.personalize.ranks import ALONE, Ranks
from tunechat.personalize.recipe import Recipe
from tunechat.personalize.reference import ReferenceCache, topk_kl_of_logprobs
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


@dataclass
class _Pass:
    """One forward pass over a micro-batch, packed into one row, with what the losses need.

    Only the rows that predict an answer token reach the output head: ``logits`` holds them
    example after example (``counts`` per example), and ``logprobs`` their log-softmax, which
    the cross entropy and the KL term share."""

    logits: Any  # [n, vocab]; torch tensors: torch is imported only where the loop runs
    logprobs: Any  # [n, vocab] float32
    per_token: Any  # [n] cross entropy of each answer token
    targets: Any  # [n] the answer token each row predicts
    example: Any  # [n] the index in the batch of each row's example
    counts: list[int]  # answer tokens per example
    tokens: int  # tokens of the batch, the shared prefix counted once
    inputs: dict  # the packed row as the decoder takes it
    rows: Any  # [n] positions of the logits' rows in the packed row
    prefix: int  # length of the shared prefix at the start of the row (0: none)

    def per_example(self, values):
        """Sum of ``values`` ([n], one per row) over each example's rows: [batch]."""
        return values.new_zeros(len(self.counts)).index_add(0, self.example, values)

    def per_example_mean(self):
        """Each example's mean token loss: [batch]."""
        return self.per_example(self.per_token) / self.per_token.new_tensor(self.counts).clamp(min=1)

    def run_again(self, model):
        """Logits of ``model`` (e.g. with the adapter disabled) at the same rows."""
        return _row_logits(model, self.inputs, self.rows)


def shared_prefix_length(batch: Sequence[Example]) -> int:
    """Tokens every example starts with (chat header, system prompt, user turn opening),
    stopping before the token that predicts the first answer token."""
    first = batch[0].input_ids
    limit = min(next((j for j, lab in enumerate(e.labels) if lab != IGNORE), len(e.labels)) for e in batch) - 1
    n = 0
    while n < limit and all(len(e.input_ids) > n and e.input_ids[n] == first[n] for e in batch):
        n += 1
    return n


MIN_SHARED_PREFIX = 8


@dataclass
class _Packed:
    """A batch as one row: the shared prefix once, then each example's remaining tokens but
    its last (which predicts nothing). ``segment`` is -1 on the prefix, else the example."""

    ids: list[int]
    positions: list[int]
    segment: list[int]
    rows: list[int]
    targets: list[int]
    example: list[int]
    counts: list[int]
    tokens: int


def _pack(batch: Sequence[Example], shared: int) -> _Packed:
    packed = _Packed(list(batch[0].input_ids[:shared]), list(range(shared)), [-1] * shared, [], [], [], [], shared)
    for i, e in enumerate(batch):
        start, body = len(packed.ids), e.input_ids[shared:-1]
        packed.ids += body
        packed.positions += range(shared, shared + len(body))
        packed.segment += [i] * len(body)
        packed.tokens += len(e.input_ids) - shared
        n = 0
        for t, label in enumerate(e.labels[shared + 1:]):  # the label at t + 1 is predicted at t
            if label != IGNORE:
                packed.rows.append(start + t)
                packed.targets.append(label)
                n += 1
        packed.example += [i] * n
        packed.counts.append(n)
    return packed


def _packed_mask(packed: _Packed, implementation: str | None, device: str, window: int | None = None):
    """[1, 1, N, N] attention mask of a packed row: causal, and a token sees the shared prefix
    and its own example only, and within ``window`` positions of its own where the layer has a
    sliding window. Boolean (True: attend) for sdpa, additive for eager attention."""
    import torch

    seg = torch.tensor(packed.segment, device=device)
    row = torch.arange(len(packed.segment), device=device)
    allowed = (row[None, :] <= row[:, None]) & ((seg[None, :] == -1) | (seg[None, :] == seg[:, None]))
    if window is not None and window <= max(packed.positions):  # shorter than the row: it masks something
        pos = torch.tensor(packed.positions, device=device)  # as transformers and llama.cpp: keys < window back
        allowed &= pos[:, None] - pos[None, :] < window
    if _sdpa(implementation):
        return allowed[None, None]
    return torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, torch.finfo(torch.float32).min)[None, None]


def _attention_mask(packed: _Packed, config, implementation: str | None, device: str):
    """The packed row's mask for every layer: one mask, or one per kind of layer where the kinds
    attend differently (Gemma 2's sliding-window layers between full ones). A mask given to
    transformers is used as it is, so the window must be in it: without it, a sequence longer
    than the window trains a model llama.cpp does not run."""
    windows = {kind: getattr(config, "sliding_window", None) if kind == "sliding_attention" else None
               for kind in getattr(config, "layer_types", None) or ()}
    if len(set(windows.values())) > 1:
        return {kind: _packed_mask(packed, implementation, device, window) for kind, window in windows.items()}
    window = next(iter(windows.values())) if windows else getattr(config, "sliding_window", None)
    return _packed_mask(packed, implementation, device, window)


def _decoder(model):
    """The transformers causal LM under a peft wrapper (or ``model`` itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


SEGMENT_ATTENTION = "tunechat_segments"


@dataclass
class _Segments:
    """A packed row's examples gathered into a padded batch for attention alone: sdpa over the
    whole row with a mask computes every query against every key (on CPU, about seven times
    the scores a row of ten short examples needs). ``L`` is the longest example after the
    prefix; the last real query and key stand in for the padding."""

    prefix: int
    batch: int
    length: int
    queries: Any  # [batch * L] row position of each (example, offset)
    keys: Any  # [batch * (prefix + L)] the prefix, then the example's own tokens
    mask: Any  # [batch, 1, L, prefix + L] bool
    slots: Any  # [N - prefix] for each row position after the prefix, its (example, offset) slot


def _segments(segment: list[int], device: str) -> _Segments:
    import torch

    prefix = segment.count(-1)
    starts: dict[int, int] = {}
    lengths: dict[int, int] = {}
    for position, s in enumerate(segment[prefix:], prefix):
        starts.setdefault(s, position)
        lengths[s] = lengths.get(s, 0) + 1
    order = sorted(starts)
    width = max(lengths.values())
    queries, keys, slots = [], [], []
    for b, s in enumerate(order):
        own = [starts[s] + min(t, lengths[s] - 1) for t in range(width)]
        queries += own
        keys += list(range(prefix)) + own
        slots += range(b * width, b * width + lengths[s])
    t = torch.arange(width, device=device)[:, None]
    j = torch.arange(prefix + width, device=device)[None, :] - prefix
    last = torch.tensor([lengths[s] - 1 for s in order], device=device)[:, None, None]
    mask = (j < 0) | (j <= torch.minimum(t, last))  # a padded query repeats the last real one
    as_tensor = lambda values: torch.tensor(values, device=device)  # noqa: E731
    return _Segments(prefix, len(order), width, as_tensor(queries), as_tensor(keys), mask[:, None],
                     as_tensor(slots))


def _segment_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                       segments: _Segments | None = None, sliding_window: int | None = None, **kwargs):
    """Attention over a packed row (``query`` [1, heads, N, d]; ``key``, ``value`` [1, kv heads,
    N, d]) example by example, as one sdpa over the gathered batch; the prefix attends to itself.
    A layer with a ``sliding_window`` sees keys less than that many positions back. Without
    ``segments``, transformers' sdpa with the row's mask. Returns [1, N, heads, d]."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      sliding_window=sliding_window, **kwargs)
    heads, kv_heads, d = query.size(1), key.size(1), query.size(3)
    b, width, prefix = segments.batch, segments.length, segments.prefix
    dropout = dropout if module.training else 0.0
    mask, head_mask = segments.mask, None
    if sliding_window is not None and sliding_window < prefix + width:  # gathered: query t at prefix + t, key j at j
        t = torch.arange(width, device=query.device)[:, None]
        j = torch.arange(prefix + width, device=query.device)[None, :]
        mask = mask & (prefix + t - j < sliding_window)
        i = torch.arange(prefix, device=query.device)
        head_mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < sliding_window)

    def gather(x, index, length):  # a view, not x[0]: select's backward writes a zero tensor of x's size
        return x.squeeze(0).index_select(1, index).view(x.size(1), b, length, d).transpose(0, 1)

    out = F.scaled_dot_product_attention(
        gather(query, segments.queries, width), gather(key, segments.keys, prefix + width),
        gather(value, segments.keys, prefix + width), attn_mask=mask, dropout_p=dropout,
        scale=scaling, enable_gqa=heads != kv_heads)
    out = out.transpose(1, 2).reshape(b * width, heads, d).index_select(0, segments.slots)
    if prefix:
        head = F.scaled_dot_product_attention(query[:, :, :prefix], key[:, :, :prefix], value[:, :, :prefix],
                                              attn_mask=head_mask, dropout_p=dropout, is_causal=head_mask is None,
                                              scale=scaling, enable_gqa=heads != kv_heads)
        out = torch.cat([head.squeeze(0).transpose(0, 1), out])
    return out[None], None


@functools.cache
def _register_segment_attention() -> None:
    """``SEGMENT_ATTENTION`` among transformers' attention functions, with sdpa's masks: a call
    without ``segments`` (verify's logits, a no-grad check) runs plain sdpa."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SEGMENT_ATTENTION, _segment_attention)
    AttentionMaskInterface.register(SEGMENT_ATTENTION, sdpa_mask)


def _sdpa(implementation: str | None) -> bool:
    return implementation in ("sdpa", SEGMENT_ATTENTION)


ROW_LOGITS = "tunechat_row_logits"  # the causal LM's method for them once sharded (tunechat.personalize.sharded)


def _row_logits(model, inputs: dict, rows):
    """Logits at ``rows`` of the packed row only: the 49k-wide head is a large share of the
    compute, and only positions that predict an answer token need it. With ``segments`` among
    the inputs, attention runs example by example (``_segment_attention``) from then on: a
    layer recomputed in the backward pass (``recompute_layers``) must attend as it did."""
    causal_lm = _decoder(model)
    sharded = getattr(causal_lm, ROW_LOGITS, None)  # gathers the sharded embedding and head first
    return sharded(inputs, rows) if sharded is not None else row_logits_of(causal_lm, inputs, rows)


def row_logits_of(causal_lm, inputs: dict, rows):
    """``_row_logits`` of a transformers causal LM."""
    config = causal_lm.config
    if "segments" in inputs:
        _register_segment_attention()
        config._attn_implementation = SEGMENT_ATTENTION
    hidden = causal_lm.model(**inputs, use_cache=False).last_hidden_state
    logits = causal_lm.lm_head(hidden.view(-1, hidden.size(-1)).index_select(0, rows))
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2: the head's output is capped
    return (logits / cap).tanh() * cap if cap else logits


def _forward(model, batch: Sequence[Example], pad_id: int, device: str, autocast_dtype) -> _Pass:
    """Forward pass over ``batch`` packed into one row (no padding). The prefix every example
    shares (about half of each short example: template header and system prompt) is in the
    row once, and every example attends to it. ``pad_id`` is unused: nothing is padded.
    With sdpa on CPU, attention runs example by example (``_Segments``)."""
    import torch

    shared = shared_prefix_length(batch) if len(batch) > 1 else 0
    packed = _pack(batch, shared if shared >= MIN_SHARED_PREFIX else 0)
    implementation = getattr(_decoder(model).config, "_attn_implementation", None)
    inputs = {
        "input_ids": torch.tensor([packed.ids], device=device),
        "position_ids": torch.tensor([packed.positions], device=device),
        "attention_mask": _attention_mask(packed, _decoder(model).config, implementation, device),
    }
    if _by_segments(implementation, device):
        inputs["segments"] = _segments(packed.segment, device)
    rows = torch.tensor(packed.rows, device=device)
    targets = torch.tensor(packed.targets, device=device)
    with torch.autocast(device_type=device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = _row_logits(model, inputs, rows)
    logprobs = torch.log_softmax(logits.float(), -1)
    per_token = -logprobs.gather(-1, targets[:, None]).squeeze(-1)
    return _Pass(logits, logprobs, per_token, targets, torch.tensor(packed.example, device=device), packed.counts,
                 packed.tokens, inputs, rows, packed.segment.count(-1))


def _by_segments(implementation: str | None, device: str) -> bool:
    """Attention example by example where it pays: sdpa on CPU. On CUDA the masked sdpa over the
    row is one kernel a layer, and the step is bound by launching kernels, not by their work."""
    return _sdpa(implementation) and device == "cpu"


def _reproduced(run: _Pass):
    """Per example of a pass: is every answer token the argmax (greedy decoding would give
    exactly the answer, end-of-turn token included)?"""
    wrong = (run.logits.argmax(-1) != run.targets).float()
    return run.per_example(wrong) == 0


def reproduces_answers(model, examples: Sequence[Example], pad_id: int, device: str, chunk: int = 32,
                       ranks: Ranks = ALONE) -> list[bool]:
    """Per example of this rank's share (every example alone): does greedy decoding give
    exactly its answer? Teacher-forced, in batched no-grad passes of ``chunk`` examples."""
    import torch

    mine = ranks.share(examples)
    out: list[bool] = []
    with torch.no_grad():
        for i in range(ranks.passes(len(examples), chunk)):
            batch = mine[i * chunk:(i + 1) * chunk]
            if batch:
                out += _reproduced(_forward(model, batch, pad_id, device, None)).tolist()
            else:  # the other ranks' pass needs this one's share of the sharded weights
                _forward(model, examples[:1], pad_id, device, None)
    return out


def _kl_to_base(model, run: _Pass, batch: Sequence[Example], reference: ReferenceCache, first: int = 0,
                ranks: Ranks = ALONE):
    """KL(base || tuned) at every answer position of ``batch``, the examples of ``run`` from
    index ``first`` on ([n], example after example); the base side comes from ``reference``,
    filled by one adapter-off pass when an example is new to it (on any rank: every rank runs it)."""
    import torch

    offset = sum(run.counts[:first])
    if ranks.any(any(reference.get(e) is None for e in batch)):
        with torch.no_grad(), model.disable_adapter():
            base_logits = run.run_again(model)[offset:]
        for example, logits in zip(batch, base_logits.split(run.counts[first:])):
            if reference.get(example) is None:
                reference.put(example, logits)
    refs = [reference.get(example) for example in batch]
    idx = torch.cat([r[0] for r in refs]).to(run.logprobs.device)  # already there in train (ReferenceCache.to)
    lp = torch.cat([r[1] for r in refs]).to(run.logprobs.device)
    return topk_kl_of_logprobs(run.logprobs[offset:], idx, lp)


def _replay_loss(model, run: _Pass, first: int, batch: Sequence[Example], recipe: Recipe, reference: ReferenceCache,
                 share: _Share | None = None, ranks: Ranks = ALONE):
    """The replay term over the examples of ``run`` from index ``first`` on (``batch``): per
    answer token, cross entropy plus ``recipe.kl_weight`` times KL(base || tuned), over the
    answer tokens of the whole replay batch (``share``: this rank's part of it)."""
    offset = sum(run.counts[:first])
    loss = recipe.replay_weight * run.per_token[offset:].sum()
    if recipe.kl_weight > 0:
        loss = loss + recipe.kl_weight * _kl_to_base(model, run, batch, reference, first, ranks).sum()
    if share is None:
        return loss / max(1, sum(run.counts[first:]))
    return loss * (share.weight / max(1, share.answer_tokens))


def add_lora(model, recipe: Recipe):
    """``model`` with LoRA adapters (rank and alpha of ``recipe``) on every linear projection of
    every layer, named as its architecture names them (tunechat.personalize.targets). The
    adapters start from ``recipe.seed`` (peft draws A at random, B at zero): one job, one model."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(recipe.seed)

    config = LoraConfig(
        r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=0.0,
        target_modules=target_modules(model), task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    fuse_lora_products(model)
    return model


def recompute_layers(model) -> None:
    """Keep only each decoder layer's input for the backward pass and compute the rest again
    there, one layer at a time (transformers' activation checkpointing, non-reentrant). A third
    more arithmetic for a fraction of the activations: the float16 form's share of a base too
    large for this machine (tunechat.core.memory). transformers also makes the embedding's
    output require a gradient (for reentrant checkpointing); that is undone: the frozen first
    products need no input gradient."""
    decoder = _decoder(model)
    kwargs = {"use_reentrant": False}
    if hasattr(decoder, "activation_checkpointing_enable"):  # transformers 5
        decoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    decoder.disable_input_require_grads()


@dataclass
class StepResult:
    fact_losses: list[float]  # per drawn fact (negatives left out): its mean token loss, before the update
    reproduced: bool  # every drawn fact's answer was the argmax at every token, before the update
    tokens: int


def optimizer_for(params: list, recipe: Recipe, device: Device):
    """AdamW over ``params``, fused where torch has the kernel (CUDA, and CPU since 2.4): one
    kernel for every tensor instead of a dozen small ops per tensor."""
    import torch

    try:
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0, foreach=True)


@dataclass
class _Backward:
    """What one step's backward passes leave besides the gradients (tensors, not yet read)."""

    fact_losses: Any  # [facts] each drawn fact's mean token loss
    reproduced: Any  # () every drawn fact's answer is the argmax at every answer token
    loss: Any  # () the step's loss: the facts' term plus the replay's
    tokens: int


@dataclass
class _Share:
    """A rank's share of one of the step's batches (the whole batch alone): its examples, their
    indices in the batch, and the batch's size in examples and answer tokens. A rank left
    without examples still runs the pass, on one it weighs at 0: the other ranks' pass needs
    its share of the sharded weights."""

    examples: list[Example]
    indices: list[int]
    weight: float
    size: int
    answer_tokens: int


def _share(batch: Sequence[Example], ranks: Ranks) -> _Share:
    indices = ranks.mine(len(batch))
    examples, weight = [batch[i] for i in indices], 1.0
    if not examples and batch:
        examples, weight = [batch[0]], 0.0
    return _Share(examples, indices, weight, len(batch), sum(answer_tokens(e) for e in batch))


def answer_tokens(example: Example) -> int:
    """The tokens of ``example`` a pass predicts (labelled ones; the first predicts nothing)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE)


def _backward(loss, ranks: Ranks) -> None:
    """Backpropagate ``loss``, this rank's share of the step's: FSDP averages the ranks'
    gradients, so each counts ``world`` times to sum them."""
    (loss if ranks.alone else loss * ranks.world).backward()


def backward_step(model, fact_batch: Sequence[Example], negative_batch: Sequence[Example],
                  replay_batch: Sequence[Example], recipe: Recipe, reference: ReferenceCache, pad_id: int,
                  device: Device, autocast_dtype=None, one_pass: bool | None = None,
                  ranks: Ranks = ALONE) -> _Backward:
    """The step's gradients, accumulated into ``.grad``. Facts and negatives weigh one per
    example; replay one per answer token (``_replay_loss``). On CPU the facts (with negatives)
    and the replay are two passes, each backpropagated at once: the same summed loss as one
    batch with half the activations alive at a time (peak memory). With ``one_pass`` (the
    default on CUDA, where launching kernels bounds the step) every example is in one packed
    pass and one backward: half the kernels. With several ``ranks``, this rank's share of each
    batch (tunechat.personalize.ranks); the fact losses come back in place, zero elsewhere."""
    import torch

    one_pass = device == "cuda" if one_pass is None else one_pass
    taught = _share([*fact_batch, *negative_batch], ranks)
    replay = _share(replay_batch, ranks)
    replay_share = None if ranks.alone else replay
    together = one_pass and bool(replay_batch)
    run = _forward(model, [*taught.examples, *replay.examples] if together else taught.examples, pad_id, device,
                   autocast_dtype)
    tokens = run.tokens if taught.weight or together else 0  # a pass weighing 0 trains on nothing
    example_tok = run.per_example_mean()[:len(taught.examples)]
    fact_loss = example_tok.mean() if ranks.alone else example_tok.sum() * (taught.weight / taught.size)
    facts_here = [k for k, i in enumerate(taught.indices) if i < len(fact_batch)]
    reproduced = _reproduced(run)[facts_here].all()
    fact_tok = example_tok[:len(fact_batch)].detach() if ranks.alone else example_tok.new_zeros(
        len(fact_batch)).index_copy_(0, torch.tensor([taught.indices[k] for k in facts_here], dtype=torch.long,
                                                     device=example_tok.device), example_tok[facts_here].detach())
    if together:
        loss = fact_loss + _replay_loss(model, run, len(taught.examples), replay.examples, recipe, reference,
                                        replay_share, ranks)
        _backward(loss, ranks)
        return _Backward(fact_tok, reproduced, loss.detach(), tokens)
    _backward(fact_loss, ranks)
    loss = fact_loss.detach()
    del run
    if replay_batch:
        replay_pass = _forward(model, replay.examples, pad_id, device, autocast_dtype)
        tokens += replay_pass.tokens if replay.weight else 0
        replay_loss = _replay_loss(model, replay_pass, 0, replay.examples, recipe, reference, replay_share, ranks)
        _backward(replay_loss, ranks)
        loss = loss + replay_loss.detach()
    return _Backward(fact_tok, reproduced, loss, tokens)


def train_step(model, optimizer, params: list, fact_batch: Sequence[Example], negative_batch: Sequence[Example],
               replay_batch: Sequence[Example], recipe: Recipe, reference: ReferenceCache, pad_id: int,
               device: Device, autocast_dtype=None, ranks: Ranks = ALONE) -> StepResult:
    """One optimizer step (``backward_step``, gradients clipped to norm 1, ``optimizer``). The
    host reads the device once, at the end (a read waits for the device to finish); with
    several ranks, what they report is summed in one collective first."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    done = backward_step(model, fact_batch, negative_batch, replay_batch, recipe, reference, pad_id, device,
                         autocast_dtype, ranks=ranks)
    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    optimizer.step()
    told = torch.cat([done.fact_losses, (~done.reproduced).float()[None], done.fact_losses.new_tensor([done.tokens])])
    *fact_losses, wrong, tokens = ranks.total(told).tolist()
    return StepResult(fact_losses, wrong == 0.0, int(tokens))


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
    ranks: Ranks = ALONE,
) -> TrainResult:
    """Train the LoRA adapters of ``model`` (a peft model) in place.

    ``facts`` holds, per taught pair, its examples in one or more surface forms; each step
    uses one form of each fact in the batch: the original form at step 1, then one at random.
    ``reference`` keeps the base model's distributions on replay answers (for the KL term)
    between steps and runs; the caller saves it. ``negatives`` (personal questions never
    taught, answered that they were not: tunechat.personalize.negatives) join the facts' pass,
    ``recipe.negatives`` a step, drawn from their own random stream; they weigh as much as a
    fact each and never decide the stop. With several ``ranks`` (sharded by FSDP), each computes
    its share of every step and they decide the stop together: the same training, in float
    tolerance, as one process's."""
    import torch

    rng = random.Random(recipe.seed)
    negative_rng = random.Random(f"negatives-{recipe.seed}")
    torch.manual_seed(recipe.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_for(params, recipe, device)
    reference = (reference if reference is not None else ReferenceCache()).to(device)
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
        done = train_step(model, optimizer, params, fact_batch, negative_batch, replay_batch, recipe, reference,
                          pad_id, device, autocast_dtype, ranks)
        tokens += done.tokens
        drawn_reproduced = done.reproduced
        recent_worst = (recent_worst + [max(done.fact_losses)])[-rounds:]
        losses.append(sum(done.fact_losses) / len(done.fact_losses))
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
                confirmed = ranks.all(all(reproduces_answers(model, every_form, pad_id, device, ranks=ranks)))
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
