"""purify(backend="triton") runs the whole algorithm through the fused kernels (under TRITON_INTERPRET=1
on CPU tensors here) and gives the torch backend's masks.

Tolerance: both backends compute in fp32 with fp32 accumulation, but the Triton kernels sum each GEMM in
tiles (a different order from the CPU BLAS the torch backend calls), so single ops agree to ~1e-6
relative; two outer epochs of Adam on the masks amplify that a little. 1e-5 is the same bound as the
reference-vs-torch parity test in test_purify.py.

Cost: improved mode's searches (the naming search, the hunt, the all-to-all check at both radii) forward and
backpropagate ~80 times as many images as its mask steps, and under the interpreter that is nearly all of the
test (977 s of a 23-minute suite with the searches' real step counts). The improved run therefore takes fewer
descent steps per search (IMPROVED_SEARCH_STEPS), the same for both backends: every phase and branch of the
algorithm still runs through the fused kernels and is compared, only fewer iterations of each loop.
"""

import os

import pytest
import torch

import awm_fast
from awm_fast import search
from awm_fast.ops.masked import triton_kernels_available

from tiny_models import tiny_cnn, tiny_data

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or not triton_kernels_available(),
    reason="needs Triton and TRITON_INTERPRET=1 (set by tests/conftest.py)")


def _count_calls(monkeypatch, owner, name: str = "apply") -> list[int]:
    """Wrap owner.name (a fused kernel's Function.apply, a search step) so the test can tell it really ran."""
    calls = [0]
    function = getattr(owner, name)

    def counting(*args, **kwargs):
        calls[0] += 1
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


# Descent steps of each trigger search in the improved run (search.py: TARGETED_STEPS 10, ALL_TO_ALL_STEPS 30).
IMPROVED_SEARCH_STEPS = {"TARGETED_STEPS": 3, "ALL_TO_ALL_STEPS": 4}


@pytest.mark.parametrize("mode", ["paper", "improved"])
def test_triton_backend_gives_the_torch_backends_masks(mode, monkeypatch):
    from awm_fast.kernels.masked_conv2d import MaskedConv2dFunction
    from awm_fast.kernels.masked_linear import MaskedLinearFunction

    model, (x, y) = tiny_cnn(), tiny_data()
    # conv+linear: both fused kernels (conv 3x3 stride 1 and 2, Linear) forward and backward
    # No augmented copies at two images per class: they are made before any mask exists (backend-independent)
    # and would multiply the interpreted kernels' work by six.
    options = dict(mode=mode, mask_layers="conv+linear", outer=2, inner=2, batch_size=8, seed=5,
                   augment_beyond_one_shot=False)
    if mode == "improved":
        for name, steps in IMPROVED_SEARCH_STEPS.items():
            monkeypatch.setattr(search, name, steps)
    # Improved mode's all-to-all check must run (it finds nothing on this random model, so it tries every radius).
    leaving_searches = _count_calls(monkeypatch, search.TargetedSearch, "_leaving_search")
    torch_result = awm_fast.purify(model, (x, y), backend="torch", **options)
    torch_leaving_searches = leaving_searches[0]
    linear_calls, conv_calls = (_count_calls(monkeypatch, cls) for cls in (MaskedLinearFunction, MaskedConv2dFunction))
    triton_result = awm_fast.purify(model, (x, y), backend="triton", **options)
    assert linear_calls[0] > 0 and conv_calls[0] > 0, "backend='triton' did not run the fused kernels"
    if mode == "improved":
        # One leaving search at least per radius; the triton run takes the same path as the torch run.
        assert torch_leaving_searches >= len(search.ALL_TO_ALL_RADII), "the all-to-all check did not try every radius"
        assert leaving_searches[0] == 2 * torch_leaving_searches
    results = {"torch": torch_result, "triton": triton_result}
    assert set(results["triton"].masks) == set(results["torch"].masks) == {
        "0.weight", "3.weight", "6.weight", "8.weight"}
    for name, mask in results["torch"].masks.items():
        assert not torch.equal(mask, torch.ones_like(mask)), f"{name}: the masks never moved, nothing was compared"
        torch.testing.assert_close(results["triton"].masks[name], mask, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(results["triton"].trigger, results["torch"].trigger, atol=1e-4, rtol=1e-4)
    # the folded model is a plain nn.Sequential whatever the backend
    assert type(results["triton"].model) is type(model)
