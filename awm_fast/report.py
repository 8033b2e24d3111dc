"""What a purification run leaves behind for people: a JSON report, a summary table and PNG plots.

- build_report(): config, seed, package versions, timings, metrics, per-layer mask statistics and the
  per-epoch history, all plain JSON (non-finite floats become null).
- summary_table(): the few figures worth reading in a terminal, as an aligned two-column table.
- write_plots(): the recovered trigger(s), one mask-value histogram per layer, and the losses, mask mean and
  ACC/ASR per outer epoch. Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
  backend switch, no display needed); matplotlib is optional: without it no plot is written.

Every file is written atomically (awm_fast.checkpoints.atomic_write).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from awm_fast.checkpoints import atomic_write_bytes

__all__ = ["build_report", "mask_statistics", "package_versions", "summary_table", "to_jsonable", "write_plots",
           "write_report"]

REPORT_VERSION = 1
_PACKAGES = ("awm_fast", "torch", "numpy", "torchvision", "triton", "safetensors", "matplotlib", "tqdm", "pyyaml")
MAX_HISTOGRAM_LAYERS = 48  # beyond this the histogram grid stops being readable


def package_versions() -> dict[str, str | None]:
    """Installed versions (None when absent), read from metadata: nothing is imported."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


@torch.no_grad()
def mask_statistics(masks: Mapping[str, torch.Tensor], bins: int = 10) -> dict[str, dict[str, Any]]:
    """Per weight name: shape, numel, mean, std, min, max, L1, the fraction of entries below 0.5 and below
    0.01 (weights effectively switched off), and a `bins`-bin histogram of the values over [0, 1]."""
    stats = {}
    for name, mask in masks.items():
        values = mask.detach().float().flatten().cpu()
        stats[name] = {
            "shape": list(mask.shape),
            "numel": values.numel(),
            "mean": float(values.mean()),
            "std": float(values.std()) if values.numel() > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "l1": float(values.abs().sum()),
            "fraction_below_0.5": float((values < 0.5).float().mean()),
            "fraction_below_0.01": float((values < 0.01).float().mean()),
            "histogram": {"edges": torch.linspace(0, 1, bins + 1).tolist(),
                          "counts": torch.histc(values.clamp(0, 1), bins=bins, min=0, max=1).long().tolist()},
        }
    return stats


def _per_trigger(trigger: torch.Tensor, count: int) -> torch.Tensor:
    """[K, C, H, W] fp32 CPU from a trigger [C, H, W] or [K, C, H, W]; other input shapes become [K, 1, 1, numel]."""
    triggers = trigger.detach().float().cpu()
    triggers = triggers.unsqueeze(0) if count == 1 else triggers  # [K, *input shape]
    return triggers if triggers.dim() == 4 else triggers.reshape(count, 1, 1, -1)


def _trigger_statistics(trigger: torch.Tensor, count: int) -> dict[str, Any]:
    flat = _per_trigger(trigger, count).flatten(1)
    return {"shape": list(trigger.shape), "l1": flat.abs().sum(1).tolist(), "linf": flat.abs().amax(1).tolist()}


def build_report(result, *, inputs: Mapping[str, Any], timings: Mapping[str, float],
                 metrics: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report of one purification (result: a PurifyResult), JSON-ready.

    inputs:  what was given (model definition, weights file, data description, config file...).
    timings: seconds per phase. metrics: e.g. {"before": {"acc":..}, "after": {...}}. run: anything else
    about the execution (resolved backend, device, output paths).
    """
    config = dataclasses.asdict(result.config)
    if callable(result.config.mask_layers):
        config["mask_layers"] = repr(result.config.mask_layers)
    report = {
        "report_version": REPORT_VERSION,
        "seed": result.config.seed,
        "config": config,
        "inputs": dict(inputs),
        "run": dict(run or {}),
        "package_versions": package_versions(),
        "timings_seconds": dict(timings),
        "metrics": dict(metrics or {}),
        "masks": mask_statistics(result.masks),
        "trigger": _trigger_statistics(result.trigger, result.config.num_triggers),
        "history": list(result.history),
    }
    return to_jsonable(report)


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: tuples to lists, tensors/numpy scalars to numbers, NaN/Inf to None, the rest repr()."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) or hasattr(value, "__float__") and hasattr(value, "dtype"):  # numpy scalars too
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    text = json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def summary_table(rows: Sequence[tuple[str, str]], title: str = "awm-fast") -> str:
    """An aligned two-column table; a row whose value is "" is a section heading."""
    width = max([len(key) for key, _ in rows] + [len(title)])
    value_width = max([len(value) for _, value in rows] + [1])
    rule = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    lines = [rule, f"| {title.ljust(width)} | {''.ljust(value_width)} |", rule]
    for key, value in rows:
        lines.append(f"| {key.ljust(width)} | {value.ljust(value_width)} |")
    lines.append(rule)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- plots


def write_plots(result, stem: str | Path, metrics_before: Mapping[str, Any] | None = None) -> list[Path]:
    """<stem>.trigger.png, <stem>.masks.png, <stem>.history.png; returns the paths written ([] without matplotlib)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    stem = Path(stem)
    figures = {
        "trigger": _trigger_figure(_per_trigger(result.trigger, result.config.num_triggers)),
        "masks": _masks_figure(result.masks),
        "history": _history_figure(result.history, metrics_before or {}),
    }
    written = []
    for name, figure in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)  # Figure without pyplot renders on the Agg canvas
        written.append(atomic_write_bytes(stem.with_name(f"{stem.name}.{name}.png"), buffer.getvalue()))
    return written


def _trigger_figure(triggers: torch.Tensor):
    """triggers [K, C, H, W]: one panel each; signed for one channel, RGB around grey for three."""
    from matplotlib.figure import Figure

    count = triggers.shape[0]
    figure = Figure(figsize=(3.2 * count, 3.4), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    for k, (ax, delta) in enumerate(zip(axes, triggers, strict=True)):
        scale = float(delta.abs().max()) or 1.0
        if delta.shape[0] == 1:  # one channel: signed, blue negative, red positive
            image = ax.imshow(delta[0].numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale)
            figure.colorbar(image, ax=ax, shrink=0.8)
        elif delta.shape[0] == 3:  # RGB: 0.5 grey is no change
            ax.imshow((0.5 + 0.5 * delta / scale).permute(1, 2, 0).clamp(0, 1).numpy())
        else:  # any other channel count: the magnitude summed over channels
            image = ax.imshow(delta.abs().sum(0).numpy(), cmap="magma")
            figure.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(f"trigger {k}  |Δ|₁={float(delta.abs().sum()):.3g}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle("recovered trigger" + ("s" if count > 1 else ""))
    return figure


def _masks_figure(masks: Mapping[str, torch.Tensor]):
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    names = list(masks)[:MAX_HISTOGRAM_LAYERS]
    columns = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / columns) if names else 1
    # A fixed grid (no layout engine) and one step artist per panel: layouting and drawing dozens of 50-bar
    # histograms took seconds for a ResNet.
    height = 2.2 * rows + 0.9  # inches: 2.2 per row, 0.9 for the suptitle and the bottom tick labels
    figure = Figure(figsize=(3.2 * columns, height))
    figure.subplots_adjust(left=0.25 / columns, right=0.98, bottom=0.35 / height, top=1 - 0.75 / height,
                           hspace=0.55, wspace=0.3)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    edges = np.linspace(0.0, 1.0, 51)
    for ax, name in zip(axes, names, strict=False):
        values = masks[name].detach().float().flatten().cpu().numpy()
        counts, _ = np.histogram(values, bins=edges)
        ax.stairs(np.maximum(counts, 0.8), edges, fill=True, baseline=0.8, color="tab:blue")  # log scale: no 0
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # log minor ticks: most of the drawing time, little information
        ax.set_xlim(0.0, 1.0)
        ax.set_title(f"{name}  mean {values.mean():.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    shown = f" (first {len(names)} of {len(masks)} layers)" if len(masks) > len(names) else ""
    figure.suptitle(f"mask values per layer{shown}")
    return figure


def _history_figure(history: Sequence[Mapping[str, Any]], before: Mapping[str, Any]):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    has_metrics = any(key in record for record in history for key in ("acc", "asr"))
    figure = Figure(figsize=(5 * (3 if has_metrics else 2), 3.4), layout="constrained")
    axes = figure.subplots(1, 3 if has_metrics else 2, squeeze=False)[0]
    for key in ("loss", "clean_loss", "trigger_loss", "ascent_loss"):
        if history and key in history[0]:
            axes[0].plot(epochs, [record[key] for record in history], marker="o", label=key)
    axes[0].set_title("losses")
    axes[0].legend(fontsize=7)
    axes[1].plot(epochs, [record.get("mask_mean", math.nan) for record in history], marker="o", color="tab:green")
    axes[1].set_title("mean mask value")
    if has_metrics:
        for key, color in (("acc", "tab:blue"), ("asr", "tab:red")):
            points = [(0, before[key])] if before.get(key) is not None else []
            points += [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if points:
                axes[2].plot(*zip(*points, strict=True), marker="o", color=color, label=key.upper())
        axes[2].set_ylim(-0.02, 1.02)
        axes[2].set_title("ACC / ASR (epoch 0: before)")
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("outer epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure
