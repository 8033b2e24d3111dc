"""feature_distill_weight: the drift of the clean images' penultimate features (awm_fast.feature_distill), the
compact-trigger gate (feature_distill_gate) and their use in purify."""

import copy
import importlib

import pytest
import torch
import torch.nn as nn

import awm_fast
import awm_fast.loop
from awm_fast import AWMConfig
from awm_fast.feature_distill import PenultimateFeatures, gate_pull, last_linear, trigger_window_share
from awm_fast.loop import trusted_rows

from tiny_models import tiny_cnn, tiny_data

purify_module = importlib.import_module("awm_fast.purify")  # awm_fast.purify is the function
search_module = importlib.import_module("awm_fast.search")


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


# distill_correct_only=False: every image counts (the random tiny model labels few of them right)
OPTIONS = dict(outer=3, steps=4, lr_mask=0.05, backend="torch", mask_layers="conv+linear", one_shot_augment=0,
               trigger_search="targeted", targeted_norm=2.0, extra_outer=0, residual_outer=0, seed=0,
               distill_correct_only=False)


def test_purify_with_the_term_keeps_the_features_closer_and_leaves_no_hook():
    model, (x, y) = tiny_cnn(), tiny_data(per_class=3)

    def drift(purified):
        with torch.no_grad():
            return float(((purified[:-1](x) - model[:-1](x)).pow(2).sum(dim=1)).mean()
                         / model[:-1](x).pow(2).sum(dim=1).mean())

    plain = awm_fast.purify(model, (x, y), feature_distill_weight=0.0, **OPTIONS)
    kept = awm_fast.purify(model, (x, y), feature_distill_weight=10.0, feature_distill_gate="always", **OPTIONS)
    assert drift(kept.model) < 0.5 * drift(plain.model)
    assert not any(module._forward_hooks for module in kept.model.modules())
    assert kept.history[0]["feature_distill"] == 10.0 and "feature_distill" not in plain.history[0]


def masks_equal(a, b) -> bool:
    return all(torch.equal(mask, b.masks[name]) for name, mask in a.masks.items())


@pytest.mark.parametrize("share", [0.9, 0.1])
def test_the_compact_gate_pulls_only_after_a_compact_first_trigger(monkeypatch, share):
    model, (x, y) = tiny_cnn(), tiny_data(per_class=3)
    seen = []

    def window_share(trigger):
        seen.append(tuple(trigger.shape))
        return share

    monkeypatch.setattr(awm_fast.loop, "trigger_window_share", window_share)
    gated = awm_fast.purify(model, (x, y), feature_distill_weight=10.0, feature_distill_gate="compact", **OPTIONS)
    assert seen == [(1, 8, 8)]  # once: the first hunt's trigger, [C, H, W]
    acts = share >= 0.5
    assert gated.history[0]["trigger_window_share"] == share
    assert gated.history[0]["feature_distill"] == (10.0 if acts else 0.0)
    assert not any(module._forward_hooks for module in gated.model.modules())
    always = awm_fast.purify(model, (x, y), feature_distill_weight=10.0, **OPTIONS)  # gate "always", the default
    assert always.history[0]["feature_distill"] == 10.0
    off = awm_fast.purify(model, (x, y), feature_distill_weight=0.0, **OPTIONS)
    assert not masks_equal(always, off)  # the pull changes the masks here, so the comparisons below can fail
    # Bit for bit the run with the pull from the start (it decides before the first mask step) or without it.
    assert masks_equal(gated, always) == acts and masks_equal(gated, off) == (not acts)


@pytest.mark.parametrize("gate,share", [("always", 0.1), ("compact", 0.9), ("compact", 0.1)])
def test_where_the_pull_acts_the_hunt_grows_to_feature_distill_norm_max(monkeypatch, gate, share):
    model, (x, y) = tiny_cnn(), tiny_data(per_class=3)
    monkeypatch.setattr(awm_fast.loop, "trigger_window_share", lambda trigger: share)
    monkeypatch.setattr(search_module, "TARGETED_REACH_CE", -1.0)  # every hunt "fails"
    options = {**OPTIONS, "outer": 4, "targeted_norm_max": 2.0}  # no growth of its own, as at one shot
    result = awm_fast.purify(model, (x, y), feature_distill_weight=1.0, feature_distill_norm_max=4.0,
                             feature_distill_gate=gate, **options)
    radii = [record["search_radius"] for record in result.history]  # each epoch's, for the next hunt
    # The naming epoch never grows; then x1.5 per failed hunt up to the cap, where the pull acts: always with the
    # gate "always", whatever the trigger's shape; on a compact trigger only with "compact".
    acts = gate == "always" or share >= 0.5
    assert result.history[0]["feature_distill"] == (1.0 if acts else 0.0)
    assert radii == ([2.0, 3.0, 4.0, 4.0] if acts else [2.0] * 4)
    without = awm_fast.purify(model, (x, y), feature_distill_weight=0.0, feature_distill_norm_max=4.0, **options)
    assert [record["search_radius"] for record in without.history] == [2.0] * 4  # no pull, no growth
    assert AWMConfig().resolve(input_numel=784, num_samples=10).feature_distill_norm_max == 40.0  # 2 x 20
    assert AWMConfig().resolve(784, 10, one_shot=False).feature_distill_norm_max == 80.0  # targeted_norm_max's 4 x
    with pytest.raises(ValueError, match="feature_distill_norm_max must be >= targeted_norm"):
        AWMConfig(feature_distill_norm_max=5.0).resolve(784, 10)


@pytest.mark.parametrize("share", [0.9, 0.1])
def test_the_compact_gate_pulls_on_a_warp_suspect_whatever_the_trigger(monkeypatch, share):
    model, (x, y) = tiny_cnn(), tiny_data(per_class=3)
    monkeypatch.setattr(awm_fast.loop, "trigger_window_share", lambda trigger: share)
    monkeypatch.setattr(search_module, "TARGETED_REACH_CE", -1.0)  # every hunt "fails"
    monkeypatch.setattr(purify_module, "warp_suspect", lambda *args, **kwargs: 1)  # the warp check names class 1
    # the warp check runs where copies are filtered; no growth of the hunt's own
    options = {**OPTIONS, "one_shot_augment": 1, "targeted_norm_max": 2.0}
    gated = awm_fast.purify(model, (x, y), feature_distill_weight=10.0, feature_distill_gate="compact", **options)
    assert gated.history[0]["feature_distill"] == 10.0 and gated.history[0]["suspect_class"] == 1.0
    always = awm_fast.purify(model, (x, y), feature_distill_weight=10.0, feature_distill_gate="always", **options)
    assert masks_equal(gated, always)
    for result in (gated, always):  # a warp suspect's hunt does not grow, however compact its trigger
        assert {record["search_radius"] for record in result.history} == {2.0}


def test_the_window_share_against_windows_summed_by_hand():
    trigger = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(0)) - 0.5
    magnitude = trigger.abs().sum(dim=0)
    k = 3  # a quarter of the side
    best = max(float(magnitude[r : r + k, c : c + k].sum()) for r in range(12 - k + 1) for c in range(12 - k + 1))
    expected = best / float(magnitude.sum())
    assert trigger_window_share(trigger) == pytest.approx(expected, rel=1e-5)
    assert trigger_window_share(trigger[None]) == pytest.approx(expected, rel=1e-5)  # [1, C, H, W] too
    patch = torch.zeros(1, 28, 28)
    patch[0, 24:27, 24:27] = 1.0  # a 3x3 corner patch: all of it in one 7x7 window
    assert trigger_window_share(patch) == pytest.approx(1.0)
    assert trigger_window_share(torch.ones(1, 28, 28)) == pytest.approx(49 / 784)  # spread evenly
    assert trigger_window_share(torch.ones(1, 8, 8)) == pytest.approx(4 / 64)  # 2x2 windows on 8x8
    for says_nothing in (torch.zeros(1, 8, 8), torch.ones(784), torch.ones(3, 1, 1)):
        assert trigger_window_share(says_nothing) is None


# (gate, release, share, all_to_all, warp_suspected) -> (acts, grows), written out from the rules of rounds 23-26:
# compact >= 0.5, spread < 0.25; the pull is off on an all-to-all backdoor without the release and, with the compact
# gate, on a trigger that is not compact unless the warp check named the suspect; where it acts the hunt grows except
# for a warp suspect, and on an all-to-all backdoor only where the trigger is spread.
GATE_CASES = [
    ("always", 2.0, 0.7, False, False, True, True),  # all-to-one patch
    ("always", 2.0, 0.1, False, False, True, True),  # all-to-one blend
    ("always", 2.0, None, False, False, True, True),  # not an image: all-to-one still grows
    ("always", 2.0, 0.1, False, True, True, False),  # warp suspect: acts, never grows
    ("always", 2.0, 0.4, True, False, True, False),  # all-to-all patch: acts, keeps its radius
    ("always", 2.0, 0.25, True, False, True, False),  # exactly the threshold is not spread
    ("always", 2.0, 0.15, True, False, True, True),  # all-to-all spread trigger: grows
    ("always", 2.0, None, True, False, True, False),  # all-to-all, nothing known of the shape
    ("always", 0.0, 0.15, True, False, False, False),  # all-to-all without the release: off
    ("always", 0.0, 0.7, False, False, True, True),  # the release matters on all-to-all only
    ("compact", 2.0, 0.5, False, False, True, True),  # exactly the threshold is compact
    ("compact", 2.0, 0.3, False, False, False, False),
    ("compact", 2.0, None, False, False, False, False),
    ("compact", 2.0, 0.1, False, True, True, False),  # the warp check opens the compact gate
    ("compact", 2.0, 0.3, True, False, False, False),
]


@pytest.mark.parametrize("gate, release, share, all_to_all, warp, acts, grows", GATE_CASES)
def test_the_pull_gate_decides_as_the_rounds_measured(gate, release, share, all_to_all, warp, acts, grows):
    cfg = AWMConfig(feature_distill_gate=gate, feature_distill_release=release).resolve(784, 10)
    decided = gate_pull(cfg, share, all_to_all, warp)
    assert (decided.acts, decided.grows) == (acts, grows)
    assert (decided.why_not == "") == acts


def test_the_default_weight_resolves_by_mode_search_and_model():
    def resolved(config, **kwargs):
        return config.resolve(input_numel=784, num_samples=10, **kwargs)

    improved = resolved(AWMConfig())
    assert improved.feature_distill_weight == 1.0 and improved.feature_distill_gate == "always"
    assert resolved(AWMConfig(mode="paper")).feature_distill_weight == 0.0
    assert resolved(AWMConfig(trigger_search="untargeted")).feature_distill_weight == 0.0
    assert resolved(AWMConfig(), has_linear=False).feature_distill_weight == 0.0  # nothing to pull on
    assert resolved(AWMConfig(), has_conv=False).feature_distill_weight == 0.0  # an MLP (round 23)
    assert resolved(AWMConfig(feature_distill_weight=0.3)).feature_distill_weight == 0.3
    with pytest.raises(ValueError, match="feature_distill_gate"):
        AWMConfig(feature_distill_gate="sometimes").validate()
    with pytest.raises(ValueError, match="needs trigger_search='targeted'"):
        AWMConfig(feature_distill_weight=1.0, trigger_search="untargeted", feature_distill_gate="compact").validate()
    AWMConfig(feature_distill_weight=1.0, trigger_search="untargeted").validate()  # "always" needs no hunt


def test_improved_purify_runs_on_a_model_without_a_linear_layer():
    torch.manual_seed(0)
    convolutional = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x, y = tiny_data(per_class=1)
    result = awm_fast.purify(convolutional, (x, y), outer=1, steps=1, backend="torch", extra_outer=0,
                             residual_outer=0, seed=0)
    assert result.config.feature_distill_weight == 0.0 and "feature_distill" not in result.history[0]


def test_a_model_without_a_linear_layer_and_a_bad_weight_are_rejected():
    convolutional = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="feature_distill_weight needs a model with a Linear layer"):
        last_linear(convolutional)
    assert last_linear(tiny_cnn()) is not None
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="feature_distill_weight must be finite and >= 0"):
            AWMConfig(feature_distill_weight=bad).validate()


def test_release_frees_the_features_the_trigger_drives_beyond_its_destination_class():
    model, (x, y) = tiny_cnn(), tiny_data(per_class=3)
    trust = torch.ones(12)
    trust[5] = 0.0  # an untrusted image counts nowhere: not as a destination's example, not as a moved image
    features = PenultimateFeatures(model, x, batch=5, autocast=no_autocast, trust=trust)
    trigger = torch.zeros(1, 8, 8)
    trigger[0, :3, :3] = 2.0
    triggered = (x + trigger).clamp(0, 1)
    z = features.release(model, triggered, y, threshold=0.5, batch=5, autocast=no_autocast)
    # written out: penultimate features are everything but the last Linear
    with torch.no_grad():
        before, after, predicted = model[:-1](x), model[:-1](triggered), model(triggered).argmax(dim=1)
    kept = trust > 0
    moved = [i for i in range(12) if kept[i] and predicted[i] != y[i] and (kept & (y == predicted[i])).any()]
    assert moved  # the comparison below is not vacuous
    destination_means = torch.stack([before[kept & (y == predicted[i])].mean(dim=0) for i in moved])
    expected = (after[moved] - destination_means).mean(dim=0) / before[kept].std(dim=0).clamp_min(1e-6)
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)
    assert 0 < int((z > 0.5).sum()) < z.numel()  # some features released, not all
    torch.testing.assert_close(features.keep, (expected <= 0.5).float())
    # The drift then counts the kept features only.
    original = copy.deepcopy(model)
    with torch.no_grad():
        model[6].weight.mul_(0.5)
    rows = torch.arange(12)
    model(x)
    with torch.no_grad():
        gaps = ((model[:-1](x) - original[:-1](x)).pow(2) * features.keep).sum(dim=1)
        unit = original[:-1](x).pow(2).sum(dim=1).mean()
    torch.testing.assert_close(features.penalty(rows), (gaps / unit * trust).mean())
    features.close()
