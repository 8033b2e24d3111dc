"""bn_drift_weight: the BatchNorm input-statistics drift penalty (awm_fast.bn_drift) and its use in purify."""

import copy

import pytest
import torch
import torch.nn as nn

import awm_fast
from awm_fast.bn_drift import BatchNormDrift

from tiny_models import tiny_cnn, tiny_data


def no_autocast():
    return torch.autocast("cpu", enabled=False)


def reference_drift(original: nn.Module, changed: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """tiny_cnn's one BatchNorm (index 1): the drift written out with torch.var_mean over the batch."""
    bn = original[1]
    with torch.no_grad():
        var0, mean0 = torch.var_mean(original[0](images), dim=(0, 2, 3), unbiased=False)
    var, mean = torch.var_mean(changed[0](images), dim=(0, 2, 3), unbiased=False)
    return (((mean - mean0) ** 2 + (var.sqrt() - var0.sqrt()) ** 2) / (bn.running_var + bn.eps)).mean()


def test_the_drift_is_zero_unchanged_and_matches_batch_statistics_with_repeated_rows():
    model, (x, _) = tiny_cnn(), tiny_data(per_class=3)
    original = copy.deepcopy(model)
    drift = BatchNormDrift(model, x, batch=5, autocast=no_autocast)  # 12 images in three forwards
    rows, counts = torch.tensor([0, 3, 4, 7, 11]), torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0])
    with drift.capture():
        model(x[rows])
    assert float(drift.penalty(rows, counts).detach()) < 1e-10
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(1)))
    with drift.capture():
        model(x[rows])
    got = drift.penalty(rows, counts / 8)  # weights of any scale
    # Independently: every row repeated by its multiplicity, plain batch statistics.
    expected = reference_drift(original, model, x[rows].repeat_interleave(counts.long(), dim=0))
    assert float(expected) > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    drift.close()
    assert not model[1]._forward_pre_hooks


def test_the_drift_counts_only_the_trusted_rows():
    model, (x, _) = tiny_cnn(), tiny_data(per_class=3)
    original = copy.deepcopy(model)
    trust = torch.tensor([1.0, 0.0] * 6)  # the odd images are ones the original model would label wrong
    drift = BatchNormDrift(model, x, batch=5, autocast=no_autocast, trust=trust)
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(2)))
    rows, counts = torch.tensor([0, 1, 4, 7, 10]), torch.tensor([2.0, 1.0, 1.0, 3.0, 1.0])
    with drift.capture():
        model(x[rows])
    got = drift.penalty(rows, counts)
    # Independently: the batch statistics of the trusted rows alone, each repeated by its multiplicity.
    kept = trust[rows] > 0
    expected = reference_drift(original, model, x[rows[kept]].repeat_interleave(counts[kept].long(), dim=0))
    assert float(expected) > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    # A step with no trusted row has no drift, and no NaN in it.
    with drift.capture():
        model(x[[1, 3]])
    assert float(drift.penalty(torch.tensor([1, 3]), torch.ones(2))) == 0.0
    drift.close()


def test_a_gradient_step_on_the_drift_reduces_it():
    model, (x, _) = tiny_cnn(), tiny_data(per_class=3)
    drift = BatchNormDrift(model, x, batch=64, autocast=no_autocast)
    rows, weights = torch.arange(len(x)), torch.ones(len(x))
    with torch.no_grad():
        model[0].weight.mul_(0.7)
    values = []
    for _ in range(2):
        model.zero_grad()
        with drift.capture():
            model(x)
        penalty = drift.penalty(rows, weights)
        penalty.backward()
        values.append(float(penalty))
        with torch.no_grad():
            model[0].weight.sub_(0.05 * model[0].weight.grad / model[0].weight.grad.norm())
    assert values[1] < values[0]


def test_a_model_without_batchnorm_has_no_drift():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    x, _ = tiny_data()
    drift = BatchNormDrift(model, x, batch=4, autocast=no_autocast)
    with drift.capture():
        model(x)
    assert float(drift.penalty(torch.arange(len(x)), torch.ones(len(x)))) == 0.0


def test_a_batchnorm_the_forward_never_calls_is_left_out():
    class WithUnusedBatchNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = tiny_cnn(), nn.BatchNorm2d(6)  # `unused` is registered, never called

        def forward(self, x):
            return self.net(x)

    model, (x, _) = WithUnusedBatchNorm().eval(), tiny_data()
    drift = BatchNormDrift(model, x, batch=4, autocast=no_autocast)
    assert list(drift.norms) == ["net.1"]
    assert not model.unused._forward_pre_hooks
    with drift.capture():
        model(x)
    assert float(drift.penalty(torch.arange(len(x)), torch.ones(len(x))).detach()) < 1e-10


def test_purify_with_the_drift_penalty_moves_the_statistics_less():
    model, (x, y) = tiny_cnn(), tiny_data(per_class=3)
    options = dict(backend="torch", outer=4, seed=0, mask_layers="conv", trigger_search="untargeted",
                   one_shot_filter=False, lr_mask=0.05)
    plain = awm_fast.purify(model, (x, y), **options)
    held = awm_fast.purify(model, (x, y), bn_drift_weight=100.0, **options)
    again = awm_fast.purify(model, (x, y), bn_drift_weight=100.0, **options)
    with torch.no_grad():
        drift_plain, drift_held = (float(reference_drift(model, result.model, x)) for result in (plain, held))
    assert drift_held < 0.5 * drift_plain
    assert not held.model[1]._forward_pre_hooks  # the hooks are removed with the loop
    for name in held.masks:
        assert torch.equal(held.masks[name], again.masks[name])


def test_without_batchnorm_the_penalty_changes_nothing_but_summation_order():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 4)).eval()
    x, y = tiny_data(per_class=3)
    options = dict(backend="torch", outer=2, seed=0, trigger_search="untargeted", one_shot_filter=False,
                   forward_chunk=5)
    plain = awm_fast.purify(model, (x, y), **options)
    penalised = awm_fast.purify(model, (x, y), bn_drift_weight=5.0, **options)
    for name in plain.masks:
        torch.testing.assert_close(penalised.masks[name], plain.masks[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "1"])
def test_bn_drift_weight_is_validated(value):
    with pytest.raises(ValueError, match="bn_drift_weight"):
        awm_fast.AWMConfig(bn_drift_weight=value).validate()


def test_the_reference_backend_refuses_the_drift_penalty():
    model, (x, y) = tiny_cnn(), tiny_data()
    with pytest.raises(ValueError, match="bn_drift_weight.*fast backend"):
        awm_fast.purify(model, (x, y), mode="paper", backend="reference", bn_drift_weight=1.0, outer=1)
