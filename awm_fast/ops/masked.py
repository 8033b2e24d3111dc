"""Masked Linear / Conv2d ops with backend dispatch.

Backends (the algorithm never names one; modules and these functions pick):
- "reference": eager PyTorch on the materialised product W⊙m, exactly what the authors' code does.
- "torch":     custom autograd Functions that save (x, W, m) and recompute W⊙m in backward.
- "triton":    fused Triton kernels (awm_fast.kernels), W⊙m formed on the tile, never in global memory.
- "auto":      "triton" for CUDA tensors when Triton and its kernels import, else "torch".
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.nn.functional as F

from awm_fast.ops.torch_autograd import MaskedConv2dTorchFunction, MaskedLinearTorchFunction

BACKENDS = ("auto", "reference", "torch", "triton")


@functools.cache
def triton_kernels_available() -> bool:
    """True when Triton and awm_fast's kernels import (they run on CUDA, or on CPU under TRITON_INTERPRET=1)."""
    try:
        import awm_fast.kernels.masked_conv2d  # noqa: F401
        import awm_fast.kernels.masked_linear  # noqa: F401
    except ImportError as exc:
        warnings.warn(f"awm_fast: Triton kernels unavailable ({exc}); falling back to the torch backend.", stacklevel=2)
        return False
    return True


def _triton_runs_on(device: torch.device) -> bool:
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ("reference" | "torch" | "triton") that `backend` means for tensors on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_kernels_available() else "torch"
    if backend == "triton":
        if not triton_kernels_available():
            raise RuntimeError("backend='triton' requested but Triton or awm_fast.kernels failed to import")
        if not _triton_runs_on(device):
            raise RuntimeError(
                f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); got device {device}"
            )
    return backend


def masked_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """y = x · (W⊙m)ᵀ + b.

    x [..., in_features] (fp32/bf16/fp16); weight [out_features, in_features]; mask like weight (fp32);
    bias [out_features] or None. Returns [..., out_features] in x's dtype (or the autocast dtype).
    Gradients flow to x, mask and bias, never to weight (AWM keeps θ frozen).
    """
    _check_mask(weight, mask)
    backend = resolve_backend(backend, x.device)
    if backend == "reference":
        return F.linear(x, weight * mask, bias)
    if backend == "triton":
        from awm_fast.kernels.masked_linear import MaskedLinearFunction

        return MaskedLinearFunction.apply(x, weight, mask, bias)
    return MaskedLinearTorchFunction.apply(x, weight, mask, bias)


def masked_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """y = conv2d(x, W⊙m, b) with zero padding.

    x [N, C, H, W] (any memory format; fp32/bf16/fp16); weight [OC, C/groups, KH, KW]; mask like weight
    (fp32); bias [OC] or None. Returns [N, OC, OH, OW]. Gradients to x, mask and bias, never to weight.
    """
    _check_mask(weight, mask)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    backend = resolve_backend(backend, x.device)
    if backend == "reference":
        return F.conv2d(x, weight * mask, bias, stride, padding, dilation, groups)
    if backend == "triton":
        from awm_fast.kernels.masked_conv2d import MaskedConv2dFunction

        return MaskedConv2dFunction.apply(x, weight, mask, bias, stride, padding, dilation, groups)
    return MaskedConv2dTorchFunction.apply(x, weight, mask, bias, stride, padding, dilation, groups)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    return (int(value[0]), int(value[1]))


def _check_mask(weight: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal weight shape {tuple(weight.shape)}")
    if mask.device != weight.device:
        raise ValueError(f"mask is on {mask.device} but weight is on {weight.device}")
