"""pytest-benchmark: masked Linear, fused Triton kernels vs the eager reference (W⊙m materialised) and the
torch backend, forward and forward + backward, with peak memory. CUDA only.

    python -m pytest benchmarks/bench_masked_linear.py --benchmark-group-by=param:shape,param:pass_name

Without a GPU every benchmark skips with "no GPU: timings reported only when measured on a GPU"; the static
build report and the analytic roofline (benchmarks/triton_build_report.py) stand in until then.
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import QUICK, benchmark_cuda_step

NO_GPU_REASON = "no GPU: timings reported only when measured on a GPU"

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason=NO_GPU_REASON)

# (B rows, N out features, K in features): the README's roofline shapes, plus a transformer-style 3-D input.
SHAPES = {"B16_4096": ((16,), 4096, 4096), "B128_4096": ((128,), 4096, 4096), "B1024_4096": ((1024,), 4096, 4096),
          "8x512_1024": ((8, 512), 1024, 1024)}
if QUICK:  # CI's quick mode (tests/test_benchmarks_quick.py): small shapes, one 2-D and one 3-D input
    SHAPES = {"B16_256": ((16,), 256, 256), "2x8_128": ((2, 8), 128, 128)}
BACKENDS = ("reference", "torch", "triton")


def _inputs(lead, n, k, dtype=torch.bfloat16):
    device = "cuda"
    x = torch.randn(*lead, k, device=device, dtype=dtype, requires_grad=True)
    weight = torch.randn(n, k, device=device, dtype=dtype) / k**0.5
    mask = torch.rand(n, k, device=device, dtype=torch.float32, requires_grad=True)
    bias = torch.randn(n, device=device, dtype=dtype, requires_grad=True)
    return x, weight, mask, bias


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pass_name", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_masked_linear(benchmark, shape, pass_name, backend):
    from awm_fast.ops import masked_linear

    lead, n, k = SHAPES[shape]
    x, weight, mask, bias = _inputs(lead, n, k)
    grad_y = torch.randn(*lead, n, device="cuda", dtype=x.dtype)

    def step():
        y = masked_linear(x, weight, mask, bias, backend=backend)
        if pass_name == "fwd+bwd":
            y.backward(grad_y)
        return y

    rows = x.numel() // k
    flops = 2.0 * rows * n * k * (1 if pass_name == "fwd" else 3)  # backward: dX and dmask GEMMs
    benchmark_cuda_step(benchmark, step, flops, backend=backend)
