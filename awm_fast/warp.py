"""The warp check (round 6): which class imperceptible smooth warps reach, the target of a warping backdoor.

A warping backdoor (WaNet) is no additive patch, so TargetedSearch (awm_fast/search.py) cannot name its target:
per class, a half-pixel smooth flow field is fitted to send the images to that class, and a class such warps reach
is a warping backdoor's target. purify runs it before the targeted search and hands the search the class it names.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast.batching import autocast, forward_chunk
from awm_fast.config import AWMConfig
from awm_fast.reach import reach_losses
from awm_fast.search import SCREEN_BLOCK, screens_classes

# The warp check (warp_suspect), measured on Fashion-MNIST with these values (round 6):
WARP_GRID = 4  # control points per side of the smooth flow field, upsampled bicubically to H x W
WARP_BUDGET = 1.0  # largest displacement, in units of 1/H of the normalised [-1, 1] coordinates (half a pixel)
WARP_STEPS = 60  # Adam steps on the flow fields
WARP_LR = 0.1
WARP_REACH_CE = 1.0  # a class is warp-reachable when the images' mean cross-entropy to it falls below this
WARP_MAX_IMAGES = 128  # at most this many images (a random subset, drawn once) beyond one shot (round 8)
WARP_SCREEN_STEPS = 20  # the warp check's class screen (cfg.class_shortlist): Adam steps per class's flow field,
WARP_SCREEN_IMAGES = 32  # on this many of its images (a random subset, drawn once), SCREEN_BLOCK classes at a time


def warp_suspect(model: nn.Module, x: torch.Tensor, cfg: AWMConfig,
                 generator: torch.Generator | None = None) -> int | None:
    """The class that imperceptible smooth warps send the images x [M, C, H, W] to, or None.

    A warping backdoor (WaNet) is no additive patch, so TargetedSearch cannot name its target. For every class
    c a smooth flow field (WARP_GRID² control points, tanh-bounded, bicubically upsampled, displacement at most
    half a pixel) is fitted with Adam to send the images not predicted as c to c. On a model without a warping
    backdoor no class is reachable that way (cross-entropy >= 3.1 on the Fashion-MNIST BadNets models); on the
    WaNet models the target is, at cross-entropy 0.00. Returns the easiest class when its mean cross-entropy is
    below WARP_REACH_CE, else None (also for inputs that are not images). More than WARP_MAX_IMAGES images are
    subsampled (drawn with `generator`, or with a generator seeded 0 when None: the global RNG is never read): the
    cost is classes x images forwards per step. With more classes than cfg.class_shortlist, a screen
    (WARP_SCREEN_STEPS steps on WARP_SCREEN_IMAGES images per class) picks the classes the full fit tries.
    """
    if x.dim() != 4:
        return None
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if x.shape[0] > WARP_MAX_IMAGES:
        x = x[torch.randperm(x.shape[0], generator=generator)[:WARP_MAX_IMAGES].to(x.device)]
    device = x.device
    with torch.no_grad(), autocast(cfg, device):
        logits = model(x)
    own, num_classes = logits.argmax(dim=1), logits.shape[1]
    classes = torch.arange(num_classes, device=device)  # flow field k aims at class classes[k]
    if screens_classes(cfg, num_classes):
        rows = torch.randperm(x.shape[0], generator=generator)[:WARP_SCREEN_IMAGES].to(device)
        screened = torch.cat([_warp_losses(model, x[rows], own[rows], block, cfg, WARP_SCREEN_STEPS)
                              for block in classes.split(SCREEN_BLOCK)])
        classes = screened.argsort()[: cfg.class_shortlist]
    losses = _warp_losses(model, x, own, classes, cfg, WARP_STEPS)
    easiest = int(losses.argmin())
    return int(classes[easiest]) if float(losses[easiest]) < WARP_REACH_CE else None


def warped_copies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, suspect: int,
                  cfg: AWMConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The images x [N, C, H, W] (labels y [N] int64), then those of them that the warp check's own flow field for
    `suspect` sends there, with their own labels: ([N + W, C, H, W], [N + W]).

    The field is fitted as warp_suspect fits it (WARP_STEPS Adam steps) on the model's labels of the first
    WARP_MAX_IMAGES images (purify's originals come first), then applied to every image. Whole images where the
    warping backdoor fires, trained back to their labels, erase it as the crops round 6 keeps do, without a crop's
    label noise (docs/EFFICACY.md, round 27). Images labelled `suspect` are not added. `model` in eval mode."""
    fitted = x[:WARP_MAX_IMAGES]
    with torch.no_grad(), autocast(cfg, x.device):
        own = model(fitted).argmax(dim=1)
    theta, _ = _fit_flows(model, fitted, own, torch.tensor([suspect], device=x.device), cfg, WARP_STEPS)
    with torch.no_grad():
        warped = _warp(x, theta.detach())
        with autocast(cfg, x.device):
            sent = torch.cat([model(part).argmax(dim=1) for part in warped.split(forward_chunk(cfg, x.device))])
    keep = (sent == suspect) & (y != suspect)
    return torch.cat([x, warped[keep]]), torch.cat([y, y[keep]])


def _warp_losses(model: nn.Module, x: torch.Tensor, own: torch.Tensor, classes: torch.Tensor, cfg: AWMConfig,
                 steps: int) -> torch.Tensor:
    """Per class of classes [K] int64, how easily smooth warps reach it from the images x [M, C, H, W] (own [M]:
    their labels): one flow field per class, `steps` Adam steps; the mean cross-entropy [K] fp32 measured before the
    last step (inf for a class every image already is)."""
    return _fit_flows(model, x, own, classes, cfg, steps)[1]


def _fit_flows(model: nn.Module, x: torch.Tensor, own: torch.Tensor, classes: torch.Tensor, cfg: AWMConfig,
               steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """_warp_losses' fit: (the flow fields theta [K, 2, WARP_GRID, WARP_GRID] after the last step, the losses)."""
    theta = torch.zeros(classes.shape[0], 2, WARP_GRID, WARP_GRID, device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=WARP_LR)
    for _ in range(steps):
        optimizer.zero_grad()
        warped = _warp(x, theta).detach()  # [K · M, C, H, W]
        grad_warped, losses = reach_losses(model, warped, classes, own, cfg, forward_chunk(cfg, x.device))
        _warp(x, theta).backward(grad_warped)  # the warp again, this time to carry the gradient to theta
        optimizer.step()
    return theta.detach(), losses


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
