"""feature_distill_weight: the drift of the clean images' penultimate features (awm_fast.feature_distill) and its use
in purify."""

import copy

import pytest
import torch
import torch.nn as nn

import awm_fast
from awm_fast import AWMConfig
from awm_fast.feature_distill import PenultimateFeatures, last_linear
from awm_fast.loop import trusted_rows

from tiny_models import tiny_cnn, tiny_data


def no_autocast():
    return torch.autocast("cpu", enabled=False)


def reference_drift(original: nn.Module, changed: nn.Module, images: torch.Tensor, trust: torch.Tensor,
                    weights: torch.Tensor, scale_images: torch.Tensor) -> torch.Tensor:
    """tiny_cnn's penultimate features are the output of everything but its last layer (a Linear): the drift written
    out with the weights normalised here, the unit measured on scale_images."""
    with torch.no_grad():
        before = original[:-1](images)
        unit = original[:-1](scale_images).pow(2).sum(dim=1).mean()
    after = changed[:-1](images)
    gaps = (after - before).pow(2).sum(dim=1) / unit
    return (gaps * trust * weights).sum()


def test_the_drift_is_zero_unchanged_and_matches_the_features_written_out():
    model, (x, _) = tiny_cnn(), tiny_data(per_class=3)
    original = copy.deepcopy(model)
    features = PenultimateFeatures(model, x, batch=5, autocast=no_autocast, trust=torch.ones(12))  # 3 forwards
    rows, weights = torch.tensor([0, 3, 4, 7, 11]), torch.tensor([0.1, 0.3, 0.1, 0.4, 0.1])
    model(x[rows])
    assert float(features.penalty(rows, weights).detach()) < 1e-10  # other batches: summation order only
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(1)))
    model(x[rows])
    got = features.penalty(rows, weights)
    expected = reference_drift(original, model, x[rows], torch.ones(5), weights, x)
    assert float(expected) > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    model(x[rows])
    torch.testing.assert_close(features.penalty(rows), reference_drift(original, model, x[rows], torch.ones(5),
                                                                       torch.full((5,), 0.2), x))  # a plain mean
    features.close()
    assert not model[-1]._forward_hooks


def test_only_the_images_the_original_labels_right_count_with_correct_only():
    model, (x, _) = tiny_cnn(), tiny_data(per_class=3)
    with torch.no_grad():
        own = model(x).argmax(dim=1)
    y = own.clone()
    y[::2] = (own[::2] + 1) % 4  # every other label is one the original gets wrong
    # The rule the logits' KL uses (awm_fast.loop.trusted_rows), which the loop hands to the feature term.
    assert trusted_rows(own, y, correct_only=True).tolist() == [0.0, 1.0] * 6
    assert trusted_rows(own, y, correct_only=False).tolist() == [1.0] * 12
    features = PenultimateFeatures(model, x, batch=64, autocast=no_autocast, trust=trusted_rows(own, y, True))
    original = copy.deepcopy(model)
    with torch.no_grad():
        model[6].weight.mul_(0.5)
    rows = torch.arange(12)
    model(x)
    torch.testing.assert_close(features.penalty(rows), reference_drift(original, model, x, torch.tensor([0.0, 1.0] * 6),
                                                                       torch.full((12,), 1 / 12), x))


def test_purify_with_the_term_keeps_the_features_closer_and_leaves_no_hook():
    model, (x, y) = tiny_cnn(), tiny_data(per_class=3)
    # distill_correct_only=False: every image counts (the random tiny model labels few of them right)
    options = dict(outer=3, steps=4, lr_mask=0.05, backend="torch", mask_layers="conv+linear", one_shot_augment=0,
                   trigger_search="targeted", targeted_norm=2.0, extra_outer=0, residual_outer=0, seed=0,
                   distill_correct_only=False)

    def drift(purified):
        with torch.no_grad():
            return float(((purified[:-1](x) - model[:-1](x)).pow(2).sum(dim=1)).mean()
                         / model[:-1](x).pow(2).sum(dim=1).mean())

    plain = awm_fast.purify(model, (x, y), **options)
    kept = awm_fast.purify(model, (x, y), feature_distill_weight=10.0, **options)
    assert drift(kept.model) < 0.5 * drift(plain.model)
    assert not any(module._forward_hooks for module in kept.model.modules())
    # Off (0, the default), nothing changes: bit for bit the run without the field.
    again = awm_fast.purify(model, (x, y), feature_distill_weight=0.0, **options)
    for name, mask in plain.masks.items():
        assert torch.equal(mask, again.masks[name])


def test_a_model_without_a_linear_layer_and_a_bad_weight_are_rejected():
    convolutional = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="feature_distill_weight needs a model with a Linear layer"):
        last_linear(convolutional)
    assert last_linear(tiny_cnn()) is not None
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="feature_distill_weight must be finite and >= 0"):
            AWMConfig(feature_distill_weight=bad).validate()
