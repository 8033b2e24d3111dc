"""How far the masks move the clean images' penultimate features: the `feature_distill_weight` term.

The clean term's KL (distill_weight) pulls the masked model's 10-odd logits per clean image towards the original
model's. The input of the model's last Linear layer, the features the classifier reads, carries far more of what the
masks change on clean images (128 numbers per image on the SmallCNN, 512 on a ResNet-18's pooled features), and the
trigger does not drive it: it is measured on the clean images only. The term is

    drift = Σ_i w_i · t_i · ‖f_i − f⁰_i‖² / mean_j ‖f⁰_j‖²

over the step's clean images i (w_i: their weights in the step, summing to 1 over the minibatch; t_i: 1 where the
original model labels image i right and distill_correct_only holds, else 0, as for the KL, round 13), f_i the
masked model's features, f⁰_i the original's, recorded once while the masks are all ones; the denominator makes it
scale-free. docs/EFFICACY.md, round 22.
"""

from __future__ import annotations

import torch
from torch import nn

from awm_fast.modules import MaskedLinear


def last_linear(model: nn.Module) -> nn.Module:
    """The model's last Linear layer in module order (an nn.Linear, or the MaskedLinear that replaced one): its input
    is the penultimate features. ValueError when the model has none."""
    layers = [module for module in model.modules() if isinstance(module, nn.Linear | MaskedLinear)]
    if not layers:
        raise ValueError("feature_distill_weight needs a model with a Linear layer: the term keeps the input of the "
                         "last one (the features the classifier reads) where the original model put it")
    return layers[-1]


class PenultimateFeatures:
    """A forward hook on the model's last Linear layer that keeps its input of the latest forward, and the drift of
    those features from the original model's.

    Build it while the masks are all ones (it records the original model's features of every clean image), call
    `penalty` right after a forward whose first rows are clean images, and `close()` to remove the hook.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, batch: int, autocast, trust: torch.Tensor) -> None:
        """model: the masked model, masks all ones; x [N, ...]: the loop's clean images; batch: images per forward
        when recording; autocast: a callable returning the loop's autocast context; trust [N] fp32: t_i, which
        images count (awm_fast.loop.trusted_rows, the rule of the logits' KL)."""
        self._latest: torch.Tensor | None = None
        self._handle = last_linear(model).register_forward_hook(self._hook)
        features = []
        with torch.no_grad():
            for images in x.split(batch):
                with autocast():
                    model(images)
                features.append(self._latest.float().flatten(1))
        self._latest = None
        self.reference = torch.cat(features)  # [N, F] fp32, the original model's features
        # mean squared norm of the original's features: the term's unit (floored for an all-zero feature map)
        self.scale = self.reference.pow(2).sum(dim=1).mean().clamp_min(torch.finfo(torch.float32).tiny)
        self.trust = trust

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._latest = inputs[0]

    def penalty(self, rows: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The drift (scalar fp32) of the latest forward, whose first len(rows) inputs are the clean images x[rows].

        rows [U] int64; weights [U] their weights in the step (None: a plain mean over the rows)."""
        features = self._latest[: len(rows)].float().flatten(1)
        gap = (features - self.reference[rows]).pow(2).sum(dim=1) / self.scale * self.trust[rows]
        return gap.mean() if weights is None else (gap * weights).sum()

    def close(self) -> None:
        self._handle.remove()
        self._latest = None
