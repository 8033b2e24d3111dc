"""The untargeted trigger ascent (ALGORITHM.md step 1, the inner max): the paper's trigger recovery.

Universal triggers Δ ascend the cross-entropy of the model's own labels on x + Δ over the loop's minibatches, by SGD
at lr_trigger, and end inside the L1 ball of radius trigger_norm. Two implementations, as the loop's (awm_fast.loop):

- ascend_eager: the authors' mask_train() step 1 line by line (backend "reference"): one Δ, the own labels recomputed
  every step, the ascent's backward also filling the masks' gradients, the graph retained;
- ascend_batched: K triggers at once through awm_fast.ops.apply_triggers / trigger_step, the own labels computed once
  per epoch (the masks are frozen), the [K·U] triggered distinct images forwarded in chunks.

improved mode's default replaces both with the targeted search (awm_fast.search.TargetedSearch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast import ops
from awm_fast.batching import chunks, distinct
from awm_fast.config import AWMConfig
from awm_fast.search import random_l1_points


class TriggerKind(NamedTuple):
    """A group of triggers recovered alike: rows of the [K, ...] batch, the ascent's input clamp, the L1 radius
    projected onto after every step (inf: only once, after the loop) and the projection."""

    rows: slice
    lo: float
    hi: float
    step_radius: float
    projection: str


def ascend_eager(model: nn.Module, x: torch.Tensor, cfg: AWMConfig, minibatches: Iterable[torch.Tensor],
                 autocast: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' mask_train() step 1: one universal Δ, SGD on -CE against the model's own labels, over the row
    indices [B] int64 of each minibatch into x [N, C, H, W]. Returns (Δ [1, C, H, W] detached, the mean ascent loss)."""
    delta = torch.zeros((1, *x.shape[1:]), device=x.device, requires_grad=True)
    optimizer = torch.optim.SGD([delta], lr=cfg.lr_trigger)
    lo, hi = cfg.input_bounds
    total = torch.zeros((), device=x.device)
    for rows in minibatches:
        images = x[rows]
        with autocast():
            own_labels = model(images).argmax(dim=1)
        perturbed = (images + delta).clamp(lo, hi) if cfg.clamp_ascent else images + delta
        with autocast():
            loss = F.cross_entropy(model(perturbed).float(), own_labels)
        optimizer.zero_grad()
        (-loss).backward(retain_graph=True)
        optimizer.step()
        total += loss.detach()
        if cfg.mode != "paper":
            with torch.no_grad():
                flat = delta.view(1, -1)
                flat.copy_(ops.project_l1_ball(flat, cfg.trigger_norm, cfg.projection))
    with torch.no_grad():
        if cfg.projection == "rescale":
            delta = delta * torch.clamp(cfg.trigger_norm / delta.abs().sum(), max=1.0)
        else:
            delta = ops.project_l1_ball(delta.view(1, -1), cfg.trigger_norm, "exact").view_as(delta)
    # The ascent's backward also filled the masks' .grad, as in their code; the next zero_grad() clears it.
    return delta.detach(), total / cfg.steps


def ascend_batched(model: nn.Module, x: torch.Tensor, own_labels: torch.Tensor, cfg: AWMConfig,
                   minibatches: Iterable[torch.Tensor], generator: torch.Generator, chunk: int,
                   autocast: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """cfg.num_triggers triggers at once over x [N, C, H, W] whose own labels (the masked model's, frozen for the
    epoch) are own_labels [N] int64: forwards over the [K·U] triggered distinct images of each minibatch (row indices
    [B] int64, drawn with replacement) in chunks of at most `chunk`, then the fused step op. The restarts' random
    starts are drawn from `generator` before the first minibatch. Returns (triggers [K, C, H, W] detached, inside
    the L1 ball; the mean ascent loss)."""
    k = cfg.num_triggers
    kinds = _trigger_kinds(cfg)
    triggers = _initial_triggers(cfg, x.shape[1:], generator).to(x.device)
    total = torch.zeros((), device=x.device)
    for rows in minibatches:
        unique_rows, weights = distinct(rows)
        triggers.requires_grad_(True)
        parts = [ops.apply_triggers(x[unique_rows], triggers[kind.rows], kind.lo, kind.hi) for kind in kinds]
        perturbed = parts[0] if len(parts) == 1 else torch.cat(parts)  # [K, U, C, H, W]
        flat = perturbed.detach().flatten(0, 1)
        flat_labels, flat_weights = own_labels[unique_rows].repeat(k), weights.repeat(k)
        grad_flat = torch.empty_like(flat)
        # Σ_k (batch-mean CE of trigger k): each trigger's gradient is its own. Forwarded in chunks of at most
        # `chunk` images; the chunk gradients meet again in apply_triggers' backward.
        for piece_rows in chunks(flat.shape[0], chunk):
            piece = flat[piece_rows].requires_grad_(True)
            with autocast():
                logits = model(piece).float()
            loss = (F.cross_entropy(logits, flat_labels[piece_rows], reduction="none") * flat_weights[piece_rows]).sum()
            (grad_flat[piece_rows],) = torch.autograd.grad(loss, piece)
            total += loss.detach() / k
        (grad,) = torch.autograd.grad(perturbed, triggers, grad_flat.view_as(perturbed))
        triggers = triggers.detach()
        for kind in kinds:
            ops.trigger_step(triggers[kind.rows], grad[kind.rows], cfg.lr_trigger, kind.step_radius, "plain",
                             kind.projection)
    projected = [ops.project_l1_ball(triggers[kind.rows].flatten(1), cfg.trigger_norm, kind.projection)
                 for kind in kinds]
    return torch.cat(projected).view_as(triggers), total / cfg.steps


def _trigger_kinds(cfg: AWMConfig) -> list[TriggerKind]:
    """How each trigger is recovered: the dense ones as cfg says, then the cfg.sparse_triggers sparse ones."""
    dense = cfg.num_triggers - cfg.sparse_triggers
    lo, hi = cfg.input_bounds if cfg.clamp_ascent else (-math.inf, math.inf)
    # The paper projects once after the loop; otherwise every step is a projected ascent step.
    radius = math.inf if cfg.mode == "paper" else cfg.trigger_norm
    kinds = [TriggerKind(slice(0, dense), lo, hi, radius, cfg.projection),
             TriggerKind(slice(dense, cfg.num_triggers), *cfg.input_bounds, cfg.trigger_norm, "exact")]
    return [kind for kind in kinds if kind.rows.stop > kind.rows.start]


def _initial_triggers(cfg: AWMConfig, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """[num_triggers, *shape] fp32 on the CPU: the first trigger of each kind (dense, sparse) starts at zero, as the
    paper's; every other one (a restart) at a random point of L1 norm τ/2."""
    k = cfg.num_triggers
    triggers = torch.zeros((k, *shape))
    restarts = [row for row in range(1, k) if row != k - cfg.sparse_triggers]
    if restarts:
        triggers[restarts] = random_l1_points(len(restarts), tuple(shape), 0.5 * cfg.trigger_norm, generator)
    return triggers
