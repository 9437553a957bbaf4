"""Training-time forwards that compute what transformers' and peft's modules compute, in fewer
passes over the activations and with fewer of them kept for the backward pass.

On CPU a step's matrix products run near the machine's rate; the rest of a step is element-wise
work over [tokens, width] tensors, and its memory is what autograd keeps of them. Three layers
of every block do more of that than the sum needs:

- a LoRA linear layer (peft): ``base(x) + B(A(x)) * scaling``, a product, a scaling and a sum,
  each a pass over the layer's output, forward and backward; one ``addmm`` does all three;
- RMSNorm (llama, mistral, qwen2/3, phi3; gemma2's ``1 + weight`` too): autograd keeps the
  input, the normalized input and the scale, and backpropagates through six small ops; one
  function keeps the input and the per-token scale and writes the gradient in four passes;
- the SiLU-gated MLP: autograd keeps the gate, its SiLU and the up projection; one function
  keeps the gate and the up projection and recomputes the SiLU in the backward pass.

Each is the same sum as the module's own forward (``tests/test_train.py`` holds outputs and
gradients to theirs) and steps aside to the module's forward whenever its assumptions do not
hold (a trainable norm weight, another dtype, peft's adapter disabled or merged).
"""

from __future__ import annotations

import functools
from typing import Any


def fuse_for_training(model) -> None:
    """Give ``model``'s LoRA layers, RMSNorms and SiLU MLPs the forwards of this module."""
    fuse_lora_products(model)
    fuse_norms(model)
    fuse_mlps(model)


def fuse_lora_products(model) -> None:
    """Every LoRA linear layer of ``model`` computes ``base(x) + scaling * A(x) Bᵀ`` in one
    ``addmm``: the sum in the matrix product's own accumulation (bitwise the same training on
    this CPU as peft's three passes)."""
    from peft.tuners.lora import Linear as LoraLinear

    for module in model.modules():
        if isinstance(module, LoraLinear):
            module.forward = functools.partial(_fused_lora_forward, module, module.forward)


def _fused_lora_forward(module, peft_forward, x, *args, **kwargs):
    """The forward of one LoRA linear layer with a single plain adapter (no dropout, no
    variant); anything else (the adapter disabled or merged, several adapters, extra
    arguments) goes to peft's own forward."""
    import torch
    import torch.nn.functional as F

    active = module.active_adapters
    if (args or kwargs or module.disable_adapters or module.merged or len(active) != 1
            or active[0] not in module.lora_A or active[0] in module.lora_variant
            or not isinstance(module.lora_dropout[active[0]], torch.nn.Identity)):
        return peft_forward(x, *args, **kwargs)
    name = active[0]
    base = module.base_layer
    out = F.linear(x, base.weight, base.bias)
    down = F.linear(x, module.lora_A[name].weight)
    fused = torch.addmm(out.reshape(-1, out.size(-1)), down.reshape(-1, down.size(-1)), module.lora_B[name].weight.t(),
                        alpha=module.scaling[name])
    return fused.view(out.shape)


# RMSNorm classes and the offset their weight is used with: llama's ``weight * x̂``, gemma2's
# ``(1 + weight) * x̂``.
_NORMS = {"LlamaRMSNorm": 0.0, "MistralRMSNorm": 0.0, "Qwen2RMSNorm": 0.0, "Qwen3RMSNorm": 0.0,
          "Phi3RMSNorm": 0.0, "Gemma2RMSNorm": 1.0}


def fuse_norms(model) -> None:
    """Every RMSNorm of a known class in ``model`` runs ``_RMSNorm``."""
    for module in model.modules():
        offset = _NORMS.get(type(module).__name__)
        if offset is not None:
            module.forward = functools.partial(_fused_norm_forward, module, module.forward, offset)


def _fused_norm_forward(module, own_forward, offset: float, x):
    """float32 in and a frozen float32 weight (every norm while LoRA trains on CPU, and the
    residual stream under CUDA autocast); anything else runs the module's own forward."""
    import torch

    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    weight = module.weight
    if eps is None or weight.requires_grad or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return own_forward(x)
    return _rms_norm().apply(x, weight, eps, offset)


@functools.cache
def _rms_norm() -> Any:
    import torch

    class RMSNorm(torch.autograd.Function):
        """``scale * x * r`` with ``r = (mean(x²) + eps)^-½`` per token and ``scale`` the frozen
        weight (plus its offset). Keeps ``x`` and ``r``; the input's gradient is
        ``r (g' - x̂ mean(g' x̂))`` with ``g' = g scale`` and ``x̂ = x r``."""

        @staticmethod
        def forward(ctx, x, weight, eps: float, offset: float):
            r = x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
            scale = weight + offset if offset else weight
            ctx.save_for_backward(x, r, scale)
            return x * r * scale

        @staticmethod
        def backward(ctx, grad):
            x, r, scale = ctx.saved_tensors
            normed = x * r
            g = grad * scale
            dot = (g * normed).mean(-1, keepdim=True)
            return torch.addcmul(g, normed, dot, value=-1).mul_(r), None, None, None

    return RMSNorm


def fuse_mlps(model) -> None:
    """Every llama-shaped MLP (gate, up and down projections, SiLU) runs ``_SiluMul`` between
    its projections."""
    import torch
    from transformers.activations import SiLUActivation

    for module in model.modules():
        if (all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj"))
                and isinstance(getattr(module, "act_fn", None), (torch.nn.SiLU, SiLUActivation))):
            module.forward = functools.partial(_fused_mlp_forward, module)


def _fused_mlp_forward(module, x):
    return module.down_proj(_silu_mul().apply(module.gate_proj(x), module.up_proj(x)))


@functools.cache
def _silu_mul() -> Any:
    import torch
    import torch.nn.functional as F

    class SiluMul(torch.autograd.Function):
        """``silu(gate) * up``, keeping ``gate`` and ``up`` only."""

        @staticmethod
        def forward(ctx, gate, up):
            ctx.save_for_backward(gate, up)
            return F.silu(gate) * up

        @staticmethod
        def backward(ctx, grad):
            gate, up = ctx.saved_tensors
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
            grad_up = grad * F.silu(gate) if ctx.needs_input_grad[1] else None
            return grad_gate, grad_up

    return SiluMul
