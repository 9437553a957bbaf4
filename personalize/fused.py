"""The LoRA linear layer's training forward: peft's sum in one matrix product.

peft computes ``base(x) + B(A(x)) * scaling``: a product, a scaling and a sum, each a pass
over the layer's whole output, forward and backward. One ``addmm`` computes ``base(x) +
scaling * A(x) Bᵀ`` in the matrix product's own accumulation instead: the same sum (bitwise the
same training on this CPU; ``tests/test_train.py`` holds outputs and gradients to peft's), about
3 % of a CPU step. The same treatment of RMSNorm and the SiLU MLP (functions keeping fewer
tensors for the backward pass) was measured and lost: docs/experiments.md.
"""

from __future__ import annotations

import functools


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
    out = base(x)  # F.linear, or a float16-held weight widened (tunechat.personalize.half)
    down = F.linear(x, module.lora_A[name].weight)
    fused = torch.addmm(out.reshape(-1, out.size(-1)), down.reshape(-1, down.size(-1)), module.lora_B[name].weight.t(),
                        alpha=module.scaling[name])
    return fused.view(out.shape)
