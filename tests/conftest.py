"""Test-session setup shared by every test file.

Triton kernels are exercised on CPU tensors through Triton's interpreter; the variable must be set
before any kernel module is imported (triton.jit reads it at decoration time).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# MKL picks its float32 kernels by CPU: AVX-512 ones on the newer machines of this workplace, AVX2 ones on the others,
# and their sums round differently. A few planted-model tests sit near a tie (the all-to-all check's universal trigger
# on PlantedAllToAll: the backdoor pixel's candidate and a decoy's differ by 0.5% in loss), so the suite pins MKL to
# its AVX2 kernels, the same on every machine. Read by MKL when it first dispatches, so it is set before torch loads.
os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")

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
