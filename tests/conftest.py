"""Test-session setup shared by every test file.

Triton kernels are exercised on CPU tensors through Triton's interpreter; the variable must be set
before any kernel module is imported (triton.jit reads it at decoration time).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def single_thread():
    """Tiny models train fastest on one thread: on a shared, busy CPU two OpenMP threads run ~3-10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
