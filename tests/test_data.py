"""Loaders: IDX parsing against a tiny writer, shapes/dtypes/ranges, missing-data errors, few-shot subsets."""

from __future__ import annotations

import csv
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from awm_fast.data import (
    DATASETS,
    DEFAULT_FASHION_MNIST_ROOT,
    Split,
    few_shot_subset,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_gtsrb,
    read_idx,
    read_ppm,
    without_indices,
)

# --------------------------------------------------------------------------------------------------
# a tiny IDX writer, written independently of the parser from the format description
# --------------------------------------------------------------------------------------------------

_TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    code = _TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = array.astype(array.dtype.newbyteorder(">")).tobytes(order="C")
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(header + payload)
    return path


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5),
        np.array([7, -3, 100000, 0], dtype=np.int32),
        np.array([[1.5, -2.25], [3.0e10, 0.0]], dtype=np.float32),
        np.array([-1, 2, -3], dtype=np.int16),
    ],
    ids=["uint8-3d", "int32-1d", "float32-2d", "int16-1d"],
)
def test_read_idx_round_trips_every_dtype(tmp_path, array, compress):
    path = write_idx(tmp_path / ("a.idx.gz" if compress else "a.idx"), array, compress)
    parsed = read_idx(path)
    assert parsed.shape == array.shape
    assert parsed.dtype.kind == array.dtype.kind and parsed.dtype.itemsize == array.dtype.itemsize
    np.testing.assert_array_equal(parsed, array)


def test_read_idx_rejects_bad_magic_and_truncated_payload(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad_magic)
    truncated = tmp_path / "short"
    truncated.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x00")
    with pytest.raises(ValueError, match="payload"):
        read_idx(truncated)
    unknown_type = tmp_path / "type"
    unknown_type.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="type code"):
        read_idx(unknown_type)


def _write_fake_fashion(root: Path, compress: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 6), ("t10k", 4)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # make both ends of the range present
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist_on_synthetic_idx_files(tmp_path, compress):
    arrays = _write_fake_fashion(tmp_path, compress)
    split = load_fashion_mnist(tmp_path)
    assert isinstance(split, Split) and split.name == "fashion-mnist" and split.num_classes == 10
    parts = ((split.x_train, split.y_train, arrays["train"]), (split.x_test, split.y_test, arrays["t10k"]))
    for x, y, (images, labels) in parts:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (images.shape[0], 1, 28, 28)
        np.testing.assert_allclose(x[:, 0].numpy(), images.astype(np.float64) / 255.0, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(y.numpy(), labels.astype(np.int64))
    assert split.x_train.min().item() == 0.0 and split.x_train.max().item() == 1.0


def test_load_fashion_mnist_missing_names_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path / "nowhere")
    assert "apt-get install" in str(info.value)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)  # the directory exists but holds no IDX file


@pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_ROOT.is_dir(),
    reason=f"{DEFAULT_FASHION_MNIST_ROOT} absent: install the Debian package dataset-fashion-mnist (CI does)",
)
def test_load_fashion_mnist_real_files():
    split = load_fashion_mnist()
    assert split.x_train.shape == (60000, 1, 28, 28) and split.x_test.shape == (10000, 1, 28, 28)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.x_train.min().item() == 0.0 and split.x_train.max().item() == 1.0
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class
    assert split.y_train.bincount().tolist() == [6000] * 10
    assert split.y_test.bincount().tolist() == [1000] * 10


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


def test_load_digits_shapes_range_and_stratification():
    from sklearn.datasets import load_digits as sk_load_digits

    split = load_digits(test_fraction=0.3, seed=0)
    assert split.name == "digits" and split.num_classes == 10
    assert split.x_train.shape[1:] == (1, 8, 8) and split.x_test.shape[1:] == (1, 8, 8)
    assert split.x_train.shape[0] + split.x_test.shape[0] == 1797
    assert split.x_test.shape[0] == 540  # ceil(0.3 * 1797), scikit-learn's rounding of the test size
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.x_train.min().item() == 0.0 and split.x_train.max().item() == 1.0
    # every pixel is a multiple of 1/16
    scaled = split.x_train * 16
    assert torch.equal(scaled, scaled.round())
    # stratified: each class's test share is within one sample of 30 %
    totals = np.bincount(sk_load_digits().target, minlength=10)
    test_counts = split.y_test.bincount(minlength=10).numpy()
    assert np.all(np.abs(test_counts - 0.3 * totals) <= 1.0)
    # the split is a partition of the bundled data: pixel sums agree
    all_pixels = torch.cat([split.x_train, split.x_test]).sum().item() * 16
    assert all_pixels == pytest.approx(float(sk_load_digits().images.sum()))


def test_load_digits_is_deterministic_per_seed():
    first, again, other = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    assert not torch.equal(first.x_train, other.x_train)
    with pytest.raises(ValueError):
        load_digits(test_fraction=1.0)


# --------------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------------


def _write_fake_cifar(batch_dir: Path, per_batch: int = 3) -> list[np.ndarray]:
    batch_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    datas = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(batch_dir / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, handle)
        datas.append((data, labels))
    return datas


@pytest.mark.parametrize("give_parent", [False, True])
def test_load_cifar10_reads_pickle_batches(tmp_path, give_parent):
    batches = _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    split = load_cifar10(tmp_path if give_parent else tmp_path / "cifar-10-batches-py")
    assert split.x_train.shape == (15, 3, 32, 32) and split.x_test.shape == (3, 3, 32, 32)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    data, labels = batches[0]
    # rows are channel-major: 1024 red values, then green, then blue, each row-major over 32x32
    red_row1_col2, green_origin, blue_last = data[0, 1 * 32 + 2], data[0, 1024], data[0, 3071]
    assert split.x_train[0, 0, 1, 2].item() == pytest.approx(red_row1_col2 / 255.0)
    assert split.x_train[0, 1, 0, 0].item() == pytest.approx(green_origin / 255.0)
    assert split.x_train[0, 2, 31, 31].item() == pytest.approx(blue_last / 255.0)
    assert split.y_train[:3].tolist() == labels
    assert split.y_test.tolist() == batches[-1][1]


def test_load_cifar10_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_cifar10(tmp_path)


# --------------------------------------------------------------------------------------------------
# GTSRB
# --------------------------------------------------------------------------------------------------


def test_load_gtsrb_npz_uint8_and_float(tmp_path):
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    x_test = rng.random(size=(2, 40, 48, 3)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x_train, y=np.array([0, 5, 42, 7]))
    np.savez(tmp_path / "test.npz", x=x_test, y=np.array([1, 2]))
    split = load_gtsrb(tmp_path, image_size=32)
    assert split.num_classes == 43 and split.name == "gtsrb"
    assert split.x_train.shape == (4, 3, 32, 32) and split.x_test.shape == (2, 3, 32, 32)
    assert split.y_train.dtype == torch.int64 and split.y_train.tolist() == [0, 5, 42, 7]
    # already at 32x32: exact values, HWC -> CHW
    np.testing.assert_allclose(split.x_train.permute(0, 2, 3, 1).numpy(), x_train / 255.0, atol=1e-7)
    # resized test images stay in [0, 1]
    assert 0.0 <= split.x_test.min().item() and split.x_test.max().item() <= 1.0

    np.savez(tmp_path / "test.npz", x=x_test * 255.0, y=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_gtsrb(tmp_path)


def write_ppm(path: Path, pixels: np.ndarray, comment: bool = False) -> None:
    """Binary PPM (P6) writer, from the netpbm format description."""
    height, width, _ = pixels.shape
    header = b"P6\n" + (b"# made by a test\n" if comment else b"") + f"{width} {height}\n255\n".encode()
    path.write_bytes(header + np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())


def test_read_ppm_round_trips(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    pixels[0, 0] = (10, 32, 13)  # whitespace byte values right after the header must not confuse the parser
    write_ppm(tmp_path / "a.ppm", pixels, comment=True)
    np.testing.assert_array_equal(read_ppm(tmp_path / "a.ppm"), pixels)
    (tmp_path / "b.ppm").write_bytes(b"P3\n1 1\n255\n0 0 0\n")
    with pytest.raises(ValueError, match="P6"):
        read_ppm(tmp_path / "b.ppm")


def _write_ppm_with_roi(path: Path, size: tuple[int, int], roi: tuple[int, int, int, int]) -> None:
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 2] = 255  # blue background outside the ROI
    x1, y1, x2, y2 = roi
    pixels[y1 : y2 + 1, x1 : x2 + 1] = (255, 0, 0)  # red sign inside the (inclusive) ROI
    write_ppm(path, pixels)


def test_load_gtsrb_official_layout_crops_roi(tmp_path):
    header = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
    roi = (5, 6, 24, 25)
    for class_id in (0, 1):
        class_dir = tmp_path / "Final_Training" / "Images" / f"{class_id:05d}"
        class_dir.mkdir(parents=True)
        rows = []
        for i in range(2):
            name = f"{i:05d}_00000.ppm"
            _write_ppm_with_roi(class_dir / name, (30, 31), roi)
            rows.append([name, 30, 31, *roi, class_id])
        with open(class_dir / f"GT-{class_id:05d}.csv", "w", newline="") as handle:
            csv.writer(handle, delimiter=";").writerows([header, *rows])
    test_dir = tmp_path / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    _write_ppm_with_roi(test_dir / "00000.ppm", (30, 31), roi)
    with open(test_dir / "GT-final_test.csv", "w", newline="") as handle:
        csv.writer(handle, delimiter=";").writerows([header, ["00000.ppm", 30, 31, *roi, 42]])

    split = load_gtsrb(tmp_path, image_size=16)
    assert split.x_train.shape == (4, 3, 16, 16) and split.y_train.tolist() == [0, 0, 1, 1]
    assert split.x_test.shape == (1, 3, 16, 16) and split.y_test.tolist() == [42]
    assert split.x_train.dtype == torch.float32
    # cropped to the ROI: only the red sign remains, no blue background
    assert torch.allclose(split.x_train[:, 0], torch.ones(4, 16, 16))
    assert torch.allclose(split.x_train[:, 2], torch.zeros(4, 16, 16))
    assert torch.allclose(split.x_test[:, 0], torch.ones(1, 16, 16))


def test_load_gtsrb_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.npz"):
        load_gtsrb(tmp_path)


# --------------------------------------------------------------------------------------------------
# dispatch, few-shot subsets
# --------------------------------------------------------------------------------------------------


def test_load_dataset_dispatch(tmp_path):
    assert DATASETS == ("digits", "fashion-mnist", "cifar10", "gtsrb")
    assert load_dataset("digits").name == "digits"
    _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    assert load_dataset("cifar10", root=tmp_path).x_train.shape == (15, 3, 32, 32)
    (tmp_path / "fm").mkdir()
    _write_fake_fashion(tmp_path / "fm", compress=True)
    assert load_dataset("fashion-mnist", root=tmp_path / "fm").x_train.shape == (6, 1, 28, 28)
    with pytest.raises(ValueError, match="digits, fashion-mnist, cifar10, gtsrb"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="root"):
        load_dataset("gtsrb")


def test_few_shot_subset_picks_per_class_deterministically():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 2, 2])
    x = torch.arange(12, dtype=torch.float32).view(12, 1, 1, 1)
    x_few, y_few, idx = few_shot_subset(x, y, per_class=2, seed=3)
    assert idx.dtype == torch.int64 and idx.shape == (6,)
    assert y_few.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(y[idx], y_few) and torch.equal(x[idx], x_few)
    assert len(set(idx.tolist())) == 6
    again = few_shot_subset(x, y, per_class=2, seed=3)[2]
    assert torch.equal(idx, again)
    # class 1 has exactly 3 members, so picking all of them is the only choice
    assert sorted(few_shot_subset(x, y, per_class=3, seed=0)[2][3:6].tolist()) == [1, 4, 7]
    seeds_differ = any(not torch.equal(idx, few_shot_subset(x, y, 2, seed=s)[2]) for s in range(4, 10))
    assert seeds_differ


def test_few_shot_subset_errors():
    y = torch.tensor([0, 0, 1])
    x = torch.zeros(3, 1, 2, 2)
    with pytest.raises(ValueError, match="class 1 has 1"):
        few_shot_subset(x, y, per_class=2)
    with pytest.raises(ValueError, match="class 2 has 0"):
        few_shot_subset(x, y, per_class=1, num_classes=3)
    with pytest.raises(ValueError):
        few_shot_subset(x, y, per_class=0)


def test_without_indices_drops_exactly_the_chosen():
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1)
    y = torch.arange(6)
    x_rest, y_rest = without_indices(x, y, torch.tensor([4, 1]))
    assert y_rest.tolist() == [0, 2, 3, 5] and x_rest.flatten().tolist() == [0.0, 2.0, 3.0, 5.0]
