"""forward_chunk: the fast path never forwards more than forward_chunk images with gradients, and the
chunking changes nothing but the summation order of the accumulated gradients."""

import pytest
import torch

import awm_fast
from awm_fast.config import AWMConfig

from tiny_models import tiny_cnn, tiny_data


def _largest_grad_forward(model) -> list[int]:
    """Record the batch size of every forward that builds a graph (the no-grad label passes don't count).
    The hook sits on the BatchNorm after the first conv: masked layers are swapped in, BatchNorm stays."""
    sizes = []
    model[1].register_forward_pre_hook(lambda _module, args: sizes.append(len(args[0])) if torch.is_grad_enabled()
                                       else None)
    return sizes


@pytest.mark.parametrize("search", [dict(trigger_search="untargeted", num_triggers=2), dict(trigger_search="targeted")])
@pytest.mark.parametrize("forward_chunk, expected", [(3, 3), (None, 32)])
def test_no_forward_with_gradients_exceeds_the_chunk(forward_chunk, expected, search):
    # 40 distinct images, batch 64 with replacement, K = 2: the ascent sees 2·U and the mask step 3·U
    # triggered + clean images per step, far more than one chunk; the targeted search descends classes x
    # restarts candidates over 40 images.
    model, (x, y) = tiny_cnn(), tiny_data(per_class=10)
    sizes = _largest_grad_forward(model)
    awm_fast.purify(model, (x, y), inplace=True, backend="torch", batch_size=64, outer=1, inner=1,
                    forward_chunk=forward_chunk, **search)
    assert sizes, "no forward with gradients was recorded"
    # the default on the CPU is min(batch_size, 32); the packing balances chunks, so each is at least half full
    assert expected // 2 < max(sizes) <= expected


@pytest.mark.parametrize("mode", ["paper", "improved"])
def test_chunking_changes_nothing_but_rounding(mode):
    model, (x, y) = tiny_cnn(), tiny_data(per_class=4)
    options = dict(backend="torch", mode=mode, trigger_search="untargeted", num_triggers=2, batch_size=16, outer=3,
                   inner=2, seed=3)
    whole = awm_fast.purify(model, (x, y), forward_chunk=10_000, **options)
    chunked = awm_fast.purify(model, (x, y), forward_chunk=5, **options)  # chunks straddle clean / triggered rows
    for name, mask in whole.masks.items():
        assert not torch.equal(mask, torch.ones_like(mask)), f"{name}: the masks never moved"
        torch.testing.assert_close(chunked.masks[name], mask, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(chunked.trigger, whole.trigger, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_forward_chunk_must_be_a_positive_int(value):
    with pytest.raises((ValueError, TypeError), match="forward_chunk"):
        AWMConfig(forward_chunk=value).validate()
