"""The frozen base in half the memory: its matrices held in float16, computed with in float32.

A base whose float32 copy does not fit this machine (tunechat.core.memory picks the form)
trains this way: every linear layer's and embedding's weight is kept in float16 and widened
to float32 only for the product that needs it, one matrix at a time, forward and backward;
norms, biases and the LoRA factors stay float32, and so does every activation. float16 rather
than bfloat16: it is exact for an f16 GGUF and ~8x finer than bfloat16 for a quantized one
(the merge reads the exact weights from the folder anyway: ``merge.merged_weights``), and the
arithmetic stays float32, which CPUs without AVX-512 run fastest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HELD_DTYPE = torch.float16


# Rows of a weight widened at a time: 64 MiB of float32, so an output head of 151936 x 2048
# never exists in float32 whole (1.2 GiB).
WIDENED_ELEMENTS = 2**24


_scratch: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _widened(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` in ``dtype``, written into one buffer kept for the purpose: a fresh 50 MB
    tensor costs its page faults every time (5x the copy itself on this CPU), and no two
    widened weights are ever in use at once (one product at a time, on one thread)."""
    if weight.dtype == dtype:
        return weight
    key = (dtype, weight.device)
    buffer = _scratch.get(key)
    if buffer is None or buffer.numel() < weight.numel():
        buffer = _scratch[key] = torch.empty(weight.numel(), dtype=dtype, device=weight.device)
    return buffer[:weight.numel()].view(weight.shape).copy_(weight)


def _row_chunks(weight: torch.Tensor) -> list[slice]:
    rows = max(1, WIDENED_ELEMENTS // max(1, weight.size(1)))
    return [slice(i, i + rows) for i in range(0, weight.size(0), rows)]


class _WidenedLinear(torch.autograd.Function):
    """``x Wᵀ + b`` with W widened to float32 for the product, a block of rows at a time. The
    backward keeps the float16 W, not a widened copy: autograd would otherwise hold a float32
    copy of every weight until the backward pass, the very memory this form saves. W and b are
    frozen: no gradient for them."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        chunks = _row_chunks(weight)
        if len(chunks) == 1:
            return F.linear(x, _widened(weight, x.dtype), None if bias is None else bias.to(x.dtype))
        out = x.new_empty((*x.shape[:-1], weight.size(0)))
        for rows in chunks:
            part = None if bias is None else bias[rows].to(x.dtype)
            out[..., rows] = F.linear(x, _widened(weight[rows], x.dtype), part)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (weight,) = ctx.saved_tensors
        chunks = _row_chunks(weight)
        grad_x = grad[..., chunks[0]] @ _widened(weight[chunks[0]], grad.dtype)
        for rows in chunks[1:]:
            grad_x += grad[..., rows] @ _widened(weight[rows], grad.dtype)
        return grad_x, None, None


class HalfLinear(nn.Linear):
    """A frozen linear layer whose weight is held in float16 and used in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _WidenedLinear.apply(x, self.weight, self.bias)


def _float32_output(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def hold_in_half(model: nn.Module, exact: Callable[[str], torch.Tensor | None]) -> None:
    """Make ``model`` (loaded in float16) compute in float32: its linear layers become
    ``HalfLinear``, its embeddings (Gemma's scaled one too) give float32 rows, and every other
    parameter (norms, biases) is float32 again, its exact value read back by ``exact(name)``
    where the files hold it (a folder of safetensors files; without one, widened from float16)."""
    held: set[int] = set()
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = HalfLinear
            held.add(id(module.weight))
        elif isinstance(module, nn.Embedding):
            module.register_forward_hook(_float32_output)
            held.add(id(module.weight))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if id(param) in held or not param.is_floating_point():
                continue
            value = exact(name)
            param.data = value.to(torch.float32) if value is not None else param.data.float()
    for module in model.modules():
        for key, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.dtype == HELD_DTYPE:
                module._buffers[key] = buffer.float()
