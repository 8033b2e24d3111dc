"""Masked Linear / Conv2d forward + backward on CPU: backend "torch" vs "reference", same run.

Both compute grad wrt x and the mask; the reference materialises W⊙m and lets autograd keep it.
"""

from __future__ import annotations

import pytest
import torch

from awm_fast.ops import masked_conv2d, masked_linear

from conftest import QUICK, rounds

LINEAR_SHAPES = [(64, 256, 256)] if QUICK else [(128, 1024, 1024), (1024, 1024, 1024)]  # (tokens, in, out)
# (N, C, H, W, OC): ResNet-18 stage-1 and stage-3 3x3 convolutions on CIFAR-sized maps.
CONV_SHAPES = [(2, 16, 16, 16, 16)] if QUICK else [(32, 64, 32, 32, 64), (32, 256, 8, 8, 256)]


def _step(op, x, mask):
    x.grad, mask.grad = None, None
    op(x, mask).sum().backward()


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_masked_linear_fwd_bwd(benchmark, backend, shape):
    tokens, k, n = shape
    x = torch.randn(tokens, k, requires_grad=True)
    weight, mask = torch.randn(n, k), torch.rand(n, k, requires_grad=True)
    benchmark.group = f"masked_linear {tokens}x{k}x{n}"
    benchmark.pedantic(_step, args=(lambda x, m: masked_linear(x, weight, m, backend=backend), x, mask),
                       rounds=rounds(10), warmup_rounds=0 if QUICK else 1)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_masked_conv2d_fwd_bwd(benchmark, backend, shape):
    n, c, h, w, oc = shape
    x = torch.randn(n, c, h, w, requires_grad=True)
    weight, mask = torch.randn(oc, c, 3, 3), torch.rand(oc, c, 3, 3, requires_grad=True)
    benchmark.group = f"masked_conv2d {'x'.join(map(str, shape))}"
    benchmark.pedantic(_step, args=(lambda x, m: masked_conv2d(x, weight, m, None, 1, 1, backend=backend), x, mask),
                       rounds=rounds(5), warmup_rounds=0 if QUICK else 1)
