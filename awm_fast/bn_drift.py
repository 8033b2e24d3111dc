"""How far the masks move the input statistics of a model's frozen BatchNorms: the `bn_drift_weight` penalty.

An eval-mode BatchNorm normalises with running statistics estimated on the training data. Masked weights
upstream shift the mean and spread of its input channels; the frozen statistics then turn a small weight change
into a large change of the function. On the small ResNet most of the accuracy one-shot AWM loses goes that way
(docs/EFFICACY.md, rounds 9-10). The penalty measures the drift on the clean images of a mask step, against the
original model on the same images:

    drift = mean over BatchNorms b of  mean over channels c of
            ((μ_bc − μ⁰_bc)² + (s_bc − s⁰_bc)²) / (running_var_bc + eps_b)

μ, s: the weighted mean and standard deviation of channel c's input over the step's clean images (and their
spatial positions) in the masked model; μ⁰, s⁰ the same in the original model. The original's per-image
moments are computed once, while the masks are all ones, so each step costs no extra forward. Where the loop
pulls towards the original model only on the images it labels right (distill_correct_only), the moments are of
those images only.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class BatchNormDrift:
    """Forward pre-hooks on every BatchNorm with running statistics; `penalty` after a captured forward.

    Build it while the masks are all ones (it records the original model's moments), capture exactly one forward
    per penalty, and call `close()` to remove the hooks.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, batch: int, autocast,
                 trust: torch.Tensor | None = None) -> None:
        """model: the masked model, masks all ones; x [N, ...] the clean images of the loop; batch: images per
        forward when recording the original moments; autocast: a callable returning the loop's autocast context;
        trust [N] fp32 (or None: all 1): which images the statistics count (awm_fast.loop.trusted_rows, the rule
        of the other pulls towards the original model). An image the original model labels wrong, such as a
        warped copy its backdoor sends to the suspect, would ask the masks to keep the backdoor's statistics."""
        self.trust = trust
        self.norms = {name: module for name, module in model.named_modules()
                      if isinstance(module, _BatchNorm) and module.running_var is not None}
        self._inputs: dict[str, torch.Tensor] = {}
        self._capturing = False
        self._handles = {name: module.register_forward_pre_hook(self._hook(name))
                         for name, module in self.norms.items()}
        moments: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in self.norms}
        with torch.no_grad():
            for chunk in x.split(batch):
                with self.capture(), autocast():
                    model(chunk)
                for name in self.norms:
                    if name in self._inputs:  # a BatchNorm the forward never calls has no statistics to keep
                        moments[name].append(_per_image_moments(self._inputs.pop(name)))
        # {name: (mean [N, C], mean of squares [N, C])}, fp32, of the original model's BatchNorm inputs
        self.reference = {name: tuple(torch.cat(parts) for parts in zip(*pieces, strict=True))
                          for name, pieces in moments.items() if pieces}
        for name in set(self.norms) - set(self.reference):  # never called: no hook needed either
            self._handles.pop(name).remove()
        self.norms = {name: module for name, module in self.norms.items() if name in self.reference}

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if self._capturing:
                self._inputs[name] = inputs[0]
        return hook

    @contextlib.contextmanager
    def capture(self):
        """Keep the BatchNorm inputs of the forwards run inside this block (with their autograd graph)."""
        self._capturing = True
        try:
            yield
        finally:
            self._capturing = False

    def penalty(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The drift (scalar fp32) of the captured forward, whose first len(rows) inputs are the clean images x[rows].

        rows [U] int64 distinct row indices, weights [U] their multiplicities (any positive scale). Consumes the
        captured inputs. 0 for a model without BatchNorm, or when no row is trusted.
        """
        if not self.norms:
            return torch.zeros((), device=rows.device)
        weights = weights.float() if self.trust is None else weights.float() * self.trust[rows]
        # No trusted row leaves w all zero: both moments are then 0 and so is the drift (no host sync to test it).
        w = (weights / weights.sum().clamp_min(torch.finfo(torch.float32).tiny))[:, None]  # [U, 1]
        drifts = []
        for name, module in self.norms.items():
            mean, square = ((w * m).sum(0) for m in _per_image_moments(self._inputs.pop(name)[: len(rows)]))
            mean0, square0 = ((w * m[rows]).sum(0) for m in self.reference[name])
            # sqrt of a variance that cancellation may leave slightly negative; the floor keeps the gradient finite
            std, std0 = (square - mean**2).clamp_min(1e-12).sqrt(), (square0 - mean0**2).clamp_min(1e-12).sqrt()
            scale = module.running_var.float() + module.eps
            drifts.append((((mean - mean0) ** 2 + (std - std0) ** 2) / scale).mean())
        return torch.stack(drifts).mean()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._inputs.clear()


def _per_image_moments(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs [B, C, *spatial] (or [B, C]) -> per-image channel mean and mean of squares, each [B, C] fp32."""
    flat = inputs.float().flatten(2) if inputs.dim() > 2 else inputs.float()[:, :, None]
    return flat.mean(2), flat.pow(2).mean(2)
