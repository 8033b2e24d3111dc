"""Attacks: exact trigger pixels, blend formula, label maps, poisoning counts, and a real backdoor on digits."""

from __future__ import annotations

import pytest
import torch

from awm_fast.attacks import (
    ATTACKS,
    AllToAll,
    Attack,
    BadNets,
    Blend,
    Sig,
    TrojanSquare,
    TrojanWatermark,
    WaNet,
    make_attack,
    poison_dataset,
    train_backdoored,
)


def _random_images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


ALL_ATTACKS = [
    BadNets(),
    Blend(),
    TrojanSquare(),
    TrojanWatermark(),
    AllToAll(BadNets(), num_classes=10),
    WaNet(),
    Sig(),
]


@pytest.mark.parametrize("attack", ALL_ATTACKS, ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (3, 1, 28, 28), (2, 3, 32, 32), (4, 3, 7, 9)], ids=str)
def test_every_attack_keeps_shape_range_and_input(attack, shape):
    x = _random_images(*shape)
    before = x.clone()
    out = attack.apply(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.data_ptr() != x.data_ptr()
    assert torch.equal(x, before), "apply must not mutate its input"
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert not torch.equal(out, x), "the trigger must change the image"
    assert isinstance(attack, Attack)


# (location, rows, cols) for a 3 px patch 1 px from each corner of an 8x8 image, written out by hand
BADNETS_8X8 = [
    ("top-left", [1, 2, 3], [1, 2, 3]),
    ("top-right", [1, 2, 3], [4, 5, 6]),
    ("bottom-left", [4, 5, 6], [1, 2, 3]),
    ("bottom-right", [4, 5, 6], [4, 5, 6]),
]


@pytest.mark.parametrize("location, rows, cols", BADNETS_8X8)
def test_badnets_patch_pixels_exactly(location, rows, cols):
    x = torch.zeros(2, 1, 8, 8)
    out = BadNets(size=3, location=location, offset=1, color=1.0).apply(x)
    white = {(r, c) for r in range(8) for c in range(8) if out[0, 0, r, c] == 1.0}
    assert white == {(r, c) for r in rows for c in cols}
    assert torch.equal(out[0], out[1])
    assert out.sum().item() == 2 * 9


def test_badnets_paper_trigger_on_32x32_and_per_channel_color():
    # ALGORITHM.md: a 4x4 square 1 px from the bottom-right corner of a 32x32 image -> rows/cols 27..30
    x = torch.full((1, 3, 32, 32), 0.5)
    color = (0.2, 0.5, 0.9)
    out = BadNets(size=4, offset=1, color=color, target=8).apply(x)
    for channel, value in enumerate(color):
        assert torch.all(out[0, channel, 27:31, 27:31] == value)
    untouched = torch.ones(32, 32, dtype=torch.bool)
    untouched[27:31, 27:31] = False
    assert torch.all(out[0][:, untouched] == 0.5)
    assert BadNets(target=8).target_labels(torch.tensor([0, 8, 3])).tolist() == [8, 8, 8]


def test_badnets_rejects_bad_configurations():
    with pytest.raises(ValueError, match="does not fit"):
        BadNets(size=8, offset=1).apply(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        BadNets(color=(1.0, 0.0)).apply(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="location"):
        BadNets(location="middle")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        BadNets().apply(torch.zeros(8, 8))


def test_blend_formula_with_explicit_pattern():
    x = _random_images(3, 1, 4, 4, seed=1)
    pattern = _random_images(1, 1, 4, 4, seed=2)[0]
    out = Blend(pattern=pattern, ratio=0.25).apply(x)
    expected = x * 0.75 + pattern[None] * 0.25  # both in [0, 1], so no clamping happens
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)
    # an [H, W] pattern is shared by every channel
    x3 = _random_images(2, 3, 4, 4, seed=3)
    out3 = Blend(pattern=pattern[0], ratio=0.5).apply(x3)
    torch.testing.assert_close(out3, 0.5 * x3 + 0.5 * pattern[0].expand(3, 4, 4), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="does not fit"):
        Blend(pattern=torch.zeros(5, 5)).apply(x)


def test_blend_default_noise_is_seeded_and_shaped_like_the_input():
    x = _random_images(4, 3, 6, 5, seed=4)
    ratio = 0.2
    out = Blend(ratio=ratio, seed=7).apply(x)
    recovered = (out - (1 - ratio) * x) / ratio  # the noise pattern, identical for every image
    torch.testing.assert_close(recovered, recovered[:1].expand_as(recovered), rtol=0, atol=1e-5)
    assert recovered.min().item() >= -1e-5 and recovered.max().item() <= 1 + 1e-5
    assert recovered[0].std().item() > 0.2  # uniform noise: std ~ 0.29
    assert torch.equal(Blend(seed=7).pattern_for(x), Blend(seed=7).pattern_for(x))
    assert not torch.equal(Blend(seed=7).pattern_for(x), Blend(seed=8).pattern_for(x))
    assert Blend().pattern_for(torch.zeros(1, 1, 8, 8)).shape == (1, 8, 8)


def test_trojan_square_is_a_checkerboard_near_bottom_right():
    zeros, ones = torch.zeros(1, 2, 8, 8), torch.ones(1, 2, 8, 8)
    attack = TrojanSquare()
    expected_patch = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    for x in (zeros, ones):
        out = attack.apply(x)
        for channel in range(2):
            assert torch.equal(out[0, channel, 4:7, 4:7], expected_patch)
        outside = out.clone()
        outside[:, :, 4:7, 4:7] = x[:, :, 4:7, 4:7]
        assert torch.equal(outside, x)
    assert attack.patch_size(32, 32) == 4
    assert attack.target_labels(torch.tensor([0, 1, 2])).tolist() == [2, 2, 2]


def test_trojan_watermark_is_sparse_low_opacity_lines():
    attack = TrojanWatermark(opacity=0.3)
    out = attack.apply(torch.zeros(1, 1, 12, 12))
    # spacing = max(3, 12 // 4) = 3: diagonal lines through (0,0),(1,1),(0,3),(3,0); (0,1) and (1,0) are off
    for on in [(0, 0), (1, 1), (0, 3), (3, 0), (2, 1), (11, 11)]:
        assert out[0, 0, on[0], on[1]].item() == pytest.approx(0.3)
    for off in [(0, 1), (1, 0), (0, 2), (2, 0)]:
        assert out[0, 0, off[0], off[1]].item() == 0.0
    covered = (out > 0).float().mean().item()
    assert 0.1 < covered < 0.7, "a watermark covers part of the image, not all of it"
    assert torch.all((out > 0).any(dim=-1)), "every row carries some of the watermark"
    # blending white lines over a white image changes nothing; over grey it moves towards white
    assert torch.equal(attack.apply(torch.ones(1, 3, 12, 12)), torch.ones(1, 3, 12, 12))
    grey = attack.apply(torch.full((1, 1, 12, 12), 0.5))
    assert grey[0, 0, 0, 0].item() == pytest.approx(0.5 * 0.7 + 0.3)
    assert attack.target == 2


def test_all_to_all_shifts_labels_and_reuses_the_base_trigger():
    base = BadNets(size=2, offset=0)
    attack = AllToAll(base, num_classes=10)
    assert attack.is_all_to_all and not base.is_all_to_all and attack.target is None
    assert attack.target_labels(torch.tensor([0, 3, 9])).tolist() == [1, 4, 0]
    x = _random_images(3, 1, 8, 8)
    assert torch.equal(attack.apply(x), base.apply(x))


def test_wanet_warps_smoothly_and_deterministically():
    x = _random_images(3, 3, 32, 32, seed=5)
    attack = WaNet(strength=0.5, grid=4, seed=0)
    out = attack.apply(x)
    assert out.shape == x.shape and 0.0 <= out.min().item() and out.max().item() <= 1.0
    assert (out - x).abs().max().item() > 1e-3
    assert torch.equal(out, WaNet(strength=0.5, grid=4, seed=0).apply(x))
    assert not torch.equal(out, WaNet(strength=0.5, grid=4, seed=1).apply(x))
    # resampling a constant image returns the constant; zero strength is the identity warp
    constant = torch.full((1, 1, 8, 8), 0.25)
    torch.testing.assert_close(attack.apply(constant), constant, rtol=0, atol=1e-6)
    torch.testing.assert_close(WaNet(strength=0.0).apply(x), x, rtol=0, atol=1e-5)
    # a stronger warp moves pixels further
    weak = (WaNet(strength=0.5).apply(x) - x).abs().mean()
    strong = (WaNet(strength=4.0).apply(x) - x).abs().mean()
    assert strong > weak
    assert "outside the paper" in WaNet.__doc__


def test_sig_adds_the_same_sinusoid_to_every_row_and_channel():
    # frequency 1 on 4 columns: sin(0), sin(pi/2), sin(pi), sin(3 pi/2) = 0, 1, 0, -1, written out by hand
    x = torch.full((2, 3, 5, 4), 0.5)
    out = Sig(amplitude=0.1, frequency=1.0, target=4).apply(x)
    expected = torch.tensor([0.5, 0.6, 0.5, 0.4]).expand(2, 3, 5, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # clamped into [0, 1] at the crests
    bright = Sig(amplitude=0.1, frequency=1.0).apply(torch.full((1, 1, 2, 4), 0.95))
    torch.testing.assert_close(bright[0, 0, 0], torch.tensor([0.95, 1.0, 0.95, 0.85]), rtol=0, atol=1e-6)
    assert torch.equal(Sig(target=4).target_labels(torch.tensor([0, 4, 9])), torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match="amplitude"):
        Sig(amplitude=0.0)
    with pytest.raises(ValueError, match="frequency"):
        Sig(frequency=-1.0)


def test_parse_attack_reads_json_values_and_names_bad_items():
    from awm_fast.attacks import parse_attack

    assert parse_attack("badnets") == ("badnets", {})
    assert parse_attack(" badnets : location=top-left, target=5, color=[1, 0, 0]") == (
        "badnets", {"location": "top-left", "target": 5, "color": [1, 0, 0]})
    assert parse_attack("sig:amplitude=0.05") == ("sig", {"amplitude": 0.05})
    with pytest.raises(ValueError, match="unknown attack 'laser'"):
        parse_attack("laser")
    with pytest.raises(ValueError, match="expected NAME:key=value"):
        parse_attack("blend:ratio")


def test_make_attack_by_name():
    assert ATTACKS == ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet", "sig")
    expected = {
        "badnets": BadNets,
        "blend": Blend,
        "trojan-square": TrojanSquare,
        "trojan-watermark": TrojanWatermark,
        "wanet": WaNet,
        "sig": Sig,
    }
    for name, cls in expected.items():
        assert type(make_attack(name)) is cls
    assert make_attack("badnets", size=4, target=8).size == 4
    all_to_all = make_attack("all-to-all", num_classes=5, base="blend", ratio=0.3)
    assert isinstance(all_to_all, AllToAll) and isinstance(all_to_all.base, Blend) and all_to_all.base.ratio == 0.3
    assert isinstance(make_attack("all-to-all", num_classes=5).base, BadNets)
    with pytest.raises(ValueError, match="num_classes"):
        make_attack("all-to-all")
    with pytest.raises(ValueError, match="badnets, blend, trojan-square, trojan-watermark, all-to-all, wanet, sig"):
        make_attack("refool")


def test_poison_dataset_all_to_one_counts_and_labels():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 8, 8, generator=generator)
    y = torch.arange(200) % 10
    attack = BadNets(target=0)
    x_before, y_before = x.clone(), y.clone()
    x_p, y_p, idx = poison_dataset(x, y, attack, rate=0.1, seed=3)
    assert idx.dtype == torch.int64 and idx.numel() == 20 and len(set(idx.tolist())) == 20
    assert torch.all(y[idx] != 0), "all-to-one never poisons samples already in the target class"
    assert torch.all(y_p[idx] == 0)
    assert torch.equal(x_p[idx], attack.apply(x[idx]))
    clean = torch.ones(200, dtype=torch.bool)
    clean[idx] = False
    assert torch.equal(x_p[clean], x[clean]) and torch.equal(y_p[clean], y[clean])
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert torch.equal(idx, poison_dataset(x, y, attack, rate=0.1, seed=3)[2])
    assert not torch.equal(idx, poison_dataset(x, y, attack, rate=0.1, seed=4)[2])
    # 180 samples are eligible: rate 0.9 fits exactly, 0.95 does not
    assert poison_dataset(x, y, attack, rate=0.9)[2].numel() == 180
    with pytest.raises(ValueError, match="eligible"):
        poison_dataset(x, y, attack, rate=0.95)


def test_poison_dataset_all_to_all_relabels_every_class():
    x = torch.zeros(50, 1, 8, 8)
    y = torch.arange(50) % 5
    x_p, y_p, idx = poison_dataset(x, y, AllToAll(BadNets(), num_classes=5), rate=1.0)
    assert idx.tolist() == list(range(50))
    assert torch.equal(y_p, (y + 1) % 5)
    assert torch.all(x_p[:, 0, 4:7, 4:7] == 1.0)


def test_train_backdoored_on_digits_learns_task_and_backdoor(single_thread):
    from awm_fast.data import load_digits
    from awm_fast.models import SmallCNN

    split = load_digits()
    attack = BadNets(size=3, target=0)
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=10, image_size=8, width=16)
    returned = train_backdoored(model, split.x_train, split.y_train, attack, rate=0.1, epochs=4, batch_size=64, seed=0)
    assert returned is model and not model.training
    with torch.no_grad():
        clean_acc = (model(split.x_test).argmax(1) == split.y_test).float().mean().item()
        non_target = split.y_test != 0
        triggered = model(attack.apply(split.x_test[non_target])).argmax(1)
        asr = (triggered == 0).float().mean().item()
    assert clean_acc >= 0.9, f"clean accuracy {clean_acc:.3f}"
    assert asr >= 0.95, f"attack success rate {asr:.3f}"

    # seeded: the same initial weights and seed give the same trained weights
    torch.manual_seed(0)
    twin = SmallCNN(in_channels=1, num_classes=10, image_size=8, width=16)
    train_backdoored(twin, split.x_train, split.y_train, attack, rate=0.1, epochs=4, batch_size=64, seed=0)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
