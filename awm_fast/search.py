"""The targeted trigger search of AWMConfig.trigger_search="targeted" (docs/EFFICACY.md, round 6).

A backdoor makes its target class reachable from any image by a small patch; a clean class is not. For every
class c the search keeps `trigger_restarts` candidate triggers that descend the cross-entropy to c of the
images not predicted as c (x + Δ clamped to input_bounds, L1-normalised gradient steps, exact projection onto
the radius targeted_norm). Per class the best candidate counts; the class it reaches most easily (lowest
cross-entropy) is the suspect, and its trigger alone drives the mask step. The candidates persist: each
outer epoch continues from where the previous one left them, against the current masks.

warp_suspect does the same for warping backdoors, which no additive patch names: per class, a half-pixel
smooth flow field; a class such warps reach is a warping backdoor's target.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast import ops
from awm_fast.batching import autocast, chunks, forward_chunk
from awm_fast.config import AWMConfig

# Measured with these values (round 6):
TARGETED_STEPS = 10  # descent steps per outer epoch, continuing from the previous epoch's candidates
TARGETED_STEP_SIZE = 0.5  # each step moves a candidate by this fraction of targeted_norm in L1, then projects
TARGETED_MAX_IMAGES = 64  # at most this many search images per step (a fresh random subset when there are more)
# The warp check (warp_suspect), measured on Fashion-MNIST with these values (round 6):
WARP_GRID = 4  # control points per side of the smooth flow field, upsampled bicubically to H x W
WARP_BUDGET = 1.0  # largest displacement, in units of 1/H of the normalised [-1, 1] coordinates (half a pixel)
WARP_STEPS = 60  # Adam steps on the flow fields
WARP_LR = 0.1
WARP_REACH_CE = 1.0  # a class is warp-reachable when the images' mean cross-entropy to it falls below this


class TargetedSearch:
    """Per-class trigger candidates over the search images x [M, C, H, W] (the un-augmented few-shot images, on
    the run device); `cfg` must be resolved (targeted_norm set)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, cfg: AWMConfig, generator: torch.Generator) -> None:
        self.model, self.x, self.cfg, self.generator = model, x, cfg, generator
        self.device = x.device
        self.chunk = forward_chunk(cfg, x.device)
        self.candidates = None  # [classes · restarts, C, H, W], class-major; drawn at the first search
        self.suspect = None  # the class the last search suspected

    def recover(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One epoch of the search: (the suspect's trigger [1, C, H, W], its mean cross-entropy to the suspect
        class (fp32 scalar), the suspect class)."""
        cfg = self.cfg
        lo, hi = cfg.input_bounds
        if self.candidates is None:
            self.candidates = self._initial_candidates()
        candidates = self.candidates
        k = candidates.shape[0]
        classes = torch.arange(k, device=self.device) // cfg.trigger_restarts  # [K] each candidate's class
        # The masks are frozen during the search, so the model's own labels hold for the whole epoch.
        with torch.no_grad(), autocast(cfg, self.device):
            own_labels = torch.cat([self.model(part).argmax(dim=1) for part in self.x.split(self.chunk)])
        for _ in range(TARGETED_STEPS):
            rows = self._batch_rows()
            candidates.requires_grad_(True)
            perturbed = ops.apply_triggers(self.x[rows], candidates, lo, hi)  # [K, U, C, H, W]
            grad_flat, losses = _reach_losses(self.model, perturbed.detach().flatten(0, 1), classes, own_labels[rows],
                                              cfg, self.chunk)
            (grad,) = torch.autograd.grad(perturbed, candidates, grad_flat.view_as(perturbed))
            candidates = candidates.detach()
            # Descent with a step of fixed L1 length whatever the gradient's scale (it shrinks as CE falls).
            norms = grad.flatten(1).abs().sum(dim=1).clamp(min=torch.finfo(grad.dtype).tiny)
            direction = -grad / norms.view(-1, *[1] * (grad.dim() - 1))
            ops.trigger_step(candidates, direction, TARGETED_STEP_SIZE * cfg.targeted_norm, cfg.targeted_norm,
                             "plain", "exact")
        self.candidates = candidates
        # `losses` were measured just before the last step; the choice follows them.
        per_class = losses.view(-1, cfg.trigger_restarts)
        self.suspect = int(per_class.min(dim=1).values.argmin())
        chosen = self.suspect * cfg.trigger_restarts + int(per_class[self.suspect].argmin())
        return candidates[chosen : chosen + 1].clone(), losses[chosen], self.suspect

    def _initial_candidates(self) -> torch.Tensor:
        """[classes · restarts, C, H, W]: per class, one candidate at zero and the others at random points of
        L1 norm targeted_norm / 2."""
        with torch.no_grad(), autocast(self.cfg, self.device):
            num_classes = self.model(self.x[:1]).shape[1]
        restarts = self.cfg.trigger_restarts
        shape = (num_classes * restarts, *self.x.shape[1:])
        noise = torch.rand(shape, generator=self.generator) * 2 - 1
        norms = noise.flatten(1).abs().sum(1).view(-1, *[1] * (len(shape) - 1))
        candidates = noise * (0.5 * self.cfg.targeted_norm / norms)
        candidates[::restarts] = 0.0
        return candidates.to(self.device)

    def _batch_rows(self) -> torch.Tensor:
        """Row indices of this step's search images: all of them, or a fresh random subset of
        TARGETED_MAX_IMAGES when there are more."""
        count = self.x.shape[0]
        if count <= TARGETED_MAX_IMAGES:
            return torch.arange(count, device=self.device)
        return torch.randperm(count, generator=self.generator)[:TARGETED_MAX_IMAGES].to(self.device)


def warp_suspect(model: nn.Module, x: torch.Tensor, cfg: AWMConfig) -> int | None:
    """The class that imperceptible smooth warps send the images x [M, C, H, W] to, or None.

    A warping backdoor (WaNet) is no additive patch, so TargetedSearch cannot name its target. For every class
    c a smooth flow field (WARP_GRID² control points, tanh-bounded, bicubically upsampled, displacement at most
    half a pixel) is fitted with Adam to send the images not predicted as c to c. On a model without a warping
    backdoor no class is reachable that way (cross-entropy >= 3.1 on the Fashion-MNIST BadNets models); on the
    WaNet models the target is, at cross-entropy 0.00. Returns the easiest class when its mean cross-entropy is
    below WARP_REACH_CE, else None (also for inputs that are not images).
    """
    if x.dim() != 4:
        return None
    device = x.device
    with torch.no_grad(), autocast(cfg, device):
        logits = model(x)
    own, num_classes = logits.argmax(dim=1), logits.shape[1]
    classes = torch.arange(num_classes, device=device)  # flow field c aims at class c
    theta = torch.zeros(num_classes, 2, WARP_GRID, WARP_GRID, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=WARP_LR)
    for _ in range(WARP_STEPS):
        optimizer.zero_grad()
        warped = _warp(x, theta).detach()  # [classes · M, C, H, W]
        grad_warped, losses = _reach_losses(model, warped, classes, own, cfg, forward_chunk(cfg, device))
        _warp(x, theta).backward(grad_warped)  # the warp again, this time to carry the gradient to theta
        optimizer.step()
    easiest = int(losses.argmin())
    return easiest if float(losses[easiest]) < WARP_REACH_CE else None


def _reach_losses(model: nn.Module, inputs: torch.Tensor, classes: torch.Tensor, own: torch.Tensor, cfg: AWMConfig,
                  chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """How easily each perturbation reaches its class. inputs [K·U, C, H, W] are U images under each of K
    perturbations (perturbation-major); perturbation k aims at class classes[k]; own [U] are the images' own
    labels. Returns (the gradient of the summed losses with respect to inputs [K·U, C, H, W], losses [K] fp32):
    each loss is the mean cross-entropy to its class over the images not already predicted as that class, inf
    when there is none (a class the model predicts for every image has nothing to reach). Forwarded in chunks.
    """
    k, u = classes.shape[0], own.shape[0]
    targets = classes.repeat_interleave(u)
    eligible = (own.repeat(k) != targets).float().view(k, u)
    counts = eligible.sum(dim=1)
    weights = (eligible / counts.clamp(min=1).unsqueeze(1)).flatten()
    owner = torch.arange(k, device=inputs.device).repeat_interleave(u)
    grad = torch.empty_like(inputs)
    losses = torch.zeros(k, device=inputs.device)
    for rows in chunks(inputs.shape[0], chunk):
        piece = inputs[rows].requires_grad_(True)
        with autocast(cfg, inputs.device):
            logits = model(piece).float()
        per_image = F.cross_entropy(logits, targets[rows], reduction="none") * weights[rows]
        (grad[rows],) = torch.autograd.grad(per_image.sum(), piece)
        losses.index_add_(0, owner[rows], per_image.detach())
    return grad, torch.where(counts > 0, losses, math.inf)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x [M, C, H, W] along each flow field theta [K, 2, g, g]: [K · M, C, H, W], flow-major."""
    m, _, height, width = x.shape
    k = theta.shape[0]
    flow = F.interpolate(torch.tanh(theta), size=(height, width), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    identity = torch.stack((grid_x, grid_y), dim=-1)[None]  # [1, H, W, 2] in grid_sample's (x, y) order
    grid = (identity + WARP_BUDGET * flow.permute(0, 2, 3, 1) / height).clamp(-1, 1)  # [K, H, W, 2]
    return F.grid_sample(x.repeat(k, 1, 1, 1), grid.repeat_interleave(m, dim=0), mode="bilinear",
                         padding_mode="border", align_corners=True)
