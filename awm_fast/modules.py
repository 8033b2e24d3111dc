"""MaskedLinear and MaskedConv2d: layers whose weight W is used as W⊙m, with a trainable soft mask m.

The weight and bias are the wrapped layer's own Parameters (shared, not copied), frozen by the
caller; only `mask` (fp32, same shape as the weight, initialised to ones) is meant to train. Which
kernel runs is the `backend` attribute's business (see awm_fast.ops); the modules only forward to it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast.ops.masked import masked_conv2d, masked_linear


def _ones_mask(weight: torch.Tensor) -> nn.Parameter:
    # Masks stay fp32 whatever the weight dtype: Adam's updates of lr 1e-2 on values near 1 would be
    # lost to bf16 rounding (its ulp at 1.0 is 2^-7 ≈ 0.0078).
    return nn.Parameter(torch.ones(weight.shape, dtype=torch.float32, device=weight.device))


class MaskedLinear(nn.Module):
    """y = x · (W⊙m)ᵀ + b.  x [..., in_features] -> [..., out_features]; W, m [out, in]; m fp32."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, backend: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__()
        self._adopt(nn.Linear(in_features, out_features, bias, device=device, dtype=dtype), backend)

    @classmethod
    def from_linear(cls, linear: nn.Linear, backend: str = "auto") -> MaskedLinear:
        """A MaskedLinear sharing `linear`'s weight and bias Parameters (no copy), mask = 1."""
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module._adopt(linear, backend)
        return module

    def _adopt(self, linear: nn.Linear, backend: str) -> None:
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.mask = _ones_mask(linear.weight)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_linear(x, self.weight, self.mask, self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, backend={self.backend!r}"


class MaskedConv2d(nn.Module):
    """y = conv2d(x, W⊙m, b).  x [N, C, H, W] -> [N, OC, OH, OW]; W, m [OC, C/groups, KH, KW]; m fp32.

    Constructed like nn.Conv2d, or around an existing layer with `from_conv2d`. String paddings ("same")
    and non-zero padding modes are applied as an explicit F.pad exactly as nn.Conv2d does, so outputs
    match the wrapped layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", backend: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._adopt(conv, backend)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, backend: str = "auto") -> MaskedConv2d:
        """A MaskedConv2d sharing `conv`'s weight and bias Parameters (no copy), mask = 1."""
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module._adopt(conv, backend)
        return module

    def _adopt(self, conv: nn.Conv2d, backend: str) -> None:
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = (
            conv.kernel_size, conv.stride, conv.dilation, conv.groups)
        self.weight, self.bias = conv.weight, conv.bias
        self.mask = _ones_mask(conv.weight)
        self.backend = backend
        # nn.Conv2d pads explicitly for padding modes other than zeros, and "same" may be asymmetric.
        explicit = conv.padding_mode != "zeros" or isinstance(conv.padding, str)
        self._pre_pad = tuple(conv._reversed_padding_repeated_twice) if explicit else None
        self._pad_mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        self.padding = (0, 0) if explicit else tuple(conv.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pre_pad is not None and any(self._pre_pad):
            x = F.pad(x, self._pre_pad, mode=self._pad_mode)
        return masked_conv2d(x, self.weight, self.mask, self.bias, self.stride, self.padding, self.dilation,
                             self.groups, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, " \
               f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, backend={self.backend!r}"
