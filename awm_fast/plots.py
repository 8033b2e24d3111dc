"""PNG figures for the efficacy study (matplotlib's object API: no pyplot, no global backend switch).

- save_trigger_figure: the recovered trigger(s) beside the true trigger (attack.apply(x) - x).
- save_mask_histograms: one histogram of mask values per masked layer.
- save_history_figure: clean accuracy and ASR per outer epoch (from PurifyResult.history).
Every function writes one PNG at `path` (parent folders created) and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

__all__ = ["save_history_figure", "save_mask_histograms", "save_trigger_figure", "to_image"]


def to_image(tensor: torch.Tensor, symmetric: bool = True):
    """[C, H, W] -> numpy [H, W] (C=1) or [H, W, 3] (C=3) for imshow, scaled to [0, 1].

    symmetric: map [-a, a] to [0, 1] with 0.5 at zero (perturbations), else min-max (images).
    """
    image = tensor.detach().float().cpu()
    if image.dim() != 3:
        raise ValueError(f"expected [C, H, W], got shape {tuple(image.shape)}")
    if symmetric:
        scale = float(image.abs().max()) or 1.0
        image = image / (2 * scale) + 0.5
    else:
        lo, hi = float(image.min()), float(image.max())
        image = (image - lo) / ((hi - lo) or 1.0)
    image = image.clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image[:3].permute(1, 2, 0).numpy()


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def save_trigger_figure(path: str | Path, recovered: torch.Tensor, true_trigger: torch.Tensor | None = None,
                        title: str = "") -> Path:
    """recovered: [C, H, W] or [K, C, H, W]; true_trigger: [C, H, W] (e.g. mean of attack.apply(x) - x) or None.

    Perturbations are shown on a symmetric grey scale (grey = 0, white = positive, black = negative).
    """
    triggers = recovered if recovered.dim() == 4 else recovered.unsqueeze(0)
    panels = ([("true trigger", true_trigger)] if true_trigger is not None else [])
    panels += [(f"recovered {k}" if len(triggers) > 1 else "recovered", t) for k, t in enumerate(triggers[:8])]
    fig = Figure(figsize=(2.2 * len(panels), 2.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for axis, (name, tensor) in zip(axes[0], panels, strict=True):
        axis.imshow(to_image(tensor), cmap="gray", vmin=0, vmax=1)
        axis.set_title(f"{name}\nL1 {float(tensor.abs().sum()):.1f}", fontsize=8)
        axis.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def save_mask_histograms(path: str | Path, masks: Mapping[str, torch.Tensor], title: str = "", bins: int = 40) -> Path:
    """masks: {layer name: mask tensor with values in [0, 1]}; one log-count histogram per layer."""
    names = list(masks)
    if not names:
        raise ValueError("no masks to plot")
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(3 * columns, 2.2 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for axis in axes.flat[len(names):]:
        axis.axis("off")
    for axis, name in zip(axes.flat, names, strict=False):
        values = masks[name].detach().float().flatten().cpu().numpy()
        axis.hist(values, bins=bins, range=(0.0, 1.0), log=True, color="tab:blue")
        axis.set_title(f"{name}\nmean {values.mean():.3f}, <0.5: {(values < 0.5).mean():.1%}", fontsize=8)
        axis.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def save_history_figure(path: str | Path, history: Sequence[Mapping[str, float]], title: str = "",
                        keys: Sequence[str] = ("acc", "asr")) -> Path:
    """history: one dict per outer epoch with "epoch" and the `keys` (fractions in [0, 1]); plotted in %."""
    fig = Figure(figsize=(4.5, 3))
    axis = fig.subplots()
    epochs = [record.get("epoch", i + 1) for i, record in enumerate(history)]
    for key in keys:
        values = [100 * record[key] for record in history if key in record]
        if values:
            axis.plot(epochs[: len(values)], values, marker="o", markersize=3, label=key.upper())
    axis.set_xlabel("outer epoch")
    axis.set_ylabel("%")
    axis.set_ylim(-2, 102)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title, fontsize=9)
    return _save(fig, path)
