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

The pull keeps what the clean images' features need; where a dense backdoor (a blend, a watermark) uses those same
features, it keeps part of the backdoor too (round 22: Blend 5.2 -> 8.4% ASR on the SmallCNNs, the small ResNet's
3.9 -> 17.0). Round 23 gated it (feature_distill_gate="compact": only where the first hunt's trigger is compact,
`trigger_window_share` at least COMPACT_WINDOW_SHARE, or the warp check named the suspect). Round 24 found that the
larger hunt the pull allows (feature_distill_norm_max) takes that part back (Blend 8.4 -> 4.3%), so by default
(feature_distill_gate="always") it acts on every all-to-one backdoor; gate_pull decides after the first hunt
(awm_fast.loop applies it). On an all-to-all backdoor, whose hunt does not grow, `PenultimateFeatures.release` lets
go of the features the trigger drives beyond its destination classes' own instead (round 25;
feature_distill_release); where that hunt's first trigger is spread (below SPREAD_WINDOW_SHARE), it may grow too
(round 26).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from awm_fast.config import AWMConfig
from awm_fast.modules import MaskedLinear

# A trigger is compact when at least this share of its magnitude lies inside one window of a quarter of the image's
# side (trigger_window_share). The first hunt on the unmasked model (docs/EFFICACY.md, round 23; Fashion-MNIST,
# 7 px windows): BadNets 0.65-0.86 and Trojan squares 0.55-0.70 on the SmallCNNs, LeNet-5's BadNets 0.64; Blend
# 0.19-0.31, watermarks 0.30-0.36, warps 0.16-0.22 (named by the warp check instead).
COMPACT_WINDOW_SHARE = 0.5
# On an all-to-all backdoor the hunt may grow (as an all-to-one suspect's does where the pull acts) only when the first
# hunt's trigger is spread: below this share in one window (docs/EFFICACY.md, round 26). A patch all-to-all backdoor's
# stand-in on the Fashion-MNIST SmallCNNs has 0.34-0.50 there, and growing its hunt did nothing useful (6 models: 5.1 ->
# 5.8% ASR); the stand-ins of dense triggers and of the small ResNets' backdoors have 0.14-0.17, and growth took their
# ASR down (ResNets 22.7 -> 13.8 and 15.4 -> 5.8, blend triggers 19.1 -> 13.7 and 4.1 -> 1.5).
SPREAD_WINDOW_SHARE = 0.25


def trigger_window_share(trigger: torch.Tensor) -> float | None:
    """The largest share of the trigger's magnitude inside one k x k window, k = max(2, min(H, W) // 4) (7 px on
    28x28, 2 on 8x8); the magnitude of a pixel is Σ_c |Δ_c|.

    trigger [C, H, W] or [1, C, H, W] float. None for inputs that are not images (fewer dimensions, a side under
    2 px) and for an all-zero trigger: they say nothing about a patch."""
    if trigger.dim() == 4 and trigger.shape[0] == 1:
        trigger = trigger[0]
    if trigger.dim() != 3 or min(trigger.shape[1:]) < 2:
        return None
    magnitude = trigger.detach().float().abs().sum(dim=0)  # [H, W]
    total = magnitude.sum()
    if not total > 0:
        return None
    k = max(2, min(magnitude.shape) // 4)
    # avg_pool2d gives each window's mean; times k^2 its sum (stride 1: every window position)
    window_sums = F.avg_pool2d(magnitude[None, None], k, stride=1) * (k * k)
    return float(window_sums.max() / total)


class PullGate(NamedTuple):
    """What the feature pull does from the first hunt on (gate_pull)."""

    acts: bool  # the pull acts: the loop's clean term carries feature_distill_weight times the drift
    grows: bool  # the hunt may grow up to cfg.feature_distill_norm_max
    why_not: str  # why the pull does not act ("" where it does)


def gate_pull(cfg: AWMConfig, share: float | None, all_to_all: bool, warp_suspected: bool) -> PullGate:
    """The feature pull's gate, decided after the first hunt from its trigger's trigger_window_share `share` (None:
    not an image, or all zero) and the kind of suspect: all_to_all (the all-to-all check found the backdoor) or
    warp_suspected (the warp check named the suspect). cfg must be resolved.

    The pull acts wherever it was asked for (feature_distill_gate="always"), or with "compact" only where the
    trigger is compact or the warp check named the suspect (round 23). It keeps the clean images' features, and
    where the backdoor uses them it keeps part of the backdoor too; each kind of suspect gets its counterweight:

    - all-to-one: the hunt may grow up to cfg.feature_distill_norm_max and take back what the pull would keep of
      a dense trigger (round 24);
    - all-to-all: the pull lets go of the features the trigger drives beyond its destination classes' own
      (PenultimateFeatures.release at cfg.feature_distill_release; round 25). Without the release (0) it is off
      there: it let the backdoor's reach back (round 24: 8x8 digits 29.1 -> 35.1%). The hunt keeps its radius
      unless the trigger is spread (below SPREAD_WINDOW_SHARE in one window: a dense trigger's or a deep
      network's stand-in), where it may grow as an all-to-one suspect's does (round 26);
    - a warp suspect: neither; its additive stand-in, grown, is an adversarial perturbation rather than the
      backdoor (round 23), and it drives no feature beyond its destination's (round 25)."""
    if all_to_all and not cfg.feature_distill_release:
        return PullGate(False, False, "an all-to-all backdoor, feature_distill_release=0")
    compact = share is not None and share >= COMPACT_WINDOW_SHARE
    if cfg.feature_distill_gate == "compact" and not (compact or warp_suspected):
        return PullGate(False, False, f"the trigger is not compact (below {COMPACT_WINDOW_SHARE} in one window)")
    spread = share is not None and share < SPREAD_WINDOW_SHARE
    return PullGate(True, not warp_suspected and (spread or not all_to_all), "")


def linear_layers(model: nn.Module) -> list[nn.Module]:
    """The model's Linear layers in module order (nn.Linear, or the MaskedLinear that replaced one)."""
    return [module for module in model.modules() if isinstance(module, nn.Linear | MaskedLinear)]


def last_linear(model: nn.Module) -> nn.Module:
    """The model's last Linear layer in module order (linear_layers): its input is the penultimate features.
    ValueError when the model has none."""
    layers = linear_layers(model)
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
        self.reference, _ = self._forward(model, x, batch, autocast)  # [N, F] fp32, the original model's features
        # mean squared norm of the original's features: the term's unit (floored for an all-zero feature map)
        self.scale = self.reference.pow(2).sum(dim=1).mean().clamp_min(torch.finfo(torch.float32).tiny)
        self.trust = trust
        self.keep: torch.Tensor | None = None  # [F] fp32: 1 where a feature is pulled, 0 where released (release)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._latest = inputs[0]

    @torch.no_grad()
    def _forward(self, model: nn.Module, x: torch.Tensor, batch: int, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's penultimate features [N, F] fp32 and labels [N] int64 on x [N, ...], batch images a forward."""
        features, labels = [], []
        for images in x.split(batch):
            with autocast():
                labels.append(model(images).argmax(dim=1))
            features.append(self._latest.float().flatten(1))
        self._latest = None
        return torch.cat(features), torch.cat(labels)

    def penalty(self, rows: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The drift (scalar fp32) of the latest forward, whose first len(rows) inputs are the clean images x[rows].

        rows [U] int64; weights [U] their weights in the step (None: a plain mean over the rows)."""
        features = self._latest[: len(rows)].float().flatten(1)
        gap = (features - self.reference[rows]).pow(2)
        gap = (gap if self.keep is None else gap * self.keep).sum(dim=1) / self.scale * self.trust[rows]
        return gap.mean() if weights is None else (gap * weights).sum()

    @torch.no_grad()
    def release(self, model: nn.Module, triggered: torch.Tensor, labels: torch.Tensor, threshold: float, batch: int,
                autocast) -> torch.Tensor:
        """Release from the pull the features the trigger drives beyond its destination class's own; returns z [F].

        triggered [N, ...]: the clean images with the first hunt's trigger applied (masks still all ones); labels [N]
        their true labels. Each trusted image the trigger moves to another class p_i (the original model's label of
        it) is compared with the trusted clean images of class p_i: z_d = mean_i (f_d(x_i + Δ) − mean_{j: y_j = p_i}
        f⁰_jd) / spread_d, spread_d the standard deviation of f⁰_d over the trusted images. A trigger that only
        stood in for its destination's class would move the features to that class's (z ≈ 0); one that drives a
        feature beyond them drives the backdoor's. keep_d = 0 where z_d > threshold."""
        shifted, predicted = self._forward(model, triggered, batch, autocast)
        trusted = self.trust > 0
        num_classes = int(max(int(labels.max()), int(predicted.max())) + 1)
        counts = torch.bincount(labels[trusted], minlength=num_classes).float()
        class_means = torch.zeros(num_classes, shifted.shape[1], device=shifted.device)
        class_means.index_add_(0, labels[trusted], self.reference[trusted])
        class_means /= counts.clamp_min(1)[:, None]
        moved = trusted & (predicted != labels) & (counts[predicted] > 0)
        z = torch.zeros(shifted.shape[1], device=shifted.device)
        if moved.any() and trusted.sum() > 1:
            spread = self.reference[trusted].std(dim=0).clamp_min(1e-6)
            z = (shifted[moved] - class_means[predicted[moved]]).mean(dim=0) / spread
        self.keep = (z <= threshold).float()
        return z

    def close(self) -> None:
        self._handle.remove()
        self._latest = None
