"""What purify() accepts as data, turned into checked tensors; and the authors' one-shot augmentation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

# Candidates drawn per wanted copy by augment_one_shot_consistent: with 14-39% of the authors' copies label-
# consistent (measured, round 5), 8 per copy leaves an image short of its copies only when < ~1 in 8 pass.
CONSISTENT_POOL = 8


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [N, ...] floating, y [N] int64) from (x, y) tensors, a Dataset of (x, y) pairs or a DataLoader.

    Few-shot sets are small, so a Dataset or DataLoader is read once, fully, into memory. Raises
    TypeError / ValueError naming the problem; the caller's tensors are never modified (x and y come back
    detached from any autograd graph, so nothing purify does can reach the caller's .grad).
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, DataLoader):
        batches = [_pair(batch, "a DataLoader batch") for batch in data]
        if not batches:
            raise ValueError("data is empty: the DataLoader yielded no batch")
        x = torch.cat([torch.as_tensor(b[0]) for b in batches])
        y = torch.cat([torch.as_tensor(b[1]).reshape(-1) for b in batches])
    elif isinstance(data, Dataset):
        if len(data) == 0:  # type: ignore[arg-type]
            raise ValueError("data is empty: the Dataset has no sample")
        samples = [_pair(data[i], "a Dataset item") for i in range(len(data))]  # type: ignore[arg-type]
        x = torch.stack([torch.as_tensor(s[0]) for s in samples])
        y = torch.as_tensor([int(s[1]) for s in samples])
    else:
        raise TypeError("data must be a pair (x, y) of tensors, a torch Dataset of (x, y) or a DataLoader; "
                        f"got {type(data).__name__}")
    return _checked(x, y)


def _pair(item, what: str):
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise TypeError(f"{what} must be an (x, y) pair, got {type(item).__name__}")
    return item[0], item[1]


def _checked(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() < 2:
        raise ValueError(f"x must be a batch of inputs [N, ...], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("data is empty: x has no sample")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (images scaled to input_bounds), got {x.dtype}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"labels y must be integers, got {y.dtype}")
    y = y.reshape(-1) if y.dim() > 1 and y.numel() == y.shape[0] else y
    if y.dim() != 1:
        raise ValueError(f"labels y must have shape [N], got {tuple(y.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]} labels")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf values")
    if (y < 0).any():
        raise ValueError(f"labels must be >= 0, got min {int(y.min())}")
    return x.detach(), y.detach().long()


def check_classes(y: torch.Tensor) -> None:
    """ValueError unless y [N] holds at least two classes.

    With one class the clean loss is zero for a constant predictor and the trigger ascent has no other
    class to push towards: AWM would only shrink the masks, so a single class is refused, not run.
    """
    classes = torch.unique(y)
    if classes.numel() < 2:
        raise ValueError(f"data holds a single class (label {int(classes[0])}); AWM needs clean samples of at "
                         "least two classes, ideally one or more of every class")


def check_bounds(x: torch.Tensor, bounds: tuple[float, float]) -> None:
    """ValueError when x leaves [lo, hi] (inputs must be scaled like the triggered inputs will be)."""
    lo, hi = bounds
    x_min, x_max = float(x.min()), float(x.max())
    if x_min < lo or x_max > hi:
        raise ValueError(f"x has values in [{x_min:.4g}, {x_max:.4g}], outside input_bounds [{lo}, {hi}]; "
                         "scale the data or set input_bounds")


def is_one_shot(y: torch.Tensor) -> bool:
    """True when no class has more than one sample."""
    return int(torch.bincount(y).max()) <= 1


def copies_per_image(y: torch.Tensor, copies: int) -> int:
    """Augmented copies per image for labels y [N]: ceil(copies / k), k the largest number of images of one class.

    One image per class gets the authors' `copies`; k images per class get about as many per class in all (at
    least one per image), so the augmented set grows with the data no faster than the data itself (round 8 of
    docs/EFFICACY.md: at 10 images per class, 1 copy each left as little ASR as 9, in less time).
    """
    if copies == 0:
        return 0
    return math.ceil(copies / int(torch.bincount(y).max()))


def augment_one_shot(x: torch.Tensor, y: torch.Tensor, copies: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' one-shot set: the originals, then `copies` augmented versions of each image.

    Each copy is torchvision's RandomResizedCrop (area scale in [0.08, 1], aspect ratio in [3/4, 4/3],
    bilinear resize back to H×W) followed by a horizontal flip with probability 1/2, done here on
    tensors with one batched grid_sample. x [N, C, H, W] -> [N·(1+copies), C, H, W]; y likewise.
    """
    if copies == 0:
        return x, y
    if x.dim() != 4:
        raise ValueError(f"one-shot augmentation needs images [N, C, H, W], got shape {tuple(x.shape)}")
    n, _, height, width = x.shape
    source = x.repeat_interleave(copies, dim=0)
    theta = _random_crop_flip_affines(n * copies, height, width, generator).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(source.shape), align_corners=False)
    augmented = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.cat([x, augmented]), torch.cat([y, y.repeat_interleave(copies)])


def augment_one_shot_consistent(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, copies: int,
                                generator: torch.Generator | None = None, pool: int = CONSISTENT_POOL,
                                suspect: int | None = None,
                                suspect_runner_up: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """augment_one_shot, keeping only label-consistent copies: those `model` assigns to their source's label,
    and, when `suspect` names a suspected backdoor target class, also those it assigns to `suspect`.

    Why: the authors' crops keep as little as 8% of the image, and most such copies of a small image no longer
    show their class. Measured on the digits / Fashion-MNIST models of docs/EFFICACY.md (round 5), the
    original model labels only 14-39% of the copies as their source image, against 90-100% of the originals;
    the clean term then trains the masks to fit label noise, which costs clean accuracy. Copies sent to a
    suspected target keep their source's label: they are where a backdoor fires on natural transformations
    (a warping backdoor's model sends most resampled crops to its target), and training them back to their
    class is what erases it (docs/EFFICACY.md, round 6).
    suspect_runner_up: a copy sent to `suspect` is kept only where, the suspect aside, `model` still ranks the
    copy's own label first: the backdoor pulled it, but it still shows its class. A crop cut past recognition that
    lands on the suspect is label noise (docs/EFFICACY.md, round 27: it costs WaNet's accuracy in the first epoch).
    Draws `pool`·`copies` candidates per image in one batch and keeps, per image, the first `copies` whose
    argmax under `model` is the image's label or `suspect` (fewer when fewer pass; never more). `model` must be in eval
    mode on x's device. x [N, C, H, W], y [N] -> the originals, then the kept copies grouped by source image.
    """
    if copies == 0:
        return x, y
    augmented, labels = augment_one_shot(x, y, copies * pool, generator)
    candidates, candidate_labels = augmented[len(x):], labels[len(x):]
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in candidates.split(256)])
    predicted = logits.argmax(dim=1)
    consistent = predicted == candidate_labels
    if suspect is not None:
        sent = predicted == suspect
        if suspect_runner_up:
            runner_up = logits.index_fill(1, torch.tensor([suspect], device=logits.device), -torch.inf).argmax(dim=1)
            sent &= runner_up == candidate_labels
        consistent |= sent
    consistent = consistent.view(len(x), copies * pool)  # candidates are grouped by source
    keep = (consistent & (consistent.long().cumsum(dim=1) <= copies)).flatten()
    return torch.cat([x, candidates[keep]]), torch.cat([y, candidate_labels[keep]])


def _random_crop_flip_affines(count: int, height: int, width: int,
                              generator: torch.Generator | None) -> torch.Tensor:
    """[count, 2, 3] affine maps (output -> input normalised coords) of random resized crops + flips."""
    area = height * width
    thetas = torch.zeros(count, 2, 3, dtype=torch.float64)
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for i in range(count):
        crop_h, crop_w, top, left = float(height), float(width), 0.0, 0.0  # fallback: the whole image
        for _ in range(10):  # torchvision's rejection sampling: 10 tries, then the fallback
            target_area = area * _uniform(0.08, 1.0, generator)
            ratio = math.exp(_uniform(*log_ratio, generator))
            w = round(math.sqrt(target_area * ratio))
            h = round(math.sqrt(target_area / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = float(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = float(torch.randint(0, width - w + 1, (1,), generator=generator))
                crop_h, crop_w = float(h), float(w)
                break
        flip = -1.0 if _uniform(0.0, 1.0, generator) < 0.5 else 1.0
        # Normalised coordinates (align_corners=False): pixel edges at -1 and 1.
        thetas[i, 0, 0] = flip * crop_w / width
        thetas[i, 0, 2] = (2 * left + crop_w) / width - 1
        thetas[i, 1, 1] = crop_h / height
        thetas[i, 1, 2] = (2 * top + crop_h) / height - 1
    return thetas


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))
