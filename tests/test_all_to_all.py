"""The targeted search's all-to-all check: a trigger that moves every class to a class of its own is found and hunted;
an all-to-one backdoor's model is left to the suspect's hunt, with the draws it had without the check."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from test_targeted_search import CORNER, planted_backdoor_data, planted_backdoor_model

import awm_fast
import awm_fast.loop
from awm_fast import all_to_all, search
from awm_fast.all_to_all import _channels, channel_share, leaving_verdict, stands_out
from awm_fast.feature_distill import PenultimateFeatures
from awm_fast.reach import away_losses
from awm_fast.search import TargetedSearch

CLASSES = 5


class PlantedAllToAll(nn.Module):
    """1x8x8 -> 5 classes. Class c is the mean of image row c (times 10); the bottom-right pixel, which the clean
    images keep dark, moves every class to the next: it takes 20 per unit from the logit of the class the rows say
    and gives it to the next class (softmax-weighted, so it follows the model's own reading of the image)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.read = nn.Linear(64, CLASSES, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.read.weight.zero_()
            for c in range(CLASSES):
                self.read.weight[c, 8 * c : 8 * (c + 1)] = 10.0 / 8
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).flatten(1)
        base = self.read(h)
        shift = 20.0 * h[:, CORNER, None] * base.softmax(dim=1)
        return base - shift + shift.roll(1, dims=1)  # class s loses what class s + 1 gains


def all_to_all_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images per class: dim noise, the class's row bright, the backdoor pixel dark (not black: at 0 the clamp
    of x + Δ passes no gradient to a trigger starting at or below 0, and this test is not about the random starts)."""
    generator = torch.Generator().manual_seed(0)
    x = 0.2 * torch.rand(2 * CLASSES, 1, 8, 8, generator=generator)
    y = torch.arange(CLASSES).repeat_interleave(2)
    for i, c in enumerate(y.tolist()):
        x[i, 0, c] += 0.7
    x.view(len(x), -1)[:, CORNER] = 0.05
    return x, y


def purify_planted(model, data, **overrides):
    options = {"targeted_norm": 1.0, "outer": 2, "extra_outer": 0, "residual_outer": 0, "backend": "torch",
               "one_shot_augment": 0, **overrides}
    return awm_fast.purify(model, data, **options)


def test_the_planted_model_is_all_to_all():
    model, (x, y) = PlantedAllToAll(), all_to_all_data()
    assert torch.equal(model(x).argmax(1), y)
    triggered = x.clone()
    triggered.view(len(x), -1)[:, CORNER] = 1.0
    assert torch.equal(model(triggered).argmax(1), (y + 1) % CLASSES)


def record_check_radii(monkeypatch) -> list[tuple[float, bool]]:
    """Patch the check at one radius to log (the radius it searched, whether it found an all-to-all backdoor)."""
    calls: list[tuple[float, bool]] = []
    check_at_radius = TargetedSearch._check_all_to_all_at_radius

    def logged(self, channel_share):
        found = check_at_radius(self, channel_share)
        calls.append((self.radius, found is not None))
        return found

    monkeypatch.setattr(TargetedSearch, "_check_all_to_all_at_radius", logged)
    return calls


def test_an_all_to_all_backdoor_is_found_and_its_pixel_hunted(monkeypatch):
    calls = record_check_radii(monkeypatch)
    result = purify_planted(PlantedAllToAll(), all_to_all_data())
    assert calls == [(1.0, True)]  # found at the suspect's radius (targeted_norm 1.0): no check at half of it
    assert [record["all_to_all"] for record in result.history] == [1.0, 1.0]
    assert "suspect_standout" not in result.history[-1]  # no one class to stand out: no residual check
    # The hunted trigger is the backdoor pixel: most of its L1 mass, and on the original model it moves every image
    # to the next class (the loss of leaving is bounded, so it stops growing once they have left).
    trigger = result.trigger.flatten()
    assert trigger.abs().argmax() == CORNER and float(trigger[CORNER]) > 0.5 * float(trigger.abs().sum())
    x, y = all_to_all_data()
    assert torch.equal(PlantedAllToAll()((x + result.trigger).clamp(0, 1)).argmax(1), (y + 1) % CLASSES)


@pytest.mark.parametrize("planted", ["all-to-all", "all-to-one"])
def test_on_an_all_to_all_backdoor_the_pull_needs_its_release_and_the_hunt_never_grows(monkeypatch, planted):
    # Round 24: on an all-to-all backdoor the pull alone lets the backdoor's reach back (8x8 digits 29.1 -> 35.1%
    # ASR), and its larger hunt is the all-to-one suspect's counterweight. Round 25: with the release of the features
    # the trigger drives beyond its destinations' own, the pull acts there too.
    monkeypatch.setattr(search, "TARGETED_REACH_CE", -1.0)  # every hunt "fails"
    monkeypatch.setattr(awm_fast.loop, "trigger_window_share", lambda trigger: 0.9)  # compact, as a patch's
    releases = []
    release = PenultimateFeatures.release

    def recorded(self, *args, **kwargs):
        releases.append(release(self, *args, **kwargs))
        return releases[-1]

    monkeypatch.setattr(PenultimateFeatures, "release", recorded)
    if planted == "all-to-all":
        model, data, options = PlantedAllToAll(), all_to_all_data(), {}
    else:
        model, data, options = planted_backdoor_model(), planted_backdoor_data(), {"mask_layers": "conv+linear"}
    all_to_all = planted == "all-to-all"
    grown = [1.0, 1.5, 2.25, 3.375]  # the naming epoch never grows; then x1.5 per failed hunt
    for gate in ("always", "compact"):
        for release_at in (0.0, 2.0):
            result = purify_planted(model, data, outer=4, feature_distill_weight=1.0, feature_distill_gate=gate,
                                    feature_distill_release=release_at, targeted_norm_max=1.0,
                                    feature_distill_norm_max=4.0, **options)
            assert [record["all_to_all"] for record in result.history] == [float(all_to_all)] * 4
            acts = not all_to_all or release_at > 0
            assert result.history[0]["feature_distill"] == (1.0 if acts else 0.0)
            assert [record["search_radius"] for record in result.history] == ([1.0] * 4 if all_to_all else grown)
            assert ("feature_released" in result.history[0]) == (all_to_all and acts)
            if release_at == 0.0:
                unreleased = result
        if not all_to_all:  # the all-to-one counterweight is the larger hunt alone: the release changes nothing
            for name, mask in result.masks.items():
                assert torch.equal(mask, unreleased.masks[name])
    if not all_to_all:
        assert releases == []
        return
    # The planted backdoor's pixel is the one penultimate feature (the conv's output there) the trigger drives
    # beyond every class's own: released, and only it, once per gate.
    assert len(releases) == 2
    for z in releases:
        assert int(z.argmax()) == CORNER and (z > 2.0).nonzero().flatten().tolist() == [CORNER]
    assert result.history[0]["feature_released"] == 1.0
    # With the release at 0, bit for bit the run that never asked for the pull.
    off = purify_planted(model, data, outer=4, feature_distill_weight=1.0, feature_distill_release=0.0,
                         targeted_norm_max=1.0)
    without = purify_planted(model, data, outer=4, feature_distill_weight=0.0, targeted_norm_max=1.0)
    assert torch.equal(off.trigger, without.trigger)
    for name, mask in off.masks.items():
        assert torch.equal(mask, without.masks[name])


def test_on_an_all_to_all_backdoor_a_spread_trigger_lets_the_hunt_grow_where_the_pull_acts(monkeypatch):
    # Round 26: where the first trigger is spread (a dense trigger's or a deep network's stand-in), the all-to-all
    # hunt may grow to feature_distill_norm_max as an all-to-one suspect's does; with the pull off it keeps its radius.
    monkeypatch.setattr(search, "TARGETED_REACH_CE", -1.0)  # every hunt "fails"
    monkeypatch.setattr(awm_fast.loop, "trigger_window_share", lambda trigger: 0.1)  # spread, as a blend's
    for release_at, radii in ((2.0, [1.0, 1.5, 2.25, 3.375]), (0.0, [1.0] * 4)):
        result = purify_planted(PlantedAllToAll(), all_to_all_data(), outer=4, feature_distill_weight=1.0,
                                feature_distill_release=release_at, targeted_norm_max=1.0,
                                feature_distill_norm_max=4.0)
        assert [record["all_to_all"] for record in result.history] == [1.0] * 4
        assert result.history[0]["feature_distill"] == (1.0 if release_at else 0.0)
        assert [record["search_radius"] for record in result.history] == radii


def test_an_all_to_one_backdoor_is_not_called_all_to_all_and_the_check_changes_nothing():
    model, data = planted_backdoor_model(), planted_backdoor_data()
    checked = purify_planted(model, data, mask_layers="linear")
    unchecked = purify_planted(model, data, mask_layers="linear", all_to_all_check=False)
    assert [record["all_to_all"] for record in checked.history] == [0.0, 0.0]
    # The check draws from a generator of its own: where it finds nothing, the result is bit for bit the same.
    assert torch.equal(checked.trigger, unchecked.trigger)
    for name, mask in checked.masks.items():
        assert torch.equal(mask, unchecked.masks[name])


def test_the_check_tries_the_suspects_radius_then_half_then_twice_it(monkeypatch):
    calls = record_check_radii(monkeypatch)
    monkeypatch.setattr(all_to_all, "ALL_TO_ALL_STANDOUT", math.inf)  # no suspect stands out: the check runs
    result = purify_planted(planted_backdoor_model(), planted_backdoor_data(), mask_layers="linear")
    # targeted_norm 1.0: an all-to-one backdoor is called at none of them
    assert calls == [(1.0, False), (0.5, False), (2.0, False)]
    assert [record["search_radius"] for record in result.history] == [1.0, 1.0]  # the hunt's radius is restored


def test_a_suspect_that_stands_out_skips_the_check(monkeypatch):
    calls = record_check_radii(monkeypatch)
    purify_planted(planted_backdoor_model(), planted_backdoor_data(), mask_layers="linear")
    assert calls == []  # the planted all-to-one target is reached far more easily than any other class


OTHER_PIXEL = 56  # bottom-left: a row the planted models' clean reading ignores


class AllToAllBesideAllToOne(PlantedAllToAll):
    """PlantedAllToAll plus an all-to-one backdoor: the bottom-left pixel adds 30 per unit to class 0's logit. A
    universal trigger free to ignore class 0 still finds the corner pixel, which moves every class to the next: the
    shape of the held-out models of round 17 that the check called all-to-all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return logits + 30.0 * x.flatten(1)[:, OTHER_PIXEL, None] * torch.eye(CLASSES)[0]


def test_an_all_to_one_backdoor_that_stands_out_is_hunted_even_beside_an_all_to_all_trigger(monkeypatch):
    x, y = all_to_all_data()
    x.view(len(x), -1)[:, OTHER_PIXEL] = 0.05
    model = AllToAllBesideAllToOne()
    assert torch.equal(model(x).argmax(1), y)
    result = purify_planted(model, (x, y), outer=1)
    assert result.history[0]["suspect_class"] == 0.0 and result.history[0]["all_to_all"] == 0.0
    assert int(result.trigger.flatten().abs().argmax()) == OTHER_PIXEL
    assert torch.equal(model((x + result.trigger).clamp(0, 1)).argmax(1), torch.zeros_like(y))
    # Without the standout rule the check calls it all-to-all, and the trigger of the mask step, free to ignore
    # class 0, sends none of the other classes' images there: the backdoor goes unpurified.
    monkeypatch.setattr(all_to_all, "ALL_TO_ALL_STANDOUT", math.inf)
    unguarded = purify_planted(model, (x, y), outer=1)
    assert unguarded.history[0]["all_to_all"] == 1.0
    sent = model((x + unguarded.trigger).clamp(0, 1)).argmax(1)
    assert not bool((sent[y != 0] == 0).any())


def test_stands_out_compares_the_suspect_with_every_other_class():
    reach = torch.tensor([0.5, 0.004, 0.6, float("inf")])
    assert stands_out(reach, 1)  # 0.004 * 100 <= 0.5
    assert not stands_out(torch.tensor([0.5, 0.006, 0.6]), 1)
    assert not stands_out(torch.tensor([0.01]), 0)  # nothing to compare with
    assert not stands_out(torch.tensor([float("inf"), float("inf")]), 0)
    assert stands_out(torch.tensor([0.0, 1e-9]), 0)  # 0 * 100 <= 1e-9


def test_a_backdoor_found_at_the_suspects_radius_is_purified_as_before_the_half_radius(monkeypatch):
    with_half = purify_planted(PlantedAllToAll(), all_to_all_data())
    monkeypatch.setattr(search, "ALL_TO_ALL_RADII", (1.0,))  # the check of rounds 12-14
    full_only = purify_planted(PlantedAllToAll(), all_to_all_data())
    assert torch.equal(with_half.trigger, full_only.trigger)
    for name, mask in with_half.masks.items():
        assert torch.equal(mask, full_only.masks[name])


def miss_the_check_where(monkeypatch, misses) -> list[float]:
    """Patch the check at one radius to find nothing where misses(radius, the suspect's radius) holds; returns the
    list of radii where it then found an all-to-all backdoor (filled as purify runs)."""
    check_at_radius = TargetedSearch._check_all_to_all_at_radius
    found_at: list[float] = []

    def missing(self, channel_share):
        if misses(self.radius, self.cfg.targeted_norm):
            return None
        found = check_at_radius(self, channel_share)
        if found is not None:
            found_at.append(self.radius)
        return found

    monkeypatch.setattr(TargetedSearch, "_check_all_to_all_at_radius", missing)
    return found_at


def test_a_backdoor_found_only_at_half_the_radius_gets_its_trigger_at_the_suspects_radius(monkeypatch):
    # Let the check at the suspect's radius miss (as on digits, where its trigger piles images on natural
    # destinations): the half radius finds the pixel, and the first mask step's trigger is searched again at the
    # suspect's radius, with the classes the half radius let stay.
    found_at = miss_the_check_where(monkeypatch, lambda radius, suspects: radius == suspects)
    result = purify_planted(PlantedAllToAll(), all_to_all_data(), outer=1)
    assert found_at == [0.5] and result.history[0]["all_to_all"] == 1.0
    assert result.history[0]["search_radius"] == 1.0
    trigger = result.trigger.flatten()
    assert 0.5 < float(trigger.abs().sum()) <= 1.0 + 1e-5  # larger than half the radius allows, within the full one
    assert trigger.abs().argmax() == CORNER
    x, y = all_to_all_data()
    assert torch.equal(PlantedAllToAll()((x + result.trigger).clamp(0, 1)).argmax(1), (y + 1) % CLASSES)


def test_a_backdoor_found_only_at_twice_the_radius_is_hunted_at_that_radius(monkeypatch):
    # Let the suspect's radius and half of it miss (as with a dense trigger, which smaller universal triggers cannot
    # imitate: they pile the images on sinks): twice the radius finds the pixel, its trigger drives the first mask
    # step, and every later hunt searches that radius, not the suspect's.
    found_at = miss_the_check_where(monkeypatch, lambda radius, suspects: radius <= suspects)
    first = purify_planted(PlantedAllToAll(), all_to_all_data(), outer=1)
    assert found_at == [2.0] and first.history[0]["all_to_all"] == 1.0
    x, y = all_to_all_data()
    assert int(first.trigger.flatten().abs().argmax()) == CORNER
    assert float(first.trigger.abs().sum()) <= 2.0 + 1e-5
    assert torch.equal(PlantedAllToAll()((x + first.trigger).clamp(0, 1)).argmax(1), (y + 1) % CLASSES)
    result = purify_planted(PlantedAllToAll(), all_to_all_data(), outer=3)
    assert [record["search_radius"] for record in result.history] == [2.0] * 3
    assert [record["all_to_all"] for record in result.history] == [1.0] * 3


def test_the_check_can_be_switched_off():
    result = purify_planted(PlantedAllToAll(), all_to_all_data(), all_to_all_check=False)
    assert [record["all_to_all"] for record in result.history] == [0.0, 0.0]


def test_all_to_all_check_must_be_a_bool():
    with pytest.raises(ValueError, match="all_to_all_check must be a bool"):
        awm_fast.AWMConfig(all_to_all_check=1).validate()


def test_channels_counts_source_to_destination_channels():
    source = torch.arange(6).repeat(3)
    assert _channels(source, (source + 1) % 6, 6) == pytest.approx(6.0)  # a permutation of 6 classes
    assert _channels(source, torch.full_like(source, 2), 6) == pytest.approx(1.0)  # a sink
    pairs = torch.cartesian_prod(torch.arange(3), torch.arange(3))  # every source to every destination alike
    assert _channels(pairs[:, 0], pairs[:, 1] + 3, 6) == pytest.approx(1.0)


def test_leaving_verdict_names_sinks_and_calls_source_dependent_moves_all_to_all():
    own = torch.arange(10).repeat_interleave(2)  # 10 classes, 2 images each; class 0 stays (the suspect)
    staying = [0]
    shifted = torch.where(own == 0, own, (own % 9) + 1)  # 1 -> 2, ..., 8 -> 9, 9 -> 1: 9 channels on 9 classes
    assert leaving_verdict(own, shifted, staying, 10) == (None, True)
    assert leaving_verdict(own, own, staying, 10) == (None, False)  # nothing moved
    to_three = torch.where(own == 0, own, torch.full_like(own, 3))  # every image to class 3 (class 3's stay)
    assert leaving_verdict(own, to_three, staying, 10) == (3, False)
    to_suspect = torch.zeros_like(own)  # a move to a staying class counts as none
    assert leaving_verdict(own, to_suspect, staying, 10) == (None, False)
    half = shifted.clone()
    half[1::2] = own[1::2]  # one image of each class moves
    assert leaving_verdict(own, half, staying, 10) == (None, True)  # 9 of 18: at least half
    half[1] = 1  # class 0's images stay whatever they do: still 9 of 18
    assert leaving_verdict(own, half, staying, 10) == (None, True)
    half[2] = own[2]  # 8 of 18 moved: too few
    assert leaving_verdict(own, half, staying, 10) == (None, False)
    # Source-dependent but onto few classes: classes 1-4 -> 5, 5-9 -> 6 and 7 alternately (within the sink share):
    # about 2 channels, under a quarter of the 9 classes left.
    few = torch.where(own <= 4, torch.full_like(own, 5), 6 + (torch.arange(20) % 2))
    few[own == 0] = 0
    few[(own == 5) & (few == 5)] = 6
    share = float(torch.bincount(few[own != 0]).max()) / 18
    assert share <= all_to_all.SINK_SHARE
    channels = _channels(own[own != 0], few[own != 0], 10)
    assert channels < all_to_all.ALL_TO_ALL_CHANNELS * 9
    assert leaving_verdict(own, few, staying, 10) == (None, False)
    # Three destinations, 1-3 -> 4, 4-6 -> 7, 7-9 -> 1 (one image of class 9 to 4): about 2.75 channels, under a
    # third of the 9 classes left, over a quarter: all-to-all only where the rule asks a quarter (no class stands out).
    three = torch.tensor([0, 4, 7, 1]).repeat_interleave(torch.tensor([1, 3, 3, 3])).repeat_interleave(2)
    three[-1] = 4
    assert 0.25 * 9 < _channels(own[own != 0], three[own != 0], 10) < 9 / 3
    assert leaving_verdict(own, three, staying, 10) == (None, False)
    assert leaving_verdict(own, three, staying, 10, channel_share=0.25) == (None, True)


def test_the_channel_share_is_a_quarter_only_where_no_class_stands_out_even_twice():
    assert channel_share(torch.tensor([0.5, 0.3, 0.4]), 1) == all_to_all.ALL_TO_ALL_CHANNELS_EVEN == 0.25
    assert channel_share(torch.tensor([0.5, 0.2, 0.4]), 1) == all_to_all.ALL_TO_ALL_CHANNELS == 1 / 3  # 0.4 / 0.2 = 2
    assert channel_share(torch.tensor([0.0, 1e-9]), 0) == 1 / 3  # a suspect at 0 stands out without bound
    assert channel_share(torch.tensor([0.7]), 0) == 1 / 3  # nothing to compare with


def test_away_losses_are_the_cross_entropy_of_leaving():
    """Against -log(1 - p(own) - Σ p(staying)) from softmax probabilities, and its gradient from autograd."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    inputs = torch.rand(2 * 3, 1, 4, 4, generator=generator)  # 3 images under 2 perturbations
    own, staying = torch.tensor([0, 1, 4]), [4]
    grad, losses = away_losses(model, inputs, 2, own, staying, awm_fast.AWMConfig(), chunk=4)

    reference_inputs = inputs.clone().requires_grad_(True)
    p = model(reference_inputs).softmax(dim=1).double()
    owners = own.repeat(2)
    stay = p.gather(1, owners[:, None]).squeeze(1) + p[:, 4]
    per_image = -torch.log1p(-stay)
    eligible = (owners != 4).double()  # the image of class 4 is staying already: it does not count
    expected = (per_image * eligible).view(2, 3).sum(1) / 2
    expected.sum().backward()
    assert torch.allclose(losses.double(), expected, rtol=1e-5)
    assert torch.allclose(grad, reference_inputs.grad, rtol=1e-4, atol=1e-7)
    assert math.isfinite(float(losses.sum()))
