"""The "torch" backend: masked Linear / Conv2d as custom autograd Functions.

Autograd through `F.linear(x, W * m)` saves the materialised product W⊙m (one extra weight-sized tensor
per layer, per forward). These Functions save (x, W, m) instead and recompute W⊙m in backward, which
costs one elementwise multiply and saves the copy. The weight itself never receives a gradient: AWM
freezes θ and trains only the mask, so

    grad_x = grad_y · (W⊙m)            grad_m = (grad_yᵀ · x) ⊙ W            grad_b = Σ grad_y

Masks are fp32 while activations and weights may be bf16/fp16: the effective weight is formed in the
weight's dtype (as autocast would), and grad_m is returned in the mask's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _effective_weight(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """W⊙m in `dtype` (the compute dtype of the matmul)."""
    return weight.to(dtype) * mask.to(dtype)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul/conv in for input `x`, else x's own dtype.

    The Functions below switch autocast off inside and cast once themselves, so the forward and the
    recomputation in backward agree whatever autocast state backward runs under.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.is_floating_point():
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _accumulate_dtype(x: torch.Tensor, mask: torch.Tensor) -> torch.dtype:
    """fp32, or fp64 when the inputs are fp64: never below the mask's own precision."""
    return torch.promote_types(torch.float32, torch.promote_types(x.dtype, mask.dtype))


def _cast(bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if bias is None else bias.to(dtype)


class MaskedLinearTorchFunction(torch.autograd.Function):
    """y = x · (W⊙m)ᵀ + b for x [..., in_features], W and m [out_features, in_features], b [out_features]."""

    @staticmethod
    def forward(ctx, x, weight, mask, bias):
        compute_dtype = _compute_dtype(x)
        x_c = x.to(compute_dtype)
        with torch.autocast(x.device.type, enabled=False):
            y = F.linear(x_c, _effective_weight(weight, mask, compute_dtype), _cast(bias, compute_dtype))
        ctx.save_for_backward(x_c, weight, mask)
        ctx.x_dtype = x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mask = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            return MaskedLinearTorchFunction._backward(ctx, grad_y, x, weight, mask)

    @staticmethod
    def _backward(ctx, grad_y, x, weight, mask):
        grad_x = grad_mask = grad_bias = None
        grad_y = grad_y.to(x.dtype)
        if ctx.needs_input_grad[0]:
            grad_x = (grad_y @ _effective_weight(weight, mask, x.dtype)).to(ctx.x_dtype)
        if ctx.needs_input_grad[2]:
            # grad_yᵀ·x summed over every leading dim. fp32 operands: the reduction runs over all tokens,
            # and the result feeds an fp32 mask, so low-precision accumulation would be the wrong trade.
            acc = _accumulate_dtype(x, mask)
            grad_y_2d = grad_y.reshape(-1, grad_y.shape[-1]).to(acc)
            x_2d = x.reshape(-1, x.shape[-1]).to(acc)
            grad_mask = (grad_y_2d.t() @ x_2d).mul_(weight.to(acc)).to(mask.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[3]:
            grad_bias = grad_y.reshape(-1, grad_y.shape[-1]).to(_accumulate_dtype(x, mask)).sum(0).to(ctx.bias_dtype)
        return grad_x, None, grad_mask, grad_bias


class MaskedConv2dTorchFunction(torch.autograd.Function):
    """y = conv2d(x, W⊙m, b) for x [N, C, H, W], W and m [OC, C/groups, KH, KW], b [OC].

    `stride`, `padding`, `dilation` are pairs of ints (string paddings are resolved by the caller).
    """

    @staticmethod
    def forward(ctx, x, weight, mask, bias, stride, padding, dilation, groups):
        compute_dtype = _compute_dtype(x)
        x_c = x.to(compute_dtype)
        w_eff = _effective_weight(weight, mask, compute_dtype)
        with torch.autocast(x.device.type, enabled=False):
            y = F.conv2d(x_c, w_eff, _cast(bias, compute_dtype), stride, padding, dilation, groups)
        ctx.save_for_backward(x_c, weight, mask)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.x_dtype = x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mask = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            return MaskedConv2dTorchFunction._backward(ctx, grad_y, x, weight, mask)

    @staticmethod
    def _backward(ctx, grad_y, x, weight, mask):
        stride, padding, dilation, groups = ctx.conv_args
        grad_x = grad_mask = grad_bias = None
        grad_y = grad_y.to(x.dtype)
        if ctx.needs_input_grad[0]:
            w_eff = _effective_weight(weight, mask, x.dtype)
            grad_x = torch.nn.grad.conv2d_input(x.shape, w_eff, grad_y, stride, padding, dilation, groups)
            grad_x = grad_x.to(ctx.x_dtype)
        if ctx.needs_input_grad[2]:
            # fp32 operands, as for Linear: the reduction runs over every image and pixel and feeds an fp32 mask.
            # Reduced in fp16 it missed an fp64 reduction of the same rounded operands by up to 0.026 (bf16: 0.15),
            # and the test CNN's fp16 first-layer masks ended 2.2% of their travel from fp32's instead of 1.0%
            # (round 25).
            acc = _accumulate_dtype(x, mask)
            grad_w_eff = torch.nn.grad.conv2d_weight(x.to(acc), weight.shape, grad_y.to(acc), stride, padding,
                                                     dilation, groups)
            grad_mask = grad_w_eff.mul_(weight.to(acc)).to(mask.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[3]:
            grad_bias = grad_y.to(_accumulate_dtype(x, mask)).sum((0, 2, 3)).to(ctx.bias_dtype)
        return grad_x, None, grad_mask, grad_bias, None, None, None, None
