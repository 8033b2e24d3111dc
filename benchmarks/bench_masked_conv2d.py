"""pytest-benchmark: masked Conv2d, fused Triton implicit-GEMM kernels vs the eager reference (W⊙m
materialised, cuDNN) and the torch backend, forward and forward + backward, NCHW and channels_last, with peak
memory. CUDA only.

    python -m pytest benchmarks/bench_masked_conv2d.py --benchmark-group-by=param:shape,param:pass_name

Without a GPU every benchmark skips with "no GPU: timings reported only when measured on a GPU"; the static
build report (benchmarks/triton_build_report.py) stands in until then.
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import QUICK, benchmark_cuda_step

NO_GPU_REASON = "no GPU: timings reported only when measured on a GPU"

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason=NO_GPU_REASON)

# (N, C, H, W, OC, kernel, stride, padding, groups): ResNet-18/50 and MobileNet-style layers at batch 64.
SHAPES = {
    "r18_3x3_64": (64, 64, 56, 56, 64, 3, 1, 1, 1),
    "r18_3x3_s2_128": (64, 64, 56, 56, 128, 3, 2, 1, 1),
    "r18_3x3_256": (64, 256, 14, 14, 256, 3, 1, 1, 1),
    "r50_1x1_256": (64, 256, 56, 56, 64, 1, 1, 0, 1),
    "stem_7x7_s2": (64, 3, 224, 224, 64, 7, 2, 3, 1),
    "depthwise_3x3": (64, 128, 56, 56, 128, 3, 1, 1, 128),
}
if QUICK:  # CI's quick mode (tests/test_benchmarks_quick.py): one small layer per kind
    SHAPES = {name: (2, *shape[1:]) for name, shape in SHAPES.items() if name in ("r18_3x3_s2_128", "depthwise_3x3")}
BACKENDS = ("reference", "torch", "triton")


def _inputs(shape, channels_last, dtype=torch.bfloat16):
    n, c, h, w, oc, k, stride, padding, groups = SHAPES[shape]
    x = torch.randn(n, c, h, w, device="cuda", dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(oc, c // groups, k, k, device="cuda", dtype=dtype) / (c // groups * k * k) ** 0.5
    mask = torch.rand(oc, c // groups, k, k, device="cuda", dtype=torch.float32, requires_grad=True)
    bias = torch.randn(oc, device="cuda", dtype=dtype, requires_grad=True)
    return x, weight, mask, bias, dict(stride=stride, padding=padding, groups=groups)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("pass_name", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_masked_conv2d(benchmark, shape, pass_name, layout, backend):
    from awm_fast.ops import masked_conv2d

    x, weight, mask, bias, conv = _inputs(shape, layout == "channels_last")
    y0 = masked_conv2d(x, weight, mask, bias, backend=backend, **conv)
    grad_y = torch.randn_like(y0)

    def step():
        y = masked_conv2d(x, weight, mask, bias, backend=backend, **conv)
        if pass_name == "fwd+bwd":
            y.backward(grad_y)
        return y

    n, c, h, w, oc, k, stride, padding, groups = SHAPES[shape]
    flops = 2.0 * y0.numel() * (c // groups) * k * k * (1 if pass_name == "fwd" else 3)
    benchmark_cuda_step(benchmark, step, flops, backend=backend, layout=layout)
