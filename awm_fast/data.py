"""Dataset loaders that never download.

Every loader returns a :class:`Split` whose images are ``torch.float32`` in ``[0, 1]`` with layout
``[N, C, H, W]`` and whose labels are ``torch.int64`` of shape ``[N]``.

- ``digits``: scikit-learn's bundled 8x8 digits (embedded in the wheel, always available).
- ``fashion-mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` package.
- ``cifar10`` / ``gtsrb``: local copies the user already has, passed as ``root``.

Nothing here touches the network: a missing dataset is a clear ``FileNotFoundError`` that says where
the files were looked for and how to obtain them.
"""

from __future__ import annotations

import csv
import gzip
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DATASETS",
    "DEFAULT_FASHION_MNIST_ROOT",
    "Split",
    "few_shot_subset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_gtsrb",
    "read_idx",
    "read_ppm",
    "without_indices",
]

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("digits", "fashion-mnist", "cifar10", "gtsrb")

_GTSRB_NUM_CLASSES = 43

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class Split(NamedTuple):
    """A train/test split.

    x_train: float32 [N_train, C, H, W] in [0, 1]; y_train: int64 [N_train].
    x_test:  float32 [N_test, C, H, W] in [0, 1];  y_test:  int64 [N_test].
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> Split:
    """scikit-learn's bundled digits: 1,797 images [N, 1, 8, 8], values 0..16 rescaled by 1/16.

    The split is stratified by class and deterministic for a given ``seed``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = _sk_load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return Split(
        torch.from_numpy(np.ascontiguousarray(x_train)),
        torch.from_numpy(np.ascontiguousarray(y_train)),
        torch.from_numpy(np.ascontiguousarray(x_test)),
        torch.from_numpy(np.ascontiguousarray(y_test)),
        10,
        "digits",
    )


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX)
# --------------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (gzipped when the name ends in ``.gz``) into a native-endian numpy array.

    Layout: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
    dimension, then the data in C order (big-endian for multi-byte types).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    dtype = _IDX_DTYPES[type_code]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(f"{path}: IDX payload is {len(raw) - header_size} bytes, dims {dims} need {expected}")
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}. Install the Debian package "
        f"dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist) or pass root= pointing at a "
        f"directory holding the four IDX files. awm_fast never downloads data."
    )


def load_fashion_mnist(root: str | Path = DEFAULT_FASHION_MNIST_ROOT) -> Split:
    """Fashion-MNIST from its IDX files: train [60000, 1, 28, 28], test [10000, 1, 28, 28], 10 classes."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST directory {root} does not exist. Install the Debian package dataset-fashion-mnist "
            f"(sudo apt-get install dataset-fashion-mnist) or pass root= to a directory with the IDX files. "
            f"awm_fast never downloads data."
        )
    arrays = {}
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(root, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(root, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"Fashion-MNIST {split}: inconsistent shapes {images.shape} and {labels.shape}")
        arrays[split] = (_uint8_nhw_to_tensor(images), torch.from_numpy(labels.astype(np.int64)))
    return Split(*arrays["train"], *arrays["t10k"], 10, "fashion-mnist")


def _uint8_nhw_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [0, 1]."""
    return torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)


# --------------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)
# --------------------------------------------------------------------------------------------------


def load_cifar10(root: str | Path) -> Split:
    """CIFAR-10 from the "python version" pickle batches: train [50000, 3, 32, 32], test [10000, 3, 32, 32].

    ``root`` is either the ``cifar-10-batches-py`` directory itself or its parent. Each batch is a pickle
    dict with ``b"data"`` (uint8 [n, 3072], channel-major) and ``b"labels"``.
    """
    root = Path(root)
    batch_dir = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [name for name in [*train_names, "test_batch"] if not (batch_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batches {missing} not found in {batch_dir}. Pass root= pointing at an extracted copy of "
            f"cifar-10-python.tar.gz (the cifar-10-batches-py directory or its parent). awm_fast never downloads data."
        )
    x_train, y_train = zip(*(_read_cifar_batch(batch_dir / name) for name in train_names), strict=True)
    x_test, y_test = _read_cifar_batch(batch_dir / "test_batch")
    return Split(torch.cat(x_train), torch.cat(y_train), x_test, y_test, 10, "cifar10")


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return torch.from_numpy(data).to(torch.float32).div_(255.0), torch.from_numpy(labels)


# --------------------------------------------------------------------------------------------------
# GTSRB
# --------------------------------------------------------------------------------------------------


def load_gtsrb(root: str | Path, image_size: int = 32) -> Split:
    """GTSRB (43 classes) from a local copy, resized to [N, 3, image_size, image_size].

    Two layouts are recognised, tried in this order:

    1. ``root/train.npz`` and ``root/test.npz``, each with arrays ``x`` ([N, H, W, 3], uint8 in 0..255 or
       float in [0, 1]) and ``y`` (integer labels).
    2. The official release: ``root/Final_Training/Images/<class:05d>/*.ppm`` with one
       ``GT-<class:05d>.csv`` per class directory, and the test images ``root/Final_Test/Images/*.ppm``
       with ``GT-final_test.csv`` (the separately distributed test labels) in ``root/Final_Test/Images``
       or ``root``. Each image is cropped to its ROI from the CSV, then resized (bilinear, antialiased);
       the .ppm files are parsed directly (binary P6), no image library needed.
    """
    root = Path(root)
    if (root / "train.npz").is_file() and (root / "test.npz").is_file():
        x_train, y_train = _read_gtsrb_npz(root / "train.npz", image_size)
        x_test, y_test = _read_gtsrb_npz(root / "test.npz", image_size)
    elif (root / "Final_Training" / "Images").is_dir():
        x_train, y_train = _read_gtsrb_official_train(root / "Final_Training" / "Images", image_size)
        x_test, y_test = _read_gtsrb_official_test(root, image_size)
    else:
        raise FileNotFoundError(
            f"No GTSRB copy found in {root}: expected train.npz + test.npz (arrays x [N,H,W,3], y) or the "
            f"official Final_Training/Images/<class>/*.ppm layout. awm_fast never downloads data."
        )
    return Split(x_train, y_train, x_test, y_test, _GTSRB_NUM_CLASSES, "gtsrb")


def _resize_nchw(images: torch.Tensor, image_size: int) -> torch.Tensor:
    if images.shape[-2:] == (image_size, image_size):
        return images
    # antialias so that downscaling large sign crops does not alias into high-frequency noise
    resized = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0)


def _read_gtsrb_npz(path: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as archive:
        if "x" not in archive or "y" not in archive:
            raise ValueError(f"{path}: expected arrays 'x' and 'y', found {sorted(archive.files)}")
        x, y = archive["x"], archive["y"]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{path}: x must be [N, H, W, 3], got {x.shape}")
    if x.dtype == np.uint8:
        images = torch.from_numpy(x).to(torch.float32).div_(255.0)
    elif np.issubdtype(x.dtype, np.floating):
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ValueError(f"{path}: float images must lie in [0, 1] (got [{x.min()}, {x.max()}])")
        images = torch.from_numpy(x.astype(np.float32))
    else:
        raise ValueError(f"{path}: x must be uint8 or float, got {x.dtype}")
    images = _resize_nchw(images.permute(0, 3, 1, 2).contiguous(), image_size)
    return images, torch.from_numpy(np.asarray(y).astype(np.int64).reshape(-1))


def read_ppm(path: str | Path) -> np.ndarray:
    """Parse a binary PPM (P6, maxval <= 255, as in the GTSRB release) into uint8 [H, W, 3]."""
    raw = Path(path).read_bytes()
    fields: list[bytes] = []
    position = 0
    # header: magic, width, height, maxval, separated by whitespace, with optional '#' comments
    while len(fields) < 4:
        while position < len(raw) and raw[position : position + 1].isspace():
            position += 1
        if raw[position : position + 1] == b"#":
            position = raw.index(b"\n", position) + 1
            continue
        start = position
        while position < len(raw) and not raw[position : position + 1].isspace():
            position += 1
        if start == position:
            raise ValueError(f"{path}: truncated PPM header")
        fields.append(raw[start:position])
    position += 1  # exactly one whitespace byte separates the header from the pixels
    if fields[0] != b"P6":
        raise ValueError(f"{path}: only binary PPM (P6) is supported, got {fields[0]!r}")
    width, height, maxval = (int(f) for f in fields[1:])
    if maxval > 255:
        raise ValueError(f"{path}: 16-bit PPM (maxval {maxval}) is not supported")
    pixels = np.frombuffer(raw, dtype=np.uint8, count=width * height * 3, offset=position)
    pixels = pixels.reshape(height, width, 3).copy()  # frombuffer views are read-only; torch wants writable
    return pixels if maxval == 255 else (pixels.astype(np.float64) * 255.0 / maxval).round().astype(np.uint8)


def _load_ppm(path: Path, roi: tuple[int, int, int, int] | None, image_size: int) -> torch.Tensor:
    """One GTSRB image as float32 [3, image_size, image_size] in [0, 1], cropped to its ROI first."""
    pixels = read_ppm(path)
    if roi is not None:
        x1, y1, x2, y2 = roi
        pixels = pixels[y1 : y2 + 1, x1 : x2 + 1]  # the CSV's ROI corners are inclusive
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).to(torch.float32).div_(255.0)
    return _resize_nchw(image[None], image_size)[0]


def _read_gt_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def _roi(row: dict[str, str]) -> tuple[int, int, int, int] | None:
    keys = ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")
    return tuple(int(row[k]) for k in keys) if all(k in row for k in keys) else None


def _stack_images(images: list[torch.Tensor], labels: list[int], where: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not images:
        raise FileNotFoundError(f"no GTSRB images found under {where}")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _read_gtsrb_official_train(images_dir: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        class_id = int(class_dir.name)
        csv_files = sorted(class_dir.glob("GT-*.csv"))
        if csv_files:
            for row in _read_gt_csv(csv_files[0]):
                images.append(_load_ppm(class_dir / row["Filename"], _roi(row), image_size))
                labels.append(int(row.get("ClassId", class_id)))
        else:  # no annotation file: every .ppm of the directory, uncropped
            for ppm in sorted(class_dir.glob("*.ppm")):
                images.append(_load_ppm(ppm, None, image_size))
                labels.append(class_id)
    return _stack_images(images, labels, images_dir)


def _read_gtsrb_official_test(root: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    test_dir = root / "Final_Test" / "Images"
    candidates = [test_dir / "GT-final_test.csv", root / "GT-final_test.csv"]
    gt_csv = next((p for p in candidates if p.is_file()), None)
    if not test_dir.is_dir() or gt_csv is None:
        raise FileNotFoundError(
            f"GTSRB test set not found: need {test_dir}/*.ppm and GT-final_test.csv (with ClassId) in one of "
            f"{[str(p.parent) for p in candidates]}."
        )
    images, labels = [], []
    for row in _read_gt_csv(gt_csv):
        images.append(_load_ppm(test_dir / row["Filename"], _roi(row), image_size))
        labels.append(int(row["ClassId"]))
    return _stack_images(images, labels, test_dir)


# --------------------------------------------------------------------------------------------------
# dispatch and subsets
# --------------------------------------------------------------------------------------------------


def load_dataset(name: str, root: str | Path | None = None) -> Split:
    """Load ``name`` (one of :data:`DATASETS`); ``root`` is required for cifar10 and gtsrb."""
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        return load_fashion_mnist(DEFAULT_FASHION_MNIST_ROOT if root is None else root)
    if name in ("cifar10", "gtsrb"):
        if root is None:
            raise ValueError(f"dataset {name!r} needs root= pointing at a local copy (awm_fast never downloads)")
        return load_cifar10(root) if name == "cifar10" else load_gtsrb(root)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def few_shot_subset(
    x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int = 0, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick ``per_class`` samples of every class, deterministically for ``seed``.

    x: [N, ...]; y: int64 [N]. The classes are those present in ``y``, or ``0..num_classes-1`` when
    ``num_classes`` is given (then a missing class is an error too). Returns ``(x[idx], y[idx], idx)``
    with ``idx`` int64 [per_class * classes], grouped by class in ascending class order.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    classes = torch.unique(y).tolist() if num_classes is None else list(range(num_classes))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in classes:
        members = torch.nonzero(y.cpu() == label, as_tuple=False).flatten()
        if members.numel() < per_class:
            raise ValueError(f"class {label} has {members.numel()} samples, fewer than per_class={per_class}")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    indices = torch.cat(chosen).to(torch.int64)
    device_indices = indices.to(x.device)
    return x[device_indices], y[indices.to(y.device)], indices


def without_indices(x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the samples at ``indices`` (e.g. the few-shot purification set, which the evaluation protocol
    excludes from the clean test set). x: [N, ...]; y: [N]; returns the remaining samples in original order."""
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    keep[indices.cpu()] = False
    return x[keep.to(x.device)], y[keep.to(y.device)]
