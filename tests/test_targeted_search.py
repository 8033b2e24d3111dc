"""trigger_search="targeted": per-class trigger candidates, the suspected target's trigger drives the masks."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import awm_fast
from awm_fast import AWMConfig
from awm_fast.config import IMPROVED_EXTRA_OUTER, IMPROVED_RESIDUAL_OUTER, IMPROVED_WARP_BN_DRIFT_WEIGHT
from awm_fast.inputs import augment_one_shot_consistent
from awm_fast.loop import RESIDUAL_BLOCK
from awm_fast.ops.trigger import reference_project_l1_ball
from awm_fast.search import (
    RESIDUAL_RADIUS_FACTOR,
    RESIDUAL_STANDOUT,
    TARGETED_FRESH,
    TARGETED_GROWTH,
    TARGETED_REACH_CE,
    TARGETED_STEP_SIZE,
    TARGETED_STEPS,
    TargetedSearch,
)
from awm_fast.warp import WARP_MAX_IMAGES, warp_suspect, warped_copies

from tiny_models import tiny_cnn, tiny_data

BACKDOOR_CLASS = 2
CORNER = 63  # the flattened index of pixel (7, 7) of an 8x8 image


def planted_backdoor_model() -> nn.Module:
    """1x8x8 -> 4 classes. Class c is the mean of image rows 2c, 2c+1 (times 10); class 2 also gets +20 per unit
    of the bottom-right pixel, which the clean images keep dark: that pixel is a one-pixel backdoor."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten(), nn.Linear(64, 4, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.zero_()
        for c in range(4):
            model[2].weight[c, 16 * c : 16 * (c + 1)] = 10.0 / 16
        model[2].weight[BACKDOOR_CLASS, CORNER] = 20.0
    return model.eval()


def planted_backdoor_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images per class: dim noise, the class's two rows bright, the backdoor pixel dark."""
    generator = torch.Generator().manual_seed(0)
    x = 0.2 * torch.rand(8, 1, 8, 8, generator=generator)
    y = torch.arange(4).repeat_interleave(2)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 2 * c : 2 * c + 2] += 0.7
    x.view(8, -1)[:, CORNER] = 0.0
    return x, y


def test_the_planted_backdoor_class_is_suspected_and_its_pixel_found():
    model, (x, y) = planted_backdoor_model(), planted_backdoor_data()
    assert torch.equal(model(x).argmax(1), y)  # the model is right on the clean images
    result = awm_fast.purify(model, (x, y), trigger_search="targeted", targeted_norm=1.0, outer=2, extra_outer=0,
                             residual_outer=0, backend="torch", mask_layers="linear")
    assert [record["suspect_class"] for record in result.history] == [BACKDOOR_CLASS] * 2
    trigger = result.trigger.flatten()
    assert result.trigger.shape == x.shape[1:]
    assert trigger.abs().sum() <= 1.0 + 1e-5
    # The epoch-2 trigger was recovered against the epoch-1 masks; most of its mass is still on the backdoor pixel.
    assert int(trigger.abs().argmax()) == CORNER and trigger[CORNER] > 0.5
    # The masks cut the backdoor class's weight on the backdoor pixel more than any other class's weight on it.
    on_pixel = result.masks["2.weight"][:, CORNER]
    assert on_pixel[BACKDOOR_CLASS] < 1.0
    assert on_pixel[BACKDOOR_CLASS] < on_pixel[torch.arange(4) != BACKDOOR_CLASS].min()


def reference_descent(model, x, target, delta, radius, steps=TARGETED_STEPS):
    """`steps` (TARGETED_STEPS) plain descent steps of one candidate delta [C, H, W] toward `target`, image by image:
    (delta, the loss measured before the last step, or inf when every image already is `target`)."""
    own = model(x).argmax(1)
    if bool((own == target).all()):
        return delta, float("inf")  # nothing to reach: never the suspect
    for _ in range(steps):
        delta.requires_grad_(True)
        terms = [F.cross_entropy(model((x[i] + delta).clamp(0, 1)[None]), torch.tensor([target]))
                 for i in range(len(x)) if own[i] != target]
        loss = torch.stack(terms).mean()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            stepped = delta - TARGETED_STEP_SIZE * radius * grad / grad.abs().sum()
            delta = reference_project_l1_ball(stepped.view(1, -1), radius, "exact").view_as(delta)
        last_loss = loss.item()  # measured before the step, as the search does
    return delta, last_loss


def random_starts(count, shape, radius, generator):
    noise = torch.rand((count, *shape), generator=generator) * 2 - 1
    return [row * (0.5 * radius / row.abs().sum()) for row in noise]


def reference_targeted_search(model, x, num_classes, radius, restarts, generator, given=None, shortlist=None):
    """Two epochs of the search as plain loops over classes, candidates and images: epoch 1 tries every class
    (only the `given` suspect when there is one, only the classes of `shortlist` when given; per class, one
    candidate from zero and restarts - 1 random ones) and names the suspect; epoch 2 continues the suspect's best
    candidate beside TARGETED_FRESH fresh ones. [(suspect, trigger [C, H, W])] per epoch."""
    classes = list(shortlist) if shortlist is not None else range(num_classes) if given is None else [given]
    starts = random_starts(len(classes) * restarts, x.shape[1:], radius, generator)
    best = None  # (loss, class, trigger)
    for index, start in enumerate(starts):
        target = classes[index // restarts]
        delta, loss = reference_descent(model, x, target, torch.zeros(x.shape[1:]) if index % restarts == 0 else start,
                                        radius)
        if best is None or loss < best[0]:  # ties keep the earlier candidate, as argmin does
            best = (loss, target, delta)
    suspect, first = best[1], best[2]
    second = None
    for start in [first] + random_starts(TARGETED_FRESH, x.shape[1:], radius, generator):
        delta, loss = reference_descent(model, x, suspect, start, radius)
        if second is None or loss < second[0]:
            second = (loss, delta)
    return [(suspect, first), (suspect, second[1])]


@pytest.mark.parametrize("given", [None, 1])
def test_the_batched_search_matches_plain_loops_over_two_epochs(given):
    model, (x, _) = tiny_cnn(), tiny_data(per_class=2)
    cfg = AWMConfig(targeted_norm=2.0, trigger_restarts=3).resolve(64, len(x))
    search = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(7), suspect=given)
    expected = reference_targeted_search(model, x, 4, 2.0, 3, torch.Generator().manual_seed(7), given)
    for suspect, trigger in expected:
        got_trigger, _, got_suspect = search.recover()
        assert got_suspect == suspect
        torch.testing.assert_close(got_trigger[0], trigger, rtol=0, atol=1e-5)


def test_purify_searches_over_the_kept_augmented_copies_too():
    model, (x, y) = tiny_cnn(), tiny_data(per_class=1)  # one per class: purify adds label-consistent copies
    result = awm_fast.purify(model, (x, y), trigger_search="targeted", one_shot_filter=True, targeted_norm=2.0,
                             outer=1, backend="torch", seed=5, mask_layers="linear")
    # Independently: the copies come first from purify's generator, then the search's first draws.
    generator = torch.Generator().manual_seed(5)
    suspect = warp_suspect(model, x, AWMConfig().resolve(64, len(x)))
    kept_x, _ = augment_one_shot_consistent(model, x, y, 9, generator, suspect=suspect)
    assert len(kept_x) > len(x)
    cfg = AWMConfig(targeted_norm=2.0).resolve(64, len(kept_x))
    trigger, _, suspect = TargetedSearch(model, kept_x, cfg, generator).recover()
    assert result.history[0]["suspect_class"] == suspect
    torch.testing.assert_close(result.trigger, trigger[0], rtol=0, atol=1e-6)


def test_the_suspect_named_first_is_kept_when_another_class_gets_easier():
    model, (x, _) = planted_backdoor_model(), planted_backdoor_data()
    cfg = AWMConfig(targeted_norm=1.0).resolve(64, len(x))
    search = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(0))
    assert search.recover()[2] == BACKDOOR_CLASS
    with torch.no_grad():  # as if the masks had removed the backdoor pixel and another one had appeared
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0
        model[2].weight[0, 0] = 20.0
    trigger, loss, suspect = search.recover()
    assert suspect == BACKDOOR_CLASS  # a class that became easy later is not the backdoor the model came with
    assert float(trigger.flatten()[0]) <= 0  # it darkens the new pixel if anything: still aiming at the suspect


def test_the_hunt_radius_grows_while_the_masks_keep_the_suspect_out_of_reach_and_stops_at_the_cap():
    model, (x, _) = planted_backdoor_model(), planted_backdoor_data()
    cfg = AWMConfig(targeted_norm=1.0, targeted_norm_max=3.0).resolve(64, len(x))
    search = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(0))
    assert search.recover()[2] == BACKDOOR_CLASS and search.radius == 1.0  # naming never grows the radius
    for _ in range(2):  # the backdoor pixel still reaches the suspect: the radius stays
        _, loss, _ = search.recover()
        assert float(loss) < TARGETED_REACH_CE and search.radius == 1.0
    with torch.no_grad():  # as if the masks had cut the backdoor pixel: a radius of 1 no longer reaches class 2
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0
    radii = []
    for _ in range(4):
        used = search.radius
        trigger, loss, suspect = search.recover()
        # Out of reach, the descent spends this epoch's whole budget: the trigger lies on its ball's surface.
        assert suspect == BACKDOOR_CLASS and float(trigger.abs().sum()) == pytest.approx(used, rel=1e-4)
        assert float(loss) > TARGETED_REACH_CE
        radii.append(search.radius)
    assert radii == pytest.approx([TARGETED_GROWTH, TARGETED_GROWTH ** 2, 3.0, 3.0])


def test_purify_logs_the_hunt_radius_which_grows_only_up_to_its_cap():
    model, (x, y) = planted_backdoor_model(), planted_backdoor_data()
    with torch.no_grad():
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0  # no backdoor: no class is reachable at radius 1
    # targeted_norm_max alone (no feature pull, whose own cap is feature_distill_norm_max, below).
    options = {"trigger_search": "targeted", "targeted_norm": 1.0, "outer": 3, "backend": "torch",
               "mask_layers": "linear"}
    grown = awm_fast.purify(model, (x, y), targeted_norm_max=2.0, feature_distill_weight=0.0, **options)
    assert [record["search_radius"] for record in grown.history] == pytest.approx([1.0, 1.5, 2.0])
    fixed = awm_fast.purify(model, (x, y), targeted_norm_max=1.0, feature_distill_weight=0.0, **options)
    assert [record["search_radius"] for record in fixed.history] == [1.0] * 3
    assert float(fixed.trigger.abs().sum()) <= 1.0 + 1e-5
    # With the feature pull (the default here: a conv net with a Linear layer) the hunt may grow to
    # feature_distill_norm_max (None: twice targeted_norm) whatever targeted_norm_max says; set both to fix it.
    pulled = awm_fast.purify(model, (x, y), targeted_norm_max=1.0, **options)
    assert pulled.history[0]["feature_distill"] == 1.0
    assert [record["search_radius"] for record in pulled.history] == pytest.approx([1.0, 1.5, 2.0])
    pinned = awm_fast.purify(model, (x, y), targeted_norm_max=1.0, feature_distill_norm_max=1.0, **options)
    assert [record["search_radius"] for record in pinned.history] == [1.0] * 3
    # By default: growth with two images per class (these data); at one shot only under a guard of the clean
    # function, the BatchNorm penalty (round 11) or the feature pull (rounds 23-24), and not without either.
    one_shot = (x[::2], y[::2])
    runs = {name: awm_fast.purify(model, data, **options, **extra)
            for name, data, extra in [("two per class", (x, y), {}), ("one shot", one_shot, {}),
                                      ("one shot, no pull", one_shot, {"feature_distill_weight": 0.0}),
                                      ("one shot, penalty, no pull", one_shot,
                                       {"bn_drift_weight": 1.0, "feature_distill_weight": 0.0})]}
    radii = {name: [record["search_radius"] for record in run.history] for name, run in runs.items()}
    assert radii == {"two per class": pytest.approx([1.0, 1.5, 2.25]), "one shot": pytest.approx([1.0, 1.5, 2.0]),
                     "one shot, no pull": [1.0] * 3, "one shot, penalty, no pull": pytest.approx([1.0, 1.5, 2.25])}


def test_purify_warns_when_its_last_hunt_still_reaches_the_suspect():
    model, data = planted_backdoor_model(), planted_backdoor_data()
    options = {"trigger_search": "targeted", "targeted_norm": 1.0, "outer": 1, "extra_outer": 0, "backend": "torch",
               "mask_layers": "linear"}
    # One epoch: the hunt ran against the unmasked model, whose backdoor pixel reaches class 2.
    with pytest.warns(UserWarning, match=r"still reaches class 2 \(mean cross-entropy .* < 1.0\)"):
        result = awm_fast.purify(model, data, **options)
    assert result.history[-1]["ascent_loss"] < TARGETED_REACH_CE
    with torch.no_grad():
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0  # no backdoor: nothing reaches class 2 at radius 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = awm_fast.purify(model, data, **options)
    assert quiet.history[-1]["ascent_loss"] > TARGETED_REACH_CE


def test_residual_check_measures_the_purified_model_and_changes_nothing_else():
    model, data = planted_backdoor_model(), planted_backdoor_data()
    options = {"trigger_search": "targeted", "targeted_norm": 1.0, "outer": 1, "extra_outer": 0, "residual_outer": 0,
               "backend": "torch", "mask_layers": "linear"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch leaves the backdoor: the hunt's own warning
        checked = awm_fast.purify(model, data, **options)
        unchecked = awm_fast.purify(model, data, residual_check=False, **options)
    # The check draws from a generator of its own and changes no mask: the same result, bit for bit.
    assert torch.equal(checked.trigger, unchecked.trigger)
    for name, mask in checked.masks.items():
        assert torch.equal(mask, unchecked.masks[name])
    assert "suspect_standout" not in unchecked.history[-1]
    # One epoch does not cut the backdoor pixel: at twice the radius it sends every image to class 2 far more easily
    # than anything reaches another class (the row classes need a whole row brightened).
    assert checked.history[-1]["suspect_standout"] > 100 * RESIDUAL_STANDOUT
    # Measured on the purified model, not the original: without its backdoor the same network's suspect does not.
    with torch.no_grad():
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0
    quiet = awm_fast.purify(model, data, **options)
    assert quiet.history[-1]["suspect_standout"] <= RESIDUAL_STANDOUT


def test_suspect_standout_leaves_the_search_as_it_found_it():
    model, (x, _) = planted_backdoor_model(), planted_backdoor_data()
    cfg = AWMConfig(trigger_search="targeted", targeted_norm=1.0).resolve(x[0].numel(), len(x))
    search = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(0))
    search.recover()  # names the suspect
    state, radius = search.generator.get_state(), search.radius
    assert search.suspect_standout(2.0) > 100 * RESIDUAL_STANDOUT
    assert search.radius == radius and torch.equal(search.generator.get_state(), state)


def test_purify_warns_when_the_suspect_still_stands_out_after_hunts_that_failed(monkeypatch):
    model, data = planted_backdoor_model(), planted_backdoor_data()
    with torch.no_grad():
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0  # no backdoor: the hunts fail, so their warning stays quiet
    options = {"trigger_search": "targeted", "targeted_norm": 1.0, "outer": 1, "extra_outer": 0, "residual_outer": 0,
               "backend": "torch", "mask_layers": "linear"}
    radii, standout = [], {"value": 2.5}

    def measured(self, radius):
        radii.append(radius)
        return standout["value"]

    monkeypatch.setattr(TargetedSearch, "suspect_standout", measured)
    with pytest.warns(UserWarning, match=r"is still the class that a universal trigger of L1 radius 2 reaches most "
                                         r"easily \(2.5 times more easily"):
        result = awm_fast.purify(model, data, **options)
    assert radii == [RESIDUAL_RADIUS_FACTOR * 1.0] and result.history[-1]["suspect_standout"] == 2.5
    standout["value"] = RESIDUAL_STANDOUT  # at the bar: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        awm_fast.purify(model, data, **options)
        awm_fast.purify(model, data, residual_check=False, **options)
    assert len(radii) == 2  # switched off, it is not measured
    with pytest.raises(ValueError, match="residual_check must be a bool"):
        AWMConfig(residual_check=1).validate()


def test_residual_epochs_keep_masking_while_the_suspect_stands_out():
    model, data = planted_backdoor_model(), planted_backdoor_data()
    options = {"trigger_search": "targeted", "targeted_norm": 1.0, "outer": 1, "extra_outer": 0, "backend": "torch",
               "mask_layers": "linear"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checked_only = awm_fast.purify(model, data, residual_outer=0, **options)
        driven = awm_fast.purify(model, data, **options)  # improved mode: residual_outer = IMPROVED_RESIDUAL_OUTER
    assert driven.config.residual_outer == IMPROVED_RESIDUAL_OUTER
    planned, residual = driven.history[:1], driven.history[1:]
    # One epoch leaves the pixel (the check's ratio is above 200), so blocks of RESIDUAL_BLOCK epochs follow, each
    # hunting at the check's radius at the undecayed rate, with the check after each block.
    assert len(residual) % RESIDUAL_BLOCK == 0 and 0 < len(residual) <= IMPROVED_RESIDUAL_OUTER
    assert all(record.get("residual") == 1.0 and "extra" not in record for record in residual)
    assert not planned[0].get("residual")
    # From the check's radius on, growing where the hunt fails as ever (two images per class: up to 4 x 1.0).
    assert all(RESIDUAL_RADIUS_FACTOR * 1.0 <= record["search_radius"] <= 4.0 for record in residual)
    assert all(record["lr_mask"] == driven.config.lr_mask for record in residual)
    checked = [i for i, record in enumerate(driven.history) if "suspect_standout" in record]
    assert checked == list(range(0, len(driven.history), RESIDUAL_BLOCK))
    assert all(driven.history[i]["suspect_standout"] > RESIDUAL_STANDOUT for i in checked[:-1])
    # The first check is the one a run without residual epochs makes; the epochs then cut the backdoor pixel.
    assert driven.history[0]["suspect_standout"] == checked_only.history[-1]["suspect_standout"]
    pixel = (BACKDOOR_CLASS, CORNER)
    assert float(driven.masks["2.weight"][pixel]) < float(checked_only.masks["2.weight"][pixel])
    last = driven.history[-1]["suspect_standout"]
    assert last <= RESIDUAL_STANDOUT or len(residual) == IMPROVED_RESIDUAL_OUTER
    assert last < checked_only.history[-1]["suspect_standout"]


def test_residual_epochs_stop_when_the_suspect_no_longer_stands_out_or_the_cap_is_spent(monkeypatch, capsys):
    model, data = planted_backdoor_model(), planted_backdoor_data()
    with torch.no_grad():
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0  # no backdoor: the hunts fail, so their warning stays quiet
    options = {"trigger_search": "targeted", "targeted_norm": 1.0, "outer": 2, "extra_outer": 0, "backend": "torch",
               "mask_layers": "linear"}
    ratios = []

    def measured(self, radius):
        return ratios.pop(0)

    monkeypatch.setattr(TargetedSearch, "suspect_standout", measured)
    ratios[:] = [2.5, 2.5, RESIDUAL_STANDOUT]  # stands out twice, then at the bar
    with pytest.warns(UserWarning, match=r"10 residual epochs ran until it no longer did \(ratio 2\)"):
        result = awm_fast.purify(model, data, **options)
    assert len(result.history) == 2 + 2 * RESIDUAL_BLOCK and not ratios
    assert [record.get("suspect_standout") for record in result.history[1::RESIDUAL_BLOCK]] == [2.5, 2.5, 2.0]
    ratios[:] = [2.5, 2.5, 2.5]  # stands out throughout: the cap's 7 epochs, a block and a part, then the warning
    with pytest.warns(UserWarning, match=r"after 7 residual epochs, class \d is still the class"):
        capped = awm_fast.purify(model, data, residual_outer=7, verbose=True, **options)
    assert len(capped.history) == 2 + 7 and not ratios
    assert sum(1 for record in capped.history if record.get("residual")) == 7
    checks = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[awm] residual check")]
    assert [line.rsplit("(", 1)[1] for line in checks] == ["stands out: 5 more epochs)", "stands out: 2 more epochs)",
                                                           "done)"]


def test_residual_outer_resolves_with_the_mode_and_needs_the_check():
    def resolved(**fields):
        return AWMConfig(**fields).resolve(input_numel=64, num_samples=8).residual_outer

    assert resolved() == IMPROVED_RESIDUAL_OUTER
    assert resolved(residual_check=False) == 0
    assert resolved(mode="paper") == 0
    assert resolved(trigger_search="untargeted") == 0
    assert resolved(residual_outer=3) == 3
    with pytest.raises(ValueError, match="residual_outer=3 needs residual_check=True"):
        AWMConfig(residual_outer=3, residual_check=False).validate()
    with pytest.raises(ValueError, match="residual_outer=3 needs"):
        AWMConfig(residual_outer=3, mode="paper").validate()
    with pytest.raises(ValueError, match="residual_outer must be an int >= 0"):
        AWMConfig(residual_outer=-1).validate()
    AWMConfig(residual_outer=0, residual_check=False).validate()  # nothing to run: fine


def test_more_images_than_a_search_batch_run_on_random_subsets_deterministically():
    model, (x, y) = tiny_cnn(), tiny_data(per_class=20)  # 80 images > TARGETED_MAX_IMAGES
    runs = [awm_fast.purify(model, (x, y), trigger_search="targeted", outer=2, inner=1, batch_size=16,
                            backend="torch", seed=3) for _ in range(2)]
    assert torch.equal(runs[0].trigger, runs[1].trigger)
    for name, mask in runs[0].masks.items():
        assert torch.equal(mask, runs[1].masks[name]), name


@pytest.mark.parametrize("options, message", [
    (dict(trigger_search="nearest"), "unknown trigger_search"),
    (dict(trigger_search="targeted", num_triggers=2), "needs num_triggers=1"),
    (dict(trigger_search="targeted", num_triggers=2, sparse_triggers=1), "needs num_triggers=1"),
    (dict(targeted_norm=0.0), "targeted_norm must be finite and > 0"),
    (dict(targeted_norm=float("inf")), "targeted_norm must be finite and > 0"),
    (dict(trigger_restarts=0), "trigger_restarts must be an int >= 1"),
    (dict(targeted_norm_max=-1.0), "targeted_norm_max must be finite and > 0"),
    (dict(targeted_norm_max=float("nan")), "targeted_norm_max must be finite and > 0"),
])
def test_the_targeted_options_are_validated(options, message):
    with pytest.raises(ValueError, match=message):
        AWMConfig(**options).validate()


def test_the_targeted_search_needs_a_fast_backend():
    model, (x, y) = tiny_cnn(), tiny_data()
    with pytest.raises(ValueError, match="trigger_search='targeted' needs a fast backend"):
        awm_fast.purify(model, (x, y), trigger_search="targeted", outer=1, backend="reference")
    with pytest.raises(ValueError, match="mode='paper' is the authors' procedure"):  # the default mode says why
        awm_fast.purify(model, (x, y), outer=1, backend="reference")


def test_improved_mode_searches_targeted_with_a_radius_that_grows_with_the_image_and_paper_mode_does_not():
    resolved = AWMConfig().resolve(3 * 32 * 32, 100, input_channels=3)
    # per channel 20 · (32·32) / (28·28): 2.55% of the pixels, as 20 is on 28x28 Fashion-MNIST
    assert resolved.trigger_search == "targeted" and resolved.targeted_norm == pytest.approx(3 * 20 * 1024 / 784)
    assert AWMConfig().resolve(28 * 28, 100).targeted_norm == pytest.approx(20.0)
    assert AWMConfig().resolve(2 * 8 * 8, 100, input_channels=2).targeted_norm == 20.0  # the floor: 10 per channel
    assert AWMConfig(mode="paper").resolve(64, 100).trigger_search == "untargeted"
    assert AWMConfig(targeted_norm=4.0).resolve(64, 100).targeted_norm == 4.0
    assert "suspect_class" in awm_fast.purify(tiny_cnn(), tiny_data(), outer=1, backend="torch").history[0]
    paper = awm_fast.purify(tiny_cnn(), tiny_data(), mode="paper", outer=1, backend="torch")
    assert "suspect_class" not in paper.history[0]  # the paper's search suspects no class



def test_the_hunt_radius_grows_to_four_times_targeted_norm_beyond_one_shot_or_with_the_penalty_unless_told():
    assert AWMConfig().resolve(28 * 28, 100).targeted_norm_max == 20.0  # fixed at one shot without the penalty
    assert AWMConfig().resolve(28 * 28, 200, one_shot=False).targeted_norm_max == pytest.approx(80.0)
    assert AWMConfig(bn_drift_weight=10).resolve(28 * 28, 100).targeted_norm_max == pytest.approx(80.0)
    assert AWMConfig(targeted_norm=4.0, bn_drift_weight=1).resolve(64, 100).targeted_norm_max == 16.0
    assert AWMConfig(targeted_norm=4.0, targeted_norm_max=6.0).resolve(64, 100).targeted_norm_max == 6.0
    assert AWMConfig(targeted_norm=4.0, targeted_norm_max=4.0, bn_drift_weight=1).resolve(64, 100) \
        .targeted_norm_max == 4.0
    with pytest.raises(ValueError, match=r"targeted_norm_max must be >= targeted_norm \(20.0\), got 10.0"):
        AWMConfig(targeted_norm_max=10.0).resolve(28 * 28, 100)


class ResamplingBackdoor(nn.Module):
    """The planted row classifier without its pixel backdoor, plus a warping backdoor: class 2 gains 10000 per
    unit of high-frequency energy missing below 0.0045. Resampling by a fraction of a pixel averages neighbouring
    pixels and removes most of that energy; the clean images (energy 0.0046-0.0073) are left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = planted_backdoor_model()
        with torch.no_grad():
            self.rows[2].weight[BACKDOOR_CLASS, CORNER] = 0.0

    def forward(self, x):
        logits = self.rows(x)
        inner = x[..., :-2]  # resampling next to the dark corner pixel adds an edge there: leave those columns out
        energy = (inner[..., 1:] - inner[..., :-1]).pow(2).mean(dim=(1, 2, 3))
        bonus = 10000 * (0.0045 - energy).clamp(min=0)
        return logits + F.one_hot(torch.tensor(BACKDOOR_CLASS), 4).float() * bonus.unsqueeze(1)


def test_warp_suspect_names_a_warping_backdoors_target_and_nothing_on_a_patch_backdoor():
    x, y = planted_backdoor_data()
    cfg = AWMConfig().resolve(64, 8)
    warping = ResamplingBackdoor().eval()
    assert torch.equal(warping(x).argmax(1), y)  # right on the clean images
    shifted = F.grid_sample(x, F.affine_grid(torch.tensor([[[1.0, 0, 0.1], [0, 1.0, 0]]]).expand(8, -1, -1),
                                             list(x.shape), align_corners=True), align_corners=True,
                            padding_mode="border")
    assert (warping(shifted).argmax(1) == BACKDOOR_CLASS).all()  # a shift by 0.35 pixel fires it
    assert warp_suspect(warping, x, cfg) == BACKDOOR_CLASS
    assert warp_suspect(planted_backdoor_model(), x, cfg) is None  # a one-pixel patch is no warp
    assert warp_suspect(nn.Linear(8, 4), torch.rand(5, 8), cfg) is None  # not images


def test_warp_suspect_checks_a_random_subset_of_many_images():
    x, _ = planted_backdoor_data()
    many = x.repeat(20, 1, 1, 1) + 0.01 * torch.rand(160, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    cfg = AWMConfig().resolve(64, len(many))
    warping = ResamplingBackdoor().eval()
    seen = []
    warping.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    assert warp_suspect(warping, many, cfg, torch.Generator().manual_seed(3)) == BACKDOOR_CLASS
    assert seen[0] == WARP_MAX_IMAGES < len(many)  # the model's own labels, on the subset only
    # The subset is the generator's first permutation of the rows: checking it alone gives the same answer.
    subset = many[torch.randperm(len(many), generator=torch.Generator().manual_seed(3))[:WARP_MAX_IMAGES]]
    assert warp_suspect(warping, subset, cfg) == BACKDOOR_CLASS
    # Without a generator the subset is drawn by one seeded 0, never by the global RNG.
    inputs = []
    warping.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    state = torch.get_rng_state()
    assert warp_suspect(warping, many, cfg) == BACKDOOR_CLASS
    assert torch.equal(torch.get_rng_state(), state)
    expected = many[torch.randperm(len(many), generator=torch.Generator().manual_seed(0))[:WARP_MAX_IMAGES]]
    assert torch.equal(inputs[0], expected)  # the first forward labels the subset


def test_one_shot_filter_with_the_targeted_search_keeps_the_copies_sent_to_the_warp_suspect(capsys):
    model, (x, y) = ResamplingBackdoor().eval(), planted_backdoor_data()
    x, y = x[::2], y[::2]  # one image per class
    result = awm_fast.purify(model, (x, y), trigger_search="targeted", one_shot_filter=True, outer=1, seed=4,
                             backend="torch", mask_layers="linear", verbose=True)
    # Independently: the warp check draws nothing, so purify's generator draws the copies first.
    expected_x, expected_y = augment_one_shot_consistent(model, x, y, 9, torch.Generator().manual_seed(4),
                                                         suspect=BACKDOOR_CLASS)
    plain_x, _ = augment_one_shot_consistent(model, x, y, 9, torch.Generator().manual_seed(4))
    assert len(expected_x) > len(plain_x)  # the warp suspect's copies are the difference
    assert (f"kept {len(expected_x) - 4} label-consistent augmented copies (and those sent to class "
            f"{BACKDOOR_CLASS}, which half-pixel warps reach) of 36 wanted") in capsys.readouterr().err
    assert result.config.one_shot_filter
    assert result.history[0]["suspect_class"] == BACKDOOR_CLASS  # the trigger search hunts the warp suspect's


def test_warped_copies_are_the_images_the_suspects_flow_field_sends_there_with_their_own_labels():
    x, y = planted_backdoor_data()
    cfg = AWMConfig().resolve(64, len(x))
    warping = ResamplingBackdoor().eval()
    got_x, got_y = warped_copies(warping, x, y, BACKDOOR_CLASS, cfg)
    assert torch.equal(got_x[: len(x)], x) and torch.equal(got_y[: len(y)], y)
    added_x, added_y = got_x[len(x):], got_y[len(x):]
    assert len(added_x) > 0 and (added_y != BACKDOOR_CLASS).all()
    assert (warping(added_x).argmax(dim=1) == BACKDOOR_CLASS).all()  # where the warping backdoor fires
    # Each is a half-pixel warp of the image whose label it carries: nearer that image than any other.
    nearest = torch.cdist(added_x.flatten(1), x.flatten(1)).argmin(dim=1)
    assert torch.equal(y[nearest], added_y)
    # A model whose backdoor is a patch: smooth warps send nothing to its target, and nothing is added.
    patch_x, patch_y = warped_copies(planted_backdoor_model(), x, y, BACKDOOR_CLASS, cfg)
    assert torch.equal(patch_x, x) and torch.equal(patch_y, y)


def test_warp_copies_in_purify_add_the_warped_images_and_drop_unrecognisable_suspect_copies_by_default(capsys):
    model, (x, y) = ResamplingBackdoor().eval(), planted_backdoor_data()
    x, y = x[::2], y[::2]  # one image per class
    options = {"trigger_search": "targeted", "one_shot_filter": True, "outer": 1, "seed": 4, "backend": "torch",
               "mask_layers": "linear", "verbose": True}
    result = awm_fast.purify(model, (x, y), warp_copies=True, **options)
    # Independently: the copies purify keeps (runner-up rule), then the warped images it adds.
    kept_x, kept_y = augment_one_shot_consistent(model, x, y, 9, torch.Generator().manual_seed(4),
                                                 suspect=BACKDOOR_CLASS, suspect_runner_up=True)
    cfg = AWMConfig().resolve(64, len(kept_x))
    added = len(warped_copies(model, kept_x, kept_y, BACKDOOR_CLASS, cfg)[0]) - len(kept_x)
    err = capsys.readouterr().err
    assert added > 0 and f"added {added} images the warp check's flow field sends to class {BACKDOOR_CLASS}" in err
    assert result.config.warp_copies and result.history[0]["suspect_class"] == BACKDOOR_CLASS
    default = awm_fast.purify(model, (x, y), **options)
    assert default.config.warp_copies  # on by default in improved mode (round 28)
    assert all(torch.equal(result.masks[name], default.masks[name]) for name in default.masks)
    capsys.readouterr()
    plain = awm_fast.purify(model, (x, y), warp_copies=False, **options)
    assert "flow field" not in capsys.readouterr().err
    assert not all(torch.equal(result.masks[name], plain.masks[name]) for name in plain.masks)
    with pytest.raises(ValueError, match="warp_copies must be a bool or None"):
        AWMConfig(warp_copies=1).validate()
    for without_its_check in ({"mode": "paper"}, {"one_shot_filter": False}, {"trigger_search": "untargeted"}):
        with pytest.raises(ValueError, match="warp_copies=True needs one_shot_filter=True and trigger_search"):
            AWMConfig(warp_copies=True, **without_its_check).validate()
        assert not AWMConfig(**without_its_check).resolve(64, 10).warp_copies


def with_batch_norm(model: nn.Module) -> nn.Module:
    """`model` with a BatchNorm1d after its Linear layer (running mean 0, variance 1: the same logits up to eps)."""
    rows = model.rows if isinstance(model, ResamplingBackdoor) else model
    rows.append(nn.BatchNorm1d(4))
    return model.eval()


def test_warp_bn_drift_weight_puts_the_batchnorm_penalty_on_warp_suspects_only():
    x, y = planted_backdoor_data()
    x, y = x[::2], y[::2]  # one image per class
    options = {"trigger_search": "targeted", "one_shot_filter": True, "outer": 1, "extra_outer": 0,
               "residual_check": False, "seed": 4, "backend": "torch", "mask_layers": "linear"}
    warping = with_batch_norm(ResamplingBackdoor())
    default = awm_fast.purify(warping, (x, y), **options)
    assert default.history[0]["suspect_class"] == BACKDOOR_CLASS
    assert default.config.warp_bn_drift_weight == IMPROVED_WARP_BN_DRIFT_WEIGHT  # improved mode's, round 29
    assert default.history[0]["bn_drift"] == IMPROVED_WARP_BN_DRIFT_WEIGHT
    # The same run as the penalty asked for everywhere at that weight, with the hunt's radius kept where it is.
    everywhere = awm_fast.purify(warping, (x, y), bn_drift_weight=IMPROVED_WARP_BN_DRIFT_WEIGHT,
                                 targeted_norm_max=default.config.targeted_norm, warp_bn_drift_weight=0, **options)
    assert all(torch.equal(default.masks[name], everywhere.masks[name]) for name in default.masks)
    plain = awm_fast.purify(warping, (x, y), warp_bn_drift_weight=0, **options)
    assert "bn_drift" not in plain.history[0]
    assert not all(torch.equal(default.masks[name], plain.masks[name]) for name in plain.masks)
    # The larger of the two weights acts on a warp suspect.
    assert awm_fast.purify(warping, (x, y), bn_drift_weight=30, **options).history[0]["bn_drift"] == 30
    # A patch backdoor gets no warp suspect, so no penalty: the same masks as with the option off.
    patch = with_batch_norm(planted_backdoor_model())
    patched, unpatched = (awm_fast.purify(patch, (x, y), warp_bn_drift_weight=weight, **options)
                          for weight in (None, 0))
    assert "bn_drift" not in patched.history[0]
    assert all(torch.equal(patched.masks[name], unpatched.masks[name]) for name in patched.masks)
    for bad in (-1.0, float("nan"), "10"):
        with pytest.raises(ValueError, match="warp_bn_drift_weight must be finite and >= 0"):
            AWMConfig(warp_bn_drift_weight=bad).validate()
    for without_its_check in ({"mode": "paper"}, {"one_shot_filter": False}, {"trigger_search": "untargeted"}):
        with pytest.raises(ValueError, match="warp_bn_drift_weight=3 needs one_shot_filter=True and trigger_search"):
            AWMConfig(warp_bn_drift_weight=3, **without_its_check).validate()
        assert AWMConfig(**without_its_check).resolve(64, 10).warp_bn_drift_weight == 0.0


def test_purify_adds_epochs_at_the_undecayed_rate_while_the_hunt_still_reaches_the_suspect():
    model, data = planted_backdoor_model(), planted_backdoor_data()
    options = {"trigger_search": "targeted", "targeted_norm": 1.0, "outer": 2, "residual_outer": 0, "backend": "torch",
               "mask_layers": "linear"}
    plain = awm_fast.purify(model, data, extra_outer=0, **options)
    # Whether the cap is spent or a hunt fails first, the hunt reached class 2 after the planned epochs: a warning.
    with pytest.warns(UserWarning, match=r"class 2 after the planned epochs \(outer=2|class 2 after 5 extra epochs"):
        extended = awm_fast.purify(model, data, extra_outer=5, **options)
    history = extended.history
    assert 2 < len(history) <= 2 + 5 and len(plain.history) == 2
    # The first `outer` epochs are those of a run without extra epochs; each extra one follows a hunt that reached.
    for ran, record in zip(plain.history, history[:2], strict=True):
        assert record["loss"] == ran["loss"] and "extra" not in record
    for before, record in zip(history[1:-1], history[2:], strict=True):
        assert before["ascent_loss"] < TARGETED_REACH_CE and record["extra"] == 1.0
        assert record["lr_mask"] == extended.config.lr_mask  # undecayed (lr_decay 0.9 after each of the outer)
    assert len(history) == 7 or history[-1]["ascent_loss"] >= TARGETED_REACH_CE
    # The extra epochs cut the backdoor class's weight on the backdoor pixel further.
    assert extended.masks["2.weight"][BACKDOOR_CLASS, CORNER] < plain.masks["2.weight"][BACKDOOR_CLASS, CORNER]
    # Where the hunt fails, nothing is added: the same model without its backdoor runs `outer` epochs.
    with torch.no_grad():
        model[2].weight[BACKDOOR_CLASS, CORNER] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning
        assert len(awm_fast.purify(model, data, extra_outer=5, **options).history) == 2


def test_extra_outer_defaults_to_the_improved_targeted_hunt_and_needs_it():
    assert AWMConfig().resolve(784, 10).extra_outer == IMPROVED_EXTRA_OUTER
    assert AWMConfig(mode="paper").resolve(784, 10).extra_outer == 0
    assert AWMConfig(trigger_search="untargeted").resolve(784, 10).extra_outer == 0
    with pytest.raises(ValueError, match="extra_outer=3 needs trigger_search='targeted'"):
        AWMConfig(mode="paper", extra_outer=3).validate()
    with pytest.raises(ValueError, match="extra_outer"):
        AWMConfig(extra_outer=-1).validate()


@pytest.mark.filterwarnings("ignore:purify. the last epoch's trigger hunt still reaches")  # the pull's cost
def test_warp_mask_pull_draws_the_masks_back_to_one_for_a_warp_suspect_only():
    x, y = planted_backdoor_data()
    options = {"trigger_search": "targeted", "one_shot_filter": True, "outer": 2, "extra_outer": 0, "seed": 4,
               "backend": "torch", "mask_layers": "linear", "lr_mask": 0.01, "lr_decay": None}

    def travel(model, pull):
        masks = awm_fast.purify(model, (x[::2], y[::2]), warp_mask_pull=pull, **options).masks
        return torch.cat([(1 - m).flatten() for m in masks.values()])

    warping = ResamplingBackdoor().eval()
    free = travel(warping, 0.0)
    assert free.max() > 0.01  # without the pull the warp suspect's trigger moves the masks
    # lr·ρ = 1: m·(1 − 1) + 1 = 1 after every step, so no mask keeps any travel.
    assert torch.equal(travel(warping, 100.0), torch.zeros_like(free))
    assert 0 < travel(warping, 10.0).sum() < free.sum()  # a weaker pull keeps part of it
    # On a patch backdoor the warp check names nothing: the pull changes no bit.
    patch = planted_backdoor_model()
    assert torch.equal(travel(patch, 100.0), travel(patch, 0.0))


def test_warp_mask_pull_is_off_by_default_and_validated():
    assert AWMConfig().resolve(784, 10).warp_mask_pull == 0.0
    assert AWMConfig(mode="paper").resolve(784, 10).warp_mask_pull == 0.0
    assert AWMConfig(warp_mask_pull=2).resolve(784, 10).warp_mask_pull == 2.0
    for bad in (-1.0, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="warp_mask_pull must be finite and >= 0"):
            AWMConfig(warp_mask_pull=bad).validate()
