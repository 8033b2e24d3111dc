"""Data intake and the authors' one-shot augmentation."""

import pytest
import torch
import torch.nn.functional as F

from awm_fast.inputs import (
    CONSISTENT_POOL,
    _random_crop_flip_affines,
    as_tensors,
    augment_one_shot,
    augment_one_shot_consistent,
    copies_per_image,
    is_one_shot,
)


def test_augment_one_shot_keeps_originals_first_and_repeats_labels():
    x, y = torch.rand(3, 2, 8, 8), torch.tensor([2, 0, 1])
    xa, ya = augment_one_shot(x, y, copies=9, generator=torch.Generator().manual_seed(0))
    assert xa.shape == (30, 2, 8, 8) and ya.tolist() == [2, 0, 1] + [2] * 9 + [0] * 9 + [1] * 9
    assert torch.equal(xa[:3], x)
    assert xa.min() >= x.min() - 1e-6 and xa.max() <= x.max() + 1e-6  # bilinear: a convex combination
    assert not torch.allclose(xa[3:12], x[0].expand(9, -1, -1, -1))


class BrightnessClassifier(torch.nn.Module):
    """Labels an image by its mean brightness: class floor(4·mean) of 4 (a rule the test can recompute)."""

    def forward(self, x):
        return F.one_hot((x.mean(dim=(1, 2, 3)) * 4).clamp(0, 3).long(), 4).float()


@pytest.mark.parametrize("suspect", [None, 3])
def test_consistent_augmentation_keeps_exactly_the_first_label_consistent_copies(suspect):
    generator_seed, copies = 3, 4
    # Image i has mean ≈ i/4 + 0.215, near the top of its class's brightness range, and a left-to-right ramp:
    # crops of its brighter side fall in class i + 1.
    ramp = torch.linspace(-0.2, 0.2, 8).view(1, 1, 1, 8)
    x = (torch.rand(4, 1, 8, 8) * 0.1 + torch.arange(4).view(4, 1, 1, 1) * 0.25 + 0.165 + ramp).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 3])
    model = BrightnessClassifier()
    xa, ya = augment_one_shot_consistent(model, x, y, copies, torch.Generator().manual_seed(generator_seed),
                                         suspect=suspect)
    # Independent reference: the same candidates, filtered one by one in a plain loop.
    candidates, labels = augment_one_shot(x, y, copies * CONSISTENT_POOL, torch.Generator().manual_seed(generator_seed))
    expected_x, expected_y = [x], [y]
    for source in range(4):
        kept = 0
        for j in range(copies * CONSISTENT_POOL):
            row = 4 + source * copies * CONSISTENT_POOL + j
            predicted = int(model(candidates[row:row + 1]).argmax())
            if kept < copies and predicted in (int(labels[row]), suspect):
                expected_x.append(candidates[row:row + 1]), expected_y.append(labels[row:row + 1])
                kept += 1
    torch.testing.assert_close(xa, torch.cat(expected_x), rtol=0, atol=0)
    assert ya.tolist() == torch.cat(expected_y).tolist()
    predicted = model(xa).argmax(dim=1)
    assert torch.equal(xa[:4], x) and ((predicted == ya) | (predicted == suspect)).all()
    if suspect is not None:  # some copies of the class-2 image land in the suspect class 3 and are kept
        assert ((predicted == suspect) & (ya != suspect)).any()
    assert 4 < len(xa) <= 4 * (1 + copies) and (torch.bincount(ya) <= 1 + copies).all()


class RampBackdoor(torch.nn.Module):
    """Scores class c of 4 by -|4·mean brightness - (c + 0.5)|, plus a backdoor: a left-to-right ramp steeper than
    0.02 per column adds 10 to class 3. Under the backdoor the runner-up is the brightness class (rules the test
    can recompute)."""

    def forward(self, x):
        level = x.mean(dim=(1, 2, 3)).unsqueeze(1) * 4
        scores = -(level - (torch.arange(4) + 0.5)).abs()
        slope = (x[..., -1] - x[..., 0]).mean(dim=(1, 2)) / (x.shape[-1] - 1)
        return scores + 10 * (slope > 0.02).float().unsqueeze(1) * F.one_hot(torch.tensor(3), 4).float()


def test_suspect_copies_need_their_own_label_as_runner_up_when_asked():
    copies, suspect = 4, 3
    ramp = torch.linspace(-0.2, 0.2, 8).view(1, 1, 1, 8)
    x = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.1
         + torch.arange(4).view(4, 1, 1, 1) * 0.25 + 0.165 + ramp).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 3])
    model = RampBackdoor()
    strict = augment_one_shot_consistent(model, x, y, copies, torch.Generator().manual_seed(3), suspect=suspect,
                                         suspect_runner_up=True)
    loose = augment_one_shot_consistent(model, x, y, copies, torch.Generator().manual_seed(3), suspect=suspect)
    # Independent reference: the same candidates, each scored and ranked by hand.
    candidates, labels = augment_one_shot(x, y, copies * CONSISTENT_POOL, torch.Generator().manual_seed(3))
    expected_x, expected_y = [x], [y]
    dropped = 0  # candidates sent to the suspect whose runner-up is another class than their own
    for source in range(4):
        kept = 0
        for j in range(copies * CONSISTENT_POOL):
            row = 4 + source * copies * CONSISTENT_POOL + j
            scores = model(candidates[row:row + 1])[0].tolist()
            ranked = sorted(range(4), key=lambda c: -scores[c])
            label = int(labels[row])
            runner_up = [c for c in ranked if c != suspect][0]
            dropped += ranked[0] == suspect != label and runner_up != label
            if kept < copies and (ranked[0] == label or (ranked[0] == suspect and runner_up == label)):
                expected_x.append(candidates[row:row + 1]), expected_y.append(labels[row:row + 1])
                kept += 1
    torch.testing.assert_close(strict[0], torch.cat(expected_x), rtol=0, atol=0)
    assert strict[1].tolist() == torch.cat(expected_y).tolist()
    sent = (model(strict[0]).argmax(1) == suspect) & (strict[1] != suspect)
    assert dropped > 0 and sent.any()  # the rule has copies to drop and copies to keep here
    assert not torch.equal(strict[0], loose[0])  # without the rule other copies fill the pool's places


def test_consistent_augmentation_keeps_only_the_originals_when_no_copy_passes():
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    always_class_3 = lambda images: F.one_hot(torch.full((len(images),), 3), 4).float()  # noqa: E731
    xa, ya = augment_one_shot_consistent(always_class_3, x, y, copies=9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xa, x) and torch.equal(ya, y)


def test_crop_affine_is_the_identity_for_a_full_unflipped_crop_and_mirrors_when_flipped():
    x = torch.rand(1, 1, 6, 6)
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    out = F.grid_sample(x, F.affine_grid(identity, [1, 1, 6, 6], align_corners=False), align_corners=False)
    torch.testing.assert_close(out, x)
    flipped = torch.tensor([[[-1.0, 0, 0], [0, 1.0, 0]]])
    out = F.grid_sample(x, F.affine_grid(flipped, [1, 1, 6, 6], align_corners=False), align_corners=False)
    torch.testing.assert_close(out, x.flip(-1))


def test_random_crops_stay_inside_the_image_with_torchvisions_scale_range():
    thetas = _random_crop_flip_affines(500, 32, 32, torch.Generator().manual_seed(1))
    width, height = thetas[:, 0, 0].abs(), thetas[:, 1, 1]
    area = width * height
    assert area.min() >= 0.08 - 0.02 and area.max() <= 1.0  # rounding to whole pixels
    assert (thetas[:, 0, 2].abs() <= 1 - width + 1e-9).all() and (thetas[:, 1, 2].abs() <= 1 - height + 1e-9).all()
    flips = (thetas[:, 0, 0] < 0).float().mean()
    assert 0.4 < flips < 0.6


def test_as_tensors_accepts_column_labels_and_rejects_mismatches():
    x, y = as_tensors((torch.rand(4, 3), torch.tensor([[0], [1], [2], [3]])))
    assert y.shape == (4,) and y.dtype == torch.int64
    with pytest.raises(ValueError, match="4 samples but y has 3"):
        as_tensors((torch.rand(4, 3), torch.arange(3)))
    with pytest.raises(TypeError, match="floating-point"):
        as_tensors((torch.ones(4, 3, dtype=torch.int64), torch.arange(4)))
    with pytest.raises(ValueError, match=">= 0"):
        as_tensors((torch.rand(4, 3), torch.tensor([0, 1, -1, 2])))


def test_copies_per_image_gives_every_class_about_the_one_shot_count():
    assert copies_per_image(torch.tensor([0, 1, 2]), 9) == 9  # one image per class: the authors' 9
    assert copies_per_image(torch.tensor([0, 0, 0, 1]), 9) == 3  # the largest class has 3: 3 copies each
    assert copies_per_image(torch.tensor([0, 0, 1, 1]), 9) == 5  # ceil(9 / 2)
    assert copies_per_image(torch.arange(10).repeat(50), 9) == 1  # 50 per class: at least one copy per image
    assert copies_per_image(torch.tensor([0, 1]), 0) == 0  # augmentation off


def test_is_one_shot():
    assert is_one_shot(torch.tensor([3, 1, 0]))
    assert not is_one_shot(torch.tensor([3, 1, 3]))
