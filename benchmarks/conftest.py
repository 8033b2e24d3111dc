"""Shared benchmark setup.

Quick mode (AWM_BENCH_QUICK=1, used by CI through tests/test_benchmarks_quick.py) shrinks every shape
and round count so the suite keeps running without taking minutes; the full run is

    python -m pytest benchmarks --benchmark-json=benchmarks/results/latest.json
    python benchmarks/compare.py benchmarks/results/latest.json

The pure-PyTorch references live in tests/ and are imported from there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("TRITON_INTERPRET", "0")  # benchmarks time real kernels, never the interpreter

QUICK = os.environ.get("AWM_BENCH_QUICK") == "1"


@pytest.fixture
def quick() -> bool:
    return QUICK


def rounds(full: int) -> int:
    """pedantic() round count: `full` normally, 1 in quick mode."""
    return 1 if QUICK else full


def benchmark_cuda_step(benchmark, step, flops: float, **extra_info) -> None:
    """Time `step()` (a forward, or forward + backward) on the GPU; record TFLOP/s and the peak extra memory.

    The first call (Triton compile and autotune) runs outside the timing; every timed round ends with a
    synchronize so it counts the kernels, not the launches.
    """
    import torch

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()

    def timed():
        step()
        torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=rounds(20), warmup_rounds=0 if QUICK else 3, iterations=1)
    benchmark.extra_info.update(extra_info, peak_extra_MB=(torch.cuda.max_memory_allocated() - base) / 1e6,
                                device=torch.cuda.get_device_name())
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["TFLOP/s"] = flops / benchmark.stats.stats.mean / 1e12
