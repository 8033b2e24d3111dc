"""Same seed -> bit-identical purification on CPU, for every backend.

purify() draws every random number (minibatch indices, one-shot augmentation, trigger restarts) from its
own torch.Generator seeded with config.seed, on the CPU, whatever the run device; the global RNG is never
read. On the CPU every op is deterministic for a fixed thread count, so two runs agree bit for bit: masks,
trigger, folded weights and every logged loss. (What differs on a GPU is documented in README/cli.py: the
random draws stay identical, the floating-point reductions may not.)
"""

import os

import pytest
import torch

import awm_fast
from awm_fast.ops.masked import triton_kernels_available

from tiny_models import tiny_cnn, tiny_data


def _triton_on_cpu() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1" and triton_kernels_available()


CASES = [
    pytest.param("reference", dict(mode="paper"), id="reference-paper"),
    pytest.param("torch", dict(mode="paper"), id="torch-paper"),
    # improved (CE + 0.1·KL to the original model) with K random trigger restarts, the exact L1 projection
    # (csrc, a sort per trigger) and bf16 autocast on the CPU
    pytest.param("torch", dict(mode="improved", trigger_search="untargeted", num_triggers=2, projection="exact",
                               precision="bf16"), id="torch-improved-k2-exact-bf16"),
    # the default: the targeted search (random candidates, a random subset of search images per step)
    pytest.param("torch", dict(), id="torch-default-targeted"),
    pytest.param("triton", dict(mode="paper", mask_layers=["8"]), id="triton-interpreter",
                 marks=pytest.mark.skipif(not _triton_on_cpu(), reason="Triton interpreter unavailable")),
]


def _run(model, data, backend, options, global_seed):
    torch.manual_seed(global_seed)  # must not matter: purify reads only its own generator
    return awm_fast.purify(model, data, backend=backend, seed=11, outer=2, steps=2, batch_size=8, **options)


@pytest.mark.parametrize("backend, options", CASES)
def test_same_seed_gives_bit_identical_masks_trigger_weights_and_history(backend, options):
    model, data = tiny_cnn(), tiny_data(per_class=1)  # one per class: the random augmentation runs too
    first = _run(model, data, backend, options, global_seed=1)
    second = _run(model, data, backend, options, global_seed=2)

    assert first.masks.keys() == second.masks.keys() and first.masks
    for name, mask in first.masks.items():
        assert torch.equal(mask, second.masks[name]), name
    assert torch.equal(first.trigger, second.trigger)
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    for record, other in zip(first.history, second.history, strict=True):
        assert {k: v for k, v in record.items() if k != "seconds"} == {k: v for k, v in other.items() if k != "seconds"}
    assert any(float(mask.min()) < 1.0 for mask in first.masks.values())  # the masks did move
