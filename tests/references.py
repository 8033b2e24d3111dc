"""Pure-PyTorch references, written independently of awm_fast; reused by benchmarks/.

Every function here computes in float64 by default so the fast paths can be checked against a
reference whose own rounding error is negligible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_linear_ref(x, weight, mask, bias=None, dtype=torch.float64):
    """y = x (W⊙m)ᵀ + b in `dtype`; x [..., K], W and m [N, K], b [N]."""
    w_eff = weight.to(dtype) * mask.to(dtype)
    return F.linear(x.to(dtype), w_eff, None if bias is None else bias.to(dtype))


def masked_conv2d_ref(x, weight, mask, bias=None, stride=1, padding=0, dilation=1, groups=1, dtype=torch.float64):
    """y = conv2d(x, W⊙m, b) in `dtype`; x [N, C, H, W], W and m [OC, C/groups, KH, KW]."""
    w_eff = weight.to(dtype) * mask.to(dtype)
    return F.conv2d(x.to(dtype), w_eff, None if bias is None else bias.to(dtype), stride, padding, dilation, groups)


def grads_through(fn, inputs: dict[str, torch.Tensor], grad_out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run fn(**inputs) and backpropagate grad_out; returns {name: grad} for inputs that require grad."""
    out = fn(**inputs)
    out.backward(grad_out.to(out.dtype))
    return {name: t.grad for name, t in inputs.items() if isinstance(t, torch.Tensor) and t.requires_grad}
