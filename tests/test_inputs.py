"""Data intake and the authors' one-shot augmentation."""

import pytest
import torch
import torch.nn.functional as F

from awm_fast.inputs import _random_crop_flip_affines, as_tensors, augment_one_shot, is_one_shot


def test_augment_one_shot_keeps_originals_first_and_repeats_labels():
    x, y = torch.rand(3, 2, 8, 8), torch.tensor([2, 0, 1])
    xa, ya = augment_one_shot(x, y, copies=9, generator=torch.Generator().manual_seed(0))
    assert xa.shape == (30, 2, 8, 8) and ya.tolist() == [2, 0, 1] + [2] * 9 + [0] * 9 + [1] * 9
    assert torch.equal(xa[:3], x)
    assert xa.min() >= x.min() - 1e-6 and xa.max() <= x.max() + 1e-6  # bilinear: a convex combination
    assert not torch.allclose(xa[3:12], x[0].expand(9, -1, -1, -1))


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


def test_is_one_shot():
    assert is_one_shot(torch.tensor([3, 1, 0]))
    assert not is_one_shot(torch.tensor([3, 1, 3]))
