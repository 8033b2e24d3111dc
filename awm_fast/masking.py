"""Swap a model's layers for masked ones, and fold the masks back (W := W⊙m) afterwards.

`attach_masks` replaces each selected nn.Conv2d / nn.Linear with a MaskedConv2d / MaskedLinear that
shares its Parameters; `AttachedMasks.fold` writes W⊙m into the original layers' weights and puts the
original layer objects back, so the model ends as a plain model of its own class with no wrapper left.
`AttachedMasks.detach` puts them back untouched (used when purification fails half-way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from awm_fast.modules import MaskedConv2d, MaskedLinear

MASKABLE = (nn.Conv2d, nn.Linear)


@dataclasses.dataclass
class _Swap:
    """One layer swapped for its masked twin, at every place it occurs in the module tree."""

    name: str                       # first qualified module name, e.g. "features.0"
    original: nn.Module
    masked: MaskedConv2d | MaskedLinear
    places: list[tuple[nn.Module, str]]  # (parent, attribute) pairs that held `original`


class AttachedMasks:
    """The masks attached to a model: {qualified weight name: mask Parameter}, and how to undo it."""

    def __init__(self, swaps: list[_Swap]) -> None:
        self._swaps = swaps

    @property
    def masks(self) -> dict[str, nn.Parameter]:
        return {f"{swap.name}.weight": swap.masked.mask for swap in self._swaps}

    @property
    def modules(self) -> list[MaskedConv2d | MaskedLinear]:
        return [swap.masked for swap in self._swaps]

    def set_backend(self, backend: str) -> None:
        for swap in self._swaps:
            swap.masked.backend = backend

    @torch.no_grad()
    def fold(self) -> dict[str, torch.Tensor]:
        """W := W⊙m in each original layer (in W's dtype), put the originals back; returns detached masks."""
        masks = {}
        for swap in self._swaps:
            weight, mask = swap.original.weight, swap.masked.mask
            weight.copy_((weight.float() * mask).to(weight.dtype))
            masks[f"{swap.name}.weight"] = mask.detach().clone()
        self.detach()
        return masks

    def detach(self) -> None:
        """Put the original layers back in place of the masked ones (weights as they are)."""
        for swap in self._swaps:
            for parent, attribute in swap.places:
                setattr(parent, attribute, swap.original)


def select_layers(model: nn.Module, mask_layers: str | Sequence[str] | Callable[[str, Any], bool]) -> list[str]:
    """Qualified names of the Conv2d / Linear modules of `model` that `mask_layers` selects.

    mask_layers: "conv" | "linear" | "conv+linear" | a list of module names | a predicate (name, module).
    """
    # nn.MultiheadAttention reads out_proj.weight directly instead of calling out_proj: a masked twin
    # there would be silently bypassed, so such layers are never candidates.
    bypassed = {f"{name}.out_proj" if name else "out_proj" for name, module in model.named_modules()
                if isinstance(module, nn.MultiheadAttention)}
    candidates = {name: module for name, module in model.named_modules()
                  if name and isinstance(module, MASKABLE) and name not in bypassed}
    if isinstance(mask_layers, str):
        kinds = {"conv": (nn.Conv2d,), "linear": (nn.Linear,), "conv+linear": MASKABLE}
        if mask_layers not in kinds:
            raise ValueError(f"unknown mask_layers {mask_layers!r}; expected one of {tuple(kinds)}, "
                             "a list of module names or a predicate")
        return [name for name, module in candidates.items() if isinstance(module, kinds[mask_layers])]
    if callable(mask_layers):
        return [name for name, module in candidates.items() if mask_layers(name, module)]
    names = list(mask_layers)
    all_modules = dict(model.named_modules())
    for name in names:
        if name not in all_modules:
            raise ValueError(f"mask_layers names {name!r}, which is not a module of the model")
        if name in bypassed:
            raise ValueError(f"mask_layers names {name!r}, the output projection of an nn.MultiheadAttention, "
                             "which reads its weight directly: a mask there would have no effect")
        if name not in candidates:
            kind = type(all_modules[name]).__name__
            raise ValueError(f"mask_layers names {name!r}, a {kind}; only Conv2d and Linear layers can be masked")
    return names


def attach_masks(model: nn.Module, layer_names: Sequence[str], backend: str) -> AttachedMasks:
    """Replace every named layer of `model` (in place) by its masked twin sharing its Parameters."""
    if isinstance(model, MASKABLE):
        raise ValueError("the model is a single Conv2d/Linear layer; wrap it in a module (e.g. nn.Sequential)")
    wanted = {id(model.get_submodule(name)): name for name in layer_names}
    swaps: dict[int, _Swap] = {}
    # remove_duplicate=False: a layer object used at two places (weight tying) is swapped at both.
    for _, parent in model.named_modules(remove_duplicate=False):
        for attribute, child in list(parent.named_children()):
            if id(child) not in wanted:
                continue
            if id(child) not in swaps:
                twin = (MaskedConv2d.from_conv2d(child, backend) if isinstance(child, nn.Conv2d)
                        else MaskedLinear.from_linear(child, backend))
                swaps[id(child)] = _Swap(wanted[id(child)], child, twin, [])
            swaps[id(child)].places.append((parent, attribute))
    for swap in swaps.values():
        for parent, attribute in swap.places:
            setattr(parent, attribute, swap.masked)
    ordered = sorted(swaps.values(), key=lambda swap: list(wanted.values()).index(swap.name))
    return AttachedMasks(ordered)
