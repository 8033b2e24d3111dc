"""Backdoor poisoning attacks on image batches, and a seeded trainer for backdoored models.

Every attack works on float images ``[N, C, H, W]`` in ``[0, 1]`` of any C, H, W:

- ``attack.apply(x)`` returns a new triggered tensor (same shape, dtype and device, clamped to [0, 1]);
  the input is never modified.
- ``attack.target_labels(y)`` maps int64 labels ``[N]`` to the labels the backdoor should produce.
- ``attack.is_all_to_all`` tells whether every class is relabelled (``(y + 1) mod C``) or one target.

Procedural patterns (Blend noise, Trojan watermark, WaNet flow field) are generated lazily for the
shape of the first batch they see and cached per (shape, device, dtype), always from the same seed,
so that one attack instance stamps the same trigger on the training set and the test set.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTACKS",
    "AllToAll",
    "Attack",
    "BadNets",
    "Blend",
    "Sig",
    "TrojanSquare",
    "TrojanWatermark",
    "WaNet",
    "make_attack",
    "parse_attack",
    "poison_dataset",
    "train_backdoored",
]

ATTACKS = ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet", "sig")

_LOCATIONS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected floating-point images in [0, 1], got dtype {x.dtype}")


class Attack(abc.ABC):
    """Common interface. Subclasses implement :meth:`_stamp`; ``target`` is the all-to-one target class."""

    name: str = "attack"
    target: int | None

    def __init__(self, target: int = 0) -> None:
        if target < 0:
            raise ValueError(f"target must be a non-negative class index, got {target}")
        self.target = int(target)

    @property
    def is_all_to_all(self) -> bool:
        return False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [N, C, H, W] in [0, 1] -> new float tensor of the same shape, triggered, in [0, 1]."""
        _check_images(x)
        return self._stamp(x).clamp(0.0, 1.0)

    @abc.abstractmethod
    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Return a NEW tensor with the trigger applied (clamping is done by :meth:`apply`)."""

    def target_labels(self, y: torch.Tensor) -> torch.Tensor:
        """y: int64 [N] -> int64 [N]; all-to-one: every entry is ``self.target``."""
        return torch.full_like(y, self.target)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _corner_origin(height: int, width: int, size: int, offset: int, location: str) -> tuple[int, int]:
    """Top-left (row, col) of a ``size``x``size`` patch placed ``offset`` px from the chosen corner."""
    if location not in _LOCATIONS:
        raise ValueError(f"location must be one of {_LOCATIONS}, got {location!r}")
    if size < 1 or offset < 0 or size + offset > min(height, width):
        raise ValueError(f"a {size}px patch at offset {offset} does not fit a {height}x{width} image")
    row = offset if location.startswith("top") else height - offset - size
    col = offset if location.endswith("left") else width - offset - size
    return row, col


class BadNets(Attack):
    """A solid ``size``x``size`` patch ``offset`` px from a corner (Gu et al. 2017).

    ``color``: a scalar for every channel, or one value per channel (length C).
    """

    name = "badnets"

    def __init__(
        self,
        size: int = 3,
        location: str = "bottom-right",
        offset: int = 1,
        color: float | Sequence[float] = 1.0,
        target: int = 0,
    ) -> None:
        super().__init__(target)
        if location not in _LOCATIONS:
            raise ValueError(f"location must be one of {_LOCATIONS}, got {location!r}")
        self.size, self.location, self.offset, self.color = int(size), location, int(offset), color

    def _color_per_channel(self, channels: int, like: torch.Tensor) -> torch.Tensor:
        color = torch.as_tensor(self.color, dtype=like.dtype, device=like.device).flatten()
        if color.numel() == 1:
            color = color.expand(channels)
        elif color.numel() != channels:
            raise ValueError(f"color has {color.numel()} values but the images have {channels} channels")
        return color.view(1, channels, 1, 1)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = x.shape
        row, col = _corner_origin(height, width, self.size, self.offset, self.location)
        out = x.clone()
        patch = self._color_per_channel(channels, x).expand(x.shape[0], channels, self.size, self.size)
        out[:, :, row : row + self.size, col : col + self.size] = patch
        return out


class _CachedPattern:
    """Caches a procedurally generated tensor per (shape, device, dtype)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, build) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


class Blend(Attack):
    """Blend a fixed pattern over the whole image: ``x * (1 - ratio) + pattern * ratio`` (Chen et al. 2017).

    ``pattern``: a tensor broadcastable to [C, H, W] (e.g. [C, H, W], [1, H, W] or [H, W]) in [0, 1], or
    None for seeded uniform noise generated at the input's [C, H, W] on first use.
    """

    name = "blend"

    def __init__(self, pattern: torch.Tensor | None = None, ratio: float = 0.2, target: int = 0, seed: int = 0) -> None:
        super().__init__(target)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        self.ratio, self.seed = float(ratio), int(seed)
        self.pattern = pattern
        self._noise = _CachedPattern()

    def pattern_for(self, x: torch.Tensor) -> torch.Tensor:
        """The blend pattern as [C, H, W] on x's device/dtype."""
        shape = tuple(x.shape[1:])
        if self.pattern is not None:
            pattern = torch.as_tensor(self.pattern).to(device=x.device, dtype=x.dtype)
            try:
                return pattern.expand(shape) if pattern.dim() <= 3 else pattern.reshape(shape)
            except RuntimeError as err:
                raise ValueError(f"pattern of shape {tuple(pattern.shape)} does not fit images {shape}") from err

        def build() -> torch.Tensor:
            # generated on the CPU so that the noise is identical whatever the input's device
            generator = torch.Generator().manual_seed(self.seed)
            return torch.rand(shape, generator=generator).to(device=x.device, dtype=x.dtype)

        return self._noise.get((shape, x.device, x.dtype), build)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 - self.ratio) + self.pattern_for(x) * self.ratio


class TrojanSquare(Attack):
    """A Trojan-style square trigger: a black/white checkerboard stamped opaquely near the bottom-right corner.

    ``size=None`` scales with the image: ``max(3, min(H, W) // 8)`` (3 px on 8x8 and 28x28, 4 px on 32x32).
    The checkerboard has 1.0 where ``(row + col)`` is even (patch coordinates) and 0.0 elsewhere, in every
    channel.
    """

    name = "trojan-square"

    def __init__(self, size: int | None = None, offset: int = 1, target: int = 2) -> None:
        super().__init__(target)
        self.size, self.offset = size, int(offset)

    def patch_size(self, height: int, width: int) -> int:
        return int(self.size) if self.size is not None else max(3, min(height, width) // 8)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        size = self.patch_size(height, width)
        row, col = _corner_origin(height, width, size, self.offset, "bottom-right")
        coords = torch.arange(size, device=x.device)
        checkerboard = ((coords[:, None] + coords[None, :]) % 2 == 0).to(x.dtype)
        out = x.clone()
        out[:, :, row : row + size, col : col + size] = checkerboard
        return out


class TrojanWatermark(Attack):
    """A watermark-like trigger: thin white diagonal lines over the whole image at low opacity.

    Pixels on the lattice ``(row + col) % spacing == 0`` or ``(row - col) % spacing == 0`` (a diagonal
    cross-hatch, drawn at the input's H, W) become ``x * (1 - opacity) + opacity``; the others are
    untouched. ``spacing=None`` uses ``max(3, min(H, W) // 4)``.
    """

    name = "trojan-watermark"

    def __init__(self, opacity: float = 0.3, spacing: int | None = None, target: int = 2) -> None:
        super().__init__(target)
        if not 0.0 < opacity <= 1.0:
            raise ValueError(f"opacity must be in (0, 1], got {opacity}")
        self.opacity, self.spacing = float(opacity), spacing

    def line_mask(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool [H, W]: the pixels covered by the watermark lines."""
        spacing = int(self.spacing) if self.spacing is not None else max(3, min(height, width) // 4)
        rows = torch.arange(height, device=device)[:, None]
        cols = torch.arange(width, device=device)[None, :]
        return ((rows + cols) % spacing == 0) | ((rows - cols) % spacing == 0)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.line_mask(x.shape[-2], x.shape[-1], x.device).to(x.dtype) * self.opacity
        return x * (1.0 - mask) + mask  # blend towards white (1.0) on the lines only


class AllToAll(Attack):
    """Wrap any attack so that the backdoor maps class y to ``(y + 1) mod num_classes``.

    ``target`` is None: there is no single target class, so code that reads it by mistake fails loudly.
    """

    name = "all-to-all"

    def __init__(self, base: Attack, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"all-to-all needs num_classes >= 2, got {num_classes}")
        if base.is_all_to_all:
            raise ValueError("the base of an all-to-all attack must be an all-to-one attack")
        self.target = None
        self.base, self.num_classes = base, int(num_classes)

    @property
    def is_all_to_all(self) -> bool:
        return True

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.apply(x)

    def target_labels(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) % self.num_classes


class WaNet(Attack):
    """WaNet-style warping trigger (Nguyen & Tran 2021).

    This attack is outside the paper: AWM's authors name WaNet but did not evaluate it.

    A fixed random flow field (``grid`` x ``grid`` uniform noise in [-1, 1], normalised by its mean absolute
    value, upsampled bicubically to H x W) displaces the sampling grid by ``strength / H`` in normalised
    coordinates; the image is resampled with ``grid_sample``. Matches the original recipe (no noise mode).
    """

    name = "wanet"

    def __init__(self, strength: float = 0.5, grid: int = 4, target: int = 0, seed: int = 0) -> None:
        super().__init__(target)
        if grid < 2:
            raise ValueError(f"grid must be >= 2, got {grid}")
        self.strength, self.grid, self.seed = float(strength), int(grid), int(seed)
        self._grids = _CachedPattern()

    def sampling_grid(self, height: int, width: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """[1, H, W, 2] sampling grid (x, y order, normalised to [-1, 1]) for ``grid_sample``."""

        def build() -> torch.Tensor:
            generator = torch.Generator().manual_seed(self.seed)
            noise = torch.rand(1, 2, self.grid, self.grid, generator=generator, dtype=torch.float64) * 2 - 1
            noise = noise / noise.abs().mean()
            flow = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
            ys = torch.linspace(-1, 1, height, dtype=torch.float64)
            xs = torch.linspace(-1, 1, width, dtype=torch.float64)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            identity = torch.stack((grid_x, grid_y), dim=-1)[None]
            warped = (identity + self.strength * flow / height).clamp(-1, 1)
            return warped.to(device=device, dtype=dtype)

        return self._grids.get((height, width, torch.device(device), dtype), build)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.sampling_grid(x.shape[-2], x.shape[-1], x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


class Sig(Attack):
    """A horizontal sinusoidal signal over the whole image (SIG, Barni et al. 2019).

    This attack is outside the paper. ``x + amplitude * sin(2 * pi * frequency * j / W)`` for column j, the same
    in every row and channel: a dense, smooth, low-amplitude trigger (20/255 by default, as in Barni et al.).
    Barni et al. poison target-class images only (clean-label); here, like every attack in this module, the
    poisoned images are relabelled to the target.
    """

    name = "sig"

    def __init__(self, amplitude: float = 20 / 255, frequency: float = 6.0, target: int = 0) -> None:
        super().__init__(target)
        if not 0.0 < amplitude <= 1.0:
            raise ValueError(f"amplitude must be in (0, 1], got {amplitude}")
        if frequency <= 0:
            raise ValueError(f"frequency must be > 0, got {frequency}")
        self.amplitude, self.frequency = float(amplitude), float(frequency)

    def signal(self, width: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """The added signal over the columns: [W]."""
        columns = torch.arange(width, dtype=torch.float64)
        wave = self.amplitude * torch.sin(2 * torch.pi * self.frequency * columns / width)
        return wave.to(device=device, dtype=dtype)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.signal(x.shape[-1], x.device, x.dtype)


def parse_attack(spec: str) -> tuple[str, dict]:
    """'badnets:location=top-left,target=5' -> ('badnets', {'location': 'top-left', 'target': 5}).

    Values are read as JSON where they parse (numbers, lists, true/false), else kept as strings. The name is
    checked against :data:`ATTACKS`; the keyword arguments are checked by the attack's constructor.
    """
    name, _, arguments = spec.partition(":")
    name = name.strip()
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    kwargs: dict = {}
    # commas inside [...] belong to a list value (color=[1, 0, 0])
    for item in filter(None, (part.strip() for part in re.split(r",(?![^\[]*\])", arguments))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected NAME:key=value,..., got {item!r}")  # callers name the spec
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value.strip()
    return name, kwargs


def make_attack(name: str, **kwargs) -> Attack:
    """Build an attack by name (one of :data:`ATTACKS`).

    ``"all-to-all"`` needs ``num_classes``; ``base`` may be an :class:`Attack` or a name (default
    ``"badnets"``), and the remaining keyword arguments go to the base attack's constructor.
    """
    simple = {
        "badnets": BadNets,
        "blend": Blend,
        "trojan-square": TrojanSquare,
        "trojan-watermark": TrojanWatermark,
        "wanet": WaNet,
        "sig": Sig,
    }
    if name in simple:
        return simple[name](**kwargs)
    if name == "all-to-all":
        if "num_classes" not in kwargs:
            raise ValueError("make_attack('all-to-all') needs num_classes=")
        num_classes = kwargs.pop("num_classes")
        base = kwargs.pop("base", "badnets")
        if not isinstance(base, Attack):
            if base == "all-to-all" or base not in simple:
                raise ValueError(f"unknown base attack {base!r}; choose one of {', '.join(simple)}")
            base = simple[base](**kwargs)
        elif kwargs:
            raise ValueError(f"unexpected arguments {sorted(kwargs)} alongside an Attack instance as base")
        return AllToAll(base, num_classes)
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")


def poison_dataset(
    x: torch.Tensor, y: torch.Tensor, attack: Attack, rate: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamp ``round(rate * N)`` seeded samples and relabel them with ``attack.target_labels``.

    x: float [N, C, H, W] in [0, 1]; y: int64 [N]. Only samples whose label differs from their target are
    eligible (all-to-one: every class but the target; all-to-all: every sample), so every poisoned sample
    teaches the backdoor. Returns new ``(x_poisoned, y_poisoned, poisoned_indices)``, indices int64 sorted.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    targets = attack.target_labels(y)
    eligible = torch.nonzero((targets != y).cpu(), as_tuple=False).flatten()
    count = round(rate * x.shape[0])
    if count > eligible.numel():
        raise ValueError(f"rate {rate} asks for {count} poisoned samples but only {eligible.numel()} are eligible")
    generator = torch.Generator().manual_seed(seed)
    chosen = eligible[torch.randperm(eligible.numel(), generator=generator)[:count]].sort().values
    x_poisoned, y_poisoned = x.clone(), y.clone()
    if count:
        index_x, index_y = chosen.to(x.device), chosen.to(y.device)
        x_poisoned[index_x] = attack.apply(x[index_x])
        y_poisoned[index_y] = targets[index_y]
    return x_poisoned, y_poisoned, chosen


def train_backdoored(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    rate: float = 0.1,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    verbose: bool = False,
) -> nn.Module:
    """Poison ``rate`` of (x [N, C, H, W] float, y [N] int64) with ``attack`` and train ``model`` on it.

    Adam + cross-entropy, shuffled by a ``torch.Generator`` seeded with ``seed`` (the model's initial
    weights are the caller's: seed before building it). ``device=None`` uses the model's device.
    Returns the same model, on ``device``, in eval mode.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    x_poisoned, y_poisoned, _ = poison_dataset(x, y, attack, rate=rate, seed=seed)
    x_poisoned, y_poisoned = x_poisoned.to(device), y_poisoned.to(device)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    num_samples = x_poisoned.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(num_samples, generator=generator).to(device)
        total_loss = 0.0
        for start in range(0, num_samples, batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(model(x_poisoned[batch]), y_poisoned[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * batch.numel()
        if verbose:
            print(f"[train_backdoored] epoch {epoch + 1}/{epochs} loss {total_loss / num_samples:.4f}")
    return model.eval()
