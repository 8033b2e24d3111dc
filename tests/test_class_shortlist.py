"""cfg.class_shortlist: on models with more classes than the shortlist, a cheap screen picks the classes the naming
search and the warp check try in full; at most that many classes are searched exactly as without it."""

from __future__ import annotations

import pytest
import torch
from test_targeted_search import (
    BACKDOOR_CLASS,
    ResamplingBackdoor,
    planted_backdoor_data,
    planted_backdoor_model,
    reference_descent,
    reference_targeted_search,
)

import awm_fast
from awm_fast import AWMConfig, search, warp
from awm_fast.search import SCREEN_IMAGES, SCREEN_STEPS, TargetedSearch
from awm_fast.warp import WARP_SCREEN_STEPS, WARP_STEPS, warp_suspect

from tiny_models import tiny_cnn, tiny_data

CLASSES = 12


def test_the_screen_is_one_descent_from_zero_per_class_on_one_image_subset():
    model, (x, _) = tiny_cnn(CLASSES), tiny_data(CLASSES, per_class=2)  # 24 images > SCREEN_IMAGES
    cfg = AWMConfig(targeted_norm=2.0).resolve(64, len(x))
    losses = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(3))._screen(CLASSES)
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:SCREEN_IMAGES]
    for target in range(CLASSES):
        _, expected = reference_descent(model, x[rows], target, torch.zeros(x.shape[1:]), 2.0, SCREEN_STEPS)
        torch.testing.assert_close(losses[target], torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_screens_in_blocks_give_the_losses_of_one_block(monkeypatch):
    model, (x, _) = tiny_cnn(CLASSES), tiny_data(CLASSES, per_class=2)
    cfg = AWMConfig(targeted_norm=2.0).resolve(64, len(x))
    whole = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(3))._screen(CLASSES)
    monkeypatch.setattr(search, "SCREEN_BLOCK", 5)  # 5 + 5 + 2 classes
    blocks = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(3))._screen(CLASSES)
    torch.testing.assert_close(blocks, whole, rtol=1e-5, atol=1e-6)


def test_the_naming_search_runs_on_the_shortlist_as_the_plain_search_would_on_those_classes():
    model, (x, _) = tiny_cnn(CLASSES), tiny_data(CLASSES, per_class=2)
    cfg = AWMConfig(targeted_norm=2.0, trigger_restarts=2, class_shortlist=3).resolve(64, len(x))
    got = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(5))
    # Independently: the screen draws its images first, then the plain loops run over the three easiest classes.
    generator = torch.Generator().manual_seed(5)
    rows = torch.randperm(len(x), generator=generator)[:SCREEN_IMAGES]
    screened = [reference_descent(model, x[rows], c, torch.zeros(x.shape[1:]), 2.0, SCREEN_STEPS)[1]
                for c in range(CLASSES)]
    shortlist = sorted(range(CLASSES), key=lambda c: screened[c])[:3]
    expected = reference_targeted_search(model, x, CLASSES, 2.0, 2, generator, shortlist=shortlist)
    for suspect, trigger in expected:
        got_trigger, _, got_suspect = got.recover()
        assert got_suspect == suspect and suspect in shortlist
        torch.testing.assert_close(got_trigger[0], trigger, rtol=0, atol=1e-5)


def test_the_planted_backdoor_is_named_through_a_shortlist_of_one():
    model, (x, y) = planted_backdoor_model(), planted_backdoor_data()
    result = awm_fast.purify(model, (x, y), targeted_norm=1.0, outer=1, backend="torch", mask_layers="linear",
                             one_shot_filter=False, class_shortlist=1, residual_outer=0)
    assert result.history[0]["suspect_class"] == BACKDOOR_CLASS
    # The residual check compares the suspect with a runner-up even here (the screen's next class). The extra epochs
    # cut the backdoor pixel, and it still reaches class 2 more easily than the runner-up reaches its class (2.8;
    # residual_outer=0, so that no residual epoch changes the figure this test is about).
    assert 1 < result.history[-1]["suspect_standout"] < float("inf")


@pytest.mark.parametrize("shortlist", [4, 10, None])
def test_no_screen_runs_with_at_most_shortlist_classes_and_nothing_changes(monkeypatch, shortlist):
    model, (x, y) = planted_backdoor_model(), planted_backdoor_data()  # 4 classes
    options = dict(targeted_norm=1.0, outer=2, backend="torch", mask_layers="linear", seed=2)
    unscreened = awm_fast.purify(model, (x, y), class_shortlist=None, **options)

    def no_screen(*args):
        raise AssertionError("the screen ran")

    monkeypatch.setattr(TargetedSearch, "_screen", no_screen)
    result = awm_fast.purify(model, (x, y), class_shortlist=shortlist, **options)
    assert torch.equal(result.trigger, unscreened.trigger)
    for name, mask in result.masks.items():
        assert torch.equal(mask, unscreened.masks[name])


def test_the_warp_check_screens_then_fits_the_shortlist_in_full(monkeypatch):
    x, _ = planted_backdoor_data()
    warping = ResamplingBackdoor().eval()
    fits: list[tuple[list[int], int, int]] = []  # (classes, steps, images) per call
    warp_losses = warp._warp_losses

    def logged(model, images, own, classes, cfg, steps):
        fits.append((classes.tolist(), steps, images.shape[0]))
        return warp_losses(model, images, own, classes, cfg, steps)

    monkeypatch.setattr(warp, "_warp_losses", logged)
    cfg = AWMConfig(class_shortlist=2).resolve(64, len(x))
    assert warp_suspect(warping, x, cfg, torch.Generator().manual_seed(0)) == BACKDOOR_CLASS
    assert fits[0] == ([0, 1, 2, 3], WARP_SCREEN_STEPS, len(x))  # 8 images, fewer than WARP_SCREEN_IMAGES
    classes, steps, images = fits[1]
    assert len(classes) == 2 and BACKDOOR_CLASS in classes and steps == WARP_STEPS and images == len(x)
    fits.clear()
    assert warp_suspect(warping, x, AWMConfig().resolve(64, len(x))) == BACKDOOR_CLASS
    assert fits == [([0, 1, 2, 3], WARP_STEPS, len(x))]  # 4 classes, shortlist 10: no screen


def test_purify_says_when_it_screens(capsys):
    model, (x, y) = tiny_cnn(CLASSES), tiny_data(CLASSES, per_class=1)
    awm_fast.purify(model, (x, y), outer=1, backend="torch", class_shortlist=3, verbose=True)
    assert "purify: 12 classes: the first epoch's searches screen every class and search the 3" in \
        capsys.readouterr().err
    awm_fast.purify(model, (x, y), outer=1, backend="torch", verbose=True)  # 12 > 10: the default screens too
    assert "search the 10 reached most easily" in capsys.readouterr().err
    awm_fast.purify(tiny_cnn(), tiny_data(), outer=1, backend="torch", verbose=True)  # 4 classes: no screen
    assert "screen" not in capsys.readouterr().err


def test_the_shortlist_is_validated():
    with pytest.raises(ValueError, match="class_shortlist must be an int >= 1"):
        AWMConfig(class_shortlist=0).validate()
