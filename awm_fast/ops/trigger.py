"""The batched trigger step: apply K triggers to B images, ascend, project onto the L1 ball.

Pure-PyTorch implementation; the C++/CUDA extension (csrc/) replaces it where built.
"""

from __future__ import annotations

import math

import torch

PROJECTIONS = ("exact", "rescale")
ASCENTS = ("plain", "sign")


def extension_available() -> bool:
    """True when the compiled extension `awm_fast._C` is loaded."""
    return False


def apply_triggers(x: torch.Tensor, triggers: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """clamp(x[b] + triggers[k], lo, hi) for every pair: x [B, ...], triggers [K, ...] -> [K, B, ...].

    lo=-inf, hi=inf apply no clamp. Differentiable in x and triggers.
    """
    out = x.unsqueeze(0) + triggers.unsqueeze(1)
    if math.isinf(lo) and math.isinf(hi):
        return out
    return out.clamp(lo, hi)


def project_l1_ball(v: torch.Tensor, radius: float, mode: str = "exact") -> torch.Tensor:
    """Project each row of v [K, n] onto {u : ‖u‖₁ ≤ radius}; returns a new tensor.

    mode="exact": the Euclidean projection (Duchi et al. 2008, sort-based).
    mode="rescale": the authors' radial rescaling v · min(1, radius / ‖v‖₁).
    """
    if mode not in PROJECTIONS:
        raise ValueError(f"unknown projection mode {mode!r}; expected one of {PROJECTIONS}")
    v64 = v.double()
    norms = v64.abs().sum(dim=1, keepdim=True)
    if mode == "rescale":
        scale = torch.where(norms > radius, radius / norms.clamp_min(1e-300), torch.ones_like(norms))
        return (v64 * scale).to(v.dtype)
    magnitudes, _ = v64.abs().sort(dim=1, descending=True)
    cumsum = magnitudes.cumsum(dim=1)
    ranks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=torch.float64)
    # rho = the largest j with |v|_(j) > (cumsum_j - r) / j; theta = (cumsum_rho - r) / rho.
    support = magnitudes * ranks > (cumsum - radius)
    rho = support.sum(dim=1, keepdim=True).clamp_min(1)
    theta = ((cumsum.gather(1, rho - 1) - radius) / rho).clamp_min(0)
    projected = v64.sign() * (v64.abs() - theta).clamp_min(0)
    inside = norms <= radius
    return torch.where(inside, v64, projected).to(v.dtype)


@torch.no_grad()
def trigger_step(
    triggers: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    radius: float = math.inf,
    ascent: str = "plain",
    projection: str = "exact",
) -> torch.Tensor:
    """In place: triggers += lr · ascent(grad), then project each trigger onto the L1 ball of `radius`.

    triggers, grad [K, ...]; `grad` is the gradient of the loss to MAXIMISE. ascent="plain" steps along
    grad (SGD on the negated loss); "sign" along sign(grad). radius=inf skips the projection.
    """
    if ascent not in ASCENTS:
        raise ValueError(f"unknown ascent {ascent!r}; expected one of {ASCENTS}")
    step = grad if ascent == "plain" else grad.sign()
    triggers.add_(step.to(triggers.dtype), alpha=lr)
    if not math.isinf(radius):
        flat = triggers.view(triggers.shape[0], -1)
        flat.copy_(project_l1_ball(flat, radius, projection))
    return triggers
