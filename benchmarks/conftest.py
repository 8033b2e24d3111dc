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
