"""How easily perturbations move images: the losses the trigger searches descend, with their gradients.

reach_losses: toward a class (the targeted search's candidates, the warp check's flow fields). away_losses: off the
images' own labels (the all-to-all check's and hunt's universal triggers). Both forward the perturbed images in
chunks of at most forward_chunk and return the gradient with respect to the perturbed images, which the caller
carries back to its perturbation (an additive trigger or a flow field).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast.batching import autocast, chunks
from awm_fast.config import AWMConfig


def reach_losses(model: nn.Module, inputs: torch.Tensor, classes: torch.Tensor, own: torch.Tensor, cfg: AWMConfig,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """How easily each perturbation reaches its class. inputs [K·U, C, H, W] are U images under each of K
    perturbations (perturbation-major); perturbation k aims at class classes[k]; own [U] are the images' own
    labels. Returns (the gradient of the summed losses with respect to inputs [K·U, C, H, W], losses [K] fp32):
    each loss is the mean cross-entropy to its class over the images not already predicted as that class, inf
    when there is none (a class the model predicts for every image has nothing to reach). Forwarded in chunks.
    """
    k, u = classes.shape[0], own.shape[0]
    targets = classes.repeat_interleave(u)
    eligible = (own.repeat(k) != targets).view(k, u)

    def reaching(logits: torch.Tensor, rows: slice) -> torch.Tensor:
        return F.cross_entropy(logits, targets[rows], reduction="none")

    return _mean_losses(model, inputs, eligible, reaching, cfg, chunk)


def away_losses(model: nn.Module, inputs: torch.Tensor, k: int, own: torch.Tensor, staying: list[int],
                cfg: AWMConfig, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each perturbation moves the images off their own labels. inputs [K·U, C, H, W] as in reach_losses;
    own [U] the images' own labels; staying: classes a move to which counts as none. Returns (the gradient of the
    summed losses with respect to inputs, losses [K] fp32): each loss is the mean over the images whose own label
    is not staying of -log P(a class neither theirs nor staying), the cross-entropy of leaving; unlike the
    untargeted search's -CE(own) it is bounded below (by 0), so an image once moved stops pulling the trigger.
    """
    u = own.shape[0]
    stays = torch.tensor(staying, device=inputs.device, dtype=own.dtype)
    eligible = (~torch.isin(own, stays)).repeat(k).view(k, u)
    owners = own.repeat(k)

    def leaving(logits: torch.Tensor, rows: slice) -> torch.Tensor:
        stay = F.one_hot(owners[rows], logits.shape[1]).bool()
        stay[:, stays] = True
        # log P(leave) = logsumexp over the other classes' logits - logsumexp over all: exact, no 1 - p cancellation.
        return logits.logsumexp(dim=1) - logits.masked_fill(stay, -math.inf).logsumexp(dim=1)

    return _mean_losses(model, inputs, eligible, leaving, cfg, chunk)


def _mean_losses(model: nn.Module, inputs: torch.Tensor, eligible: torch.Tensor, per_image, cfg: AWMConfig,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs [K·U, C, H, W] (perturbation-major), eligible [K, U] bool: which images count for each perturbation,
    per_image(logits [R, classes] fp32, rows) -> losses [R]. Returns (the gradient of the summed per-perturbation
    means with respect to inputs, the means [K] fp32, inf where no image is eligible). Forwarded in chunks."""
    k = eligible.shape[0]
    counts = eligible.sum(dim=1).float()
    weights = (eligible.float() / counts.clamp(min=1).unsqueeze(1)).flatten()
    owner = torch.arange(k, device=inputs.device).repeat_interleave(eligible.shape[1])
    grad = torch.empty_like(inputs)
    losses = torch.zeros(k, device=inputs.device)
    for rows in chunks(inputs.shape[0], chunk):
        piece = inputs[rows].requires_grad_(True)
        with autocast(cfg, inputs.device):
            logits = model(piece).float()
        weighted = per_image(logits, rows) * weights[rows]
        (grad[rows],) = torch.autograd.grad(weighted.sum(), piece)
        losses.index_add_(0, owner[rows], weighted.detach())
    return grad, torch.where(counts > 0, losses, math.inf)
