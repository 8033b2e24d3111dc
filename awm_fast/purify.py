"""purify(): Adversarial Weight Masking on any PyTorch classifier (ALGORITHM.md).

The algorithm never names a kernel: masked modules dispatch on their `backend`. Two implementations
of the trigger phase exist: `_recover_trigger_eager`, the authors' code line by line (backend
"reference"), and `_recover_triggers_batched`, K triggers in one batched forward through the trigger
ops of awm_fast.ops (every other backend). With K=1 and mode="paper" they compute the same thing.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast import ops
from awm_fast.config import AWMConfig, make_config
from awm_fast.inputs import as_tensors, augment_one_shot, check_bounds, is_one_shot
from awm_fast.masking import AttachedMasks, attach_masks, select_layers

SHRINK_LR = 1e-3  # the authors' lr1: Adam learning rate of the optional shrink warm-up


@dataclasses.dataclass
class PurifyResult:
    """What purify() returns.

    model:   the purified model: same class as the input, W := W⊙m folded in, eval mode, same device.
    masks:   {qualified weight name, e.g. "features.0.weight": mask tensor (fp32, values in [0, 1])}.
    trigger: the recovered trigger of the last outer epoch, shaped like one input [C, H, W]
             (or [K, C, H, W] when num_triggers = K > 1).
    history: one dict per outer epoch: losses, mask L1 norm, seconds, and whatever eval_fn returned.
    config:  the resolved AWMConfig that ran (trigger_norm, steps, mask_layers... filled in).
    """

    model: nn.Module
    masks: dict[str, torch.Tensor]
    trigger: torch.Tensor
    history: list[dict[str, float]]
    config: AWMConfig


def purify(model: nn.Module, data, config: AWMConfig | None = None, *,
           eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
           verbose: bool = False, **overrides: Any) -> PurifyResult:
    """Erase a backdoor from `model` with Adversarial Weight Masking, using a few clean labelled samples.

    model:     a classifier nn.Module returning logits [B, num_classes]. Not modified unless inplace=True.
    data:      (x [N, C, H, W] float in input_bounds, y [N] int) tensors, a Dataset of (x, y), or a
               DataLoader. One sample per class works: the authors' augmentation then adds copies.
    config:    an AWMConfig; keyword `overrides` (any AWMConfig field) are applied on top. Unknown
               names raise TypeError.
    eval_fn:   called after each outer epoch with the masked model (no grad); the dict it returns
               (e.g. {"acc": .., "asr": ..}) is merged into that epoch's history entry.
    verbose:   print one progress line per `log_every` outer epochs to stderr.
    """
    cfg = make_config(config, overrides)
    x, y = as_tensors(data)
    check_bounds(x, cfg.input_bounds)
    model_device = _module_device(model)
    device = torch.device(cfg.device) if cfg.device is not None else model_device
    generator = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else torch.Generator()
    if cfg.seed is None:
        generator.seed()
    if cfg.one_shot_augment and is_one_shot(y):
        x, y = augment_one_shot(x, y, cfg.one_shot_augment, generator)
    cfg = cfg.resolve(input_numel=x[0].numel(), num_samples=x.shape[0])

    work = model if cfg.inplace else copy.deepcopy(model)
    layer_names = select_layers(work, cfg.mask_layers)
    if not layer_names:
        raise ValueError(f"the model has no layer that mask_layers={cfg.mask_layers!r} selects "
                         "(AWM masks Conv2d and/or Linear weights)")
    requires_grad = {name: p.requires_grad for name, p in work.named_parameters()}
    work.to(device).eval().requires_grad_(False)
    x, y = x.to(device), y.to(device)
    backend = ops.resolve_backend(cfg.backend, device)
    attached = attach_masks(work, layer_names, backend)
    try:
        _check_logits(work, x, y)
        trigger, history = _AWMLoop(work, attached, x, y, cfg, generator, eval_fn, verbose).run()
    except BaseException:
        attached.detach()  # leave the model as it was found, not half-masked
        work.to(model_device)
        _restore_requires_grad(work, requires_grad)
        raise
    masks = attached.fold()
    work.to(model_device).eval()
    _restore_requires_grad(work, requires_grad)
    return PurifyResult(work, masks, trigger.detach().to(model_device), history, cfg)


class _AWMLoop:
    """The outer loop of ALGORITHM.md over an already masked model; all state lives on `device`."""

    def __init__(self, model: nn.Module, attached: AttachedMasks, x: torch.Tensor, y: torch.Tensor,
                 cfg: AWMConfig, generator: torch.Generator, eval_fn, verbose: bool) -> None:
        self.model, self.cfg, self.x, self.y, self.generator = model, cfg, x, y, generator
        self.masks = list(attached.masks.values())
        self.eager = attached.modules[0].backend == "reference"
        self.eval_fn, self.verbose = eval_fn, verbose
        self.device = x.device
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        # Loss scaling only where fp16 gradients can underflow in practice: CUDA.
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" and x.is_cuda else None
        self.teacher_probs = self._teacher_probs() if cfg.clean_loss == "distill" else None

    def run(self) -> tuple[torch.Tensor, list[dict[str, float]]]:
        cfg = self.cfg
        if cfg.shrink_steps:
            shrink_optimizer = torch.optim.Adam(self.masks, lr=SHRINK_LR)
            for _ in range(cfg.shrink_steps):
                for batch in self._minibatches():
                    self._mask_step(shrink_optimizer, batch, triggers=None)
        optimizer = torch.optim.Adam(self.masks, lr=cfg.lr_mask)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, cfg.lr_decay) if cfg.lr_decay else None
        history = []
        for epoch in range(cfg.outer):
            start = time.perf_counter()
            self._set_masks_trainable(False)
            triggers, ascent_loss = self._recover_triggers()
            self._set_masks_trainable(True)
            sums = torch.zeros(3, device=self.device)  # loss, clean term, trigger term: one sync per epoch
            for batch in self._minibatches():
                sums += self._mask_step(optimizer, batch, triggers)
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            history.append(self._epoch_record(epoch, sums / cfg.steps, ascent_loss, triggers, lr, start))
        trigger = triggers[0] if cfg.num_triggers == 1 else triggers
        return trigger, history

    # ---- sampling ------------------------------------------------------------------------------

    def _minibatches(self):
        """`steps` minibatches drawn with replacement, fresh each call (the authors' RandomSampler)."""
        index = torch.randint(0, self.x.shape[0], (self.cfg.steps, self.cfg.batch_size), generator=self.generator)
        yield from index.to(self.device)

    # ---- step 1: trigger recovery (inner max) ------------------------------------------------------

    def _recover_triggers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Triggers [K, C, H, W] (detached) and the mean ascent loss."""
        if self.eager:
            return self._recover_trigger_eager()
        return self._recover_triggers_batched()

    def _recover_trigger_eager(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' mask_train() step 1: one universal Δ, SGD on -CE against the model's own labels."""
        cfg = self.cfg
        delta = torch.zeros((1, *self.x.shape[1:]), device=self.device, requires_grad=True)
        optimizer = torch.optim.SGD([delta], lr=cfg.lr_trigger)
        lo, hi = cfg.input_bounds
        total = torch.zeros((), device=self.device)
        for rows in self._minibatches():
            images = self.x[rows]
            with torch.no_grad(), self._autocast():
                own_labels = self.model(images).argmax(dim=1)
            perturbed = (images + delta).clamp(lo, hi) if cfg.clamp_ascent else images + delta
            with self._autocast():
                loss = F.cross_entropy(self.model(perturbed).float(), own_labels)
            optimizer.zero_grad()
            (-loss).backward()
            optimizer.step()
            total += loss.detach()
            if cfg.mode != "paper":
                with torch.no_grad():
                    delta.copy_(ops.project_l1_ball(delta.view(1, -1), cfg.trigger_norm, cfg.projection)
                                .view_as(delta))
        with torch.no_grad():
            if cfg.projection == "rescale":
                norm = delta.abs().sum()
                delta = delta * torch.clamp(cfg.trigger_norm / norm, max=1.0)
            else:
                delta = ops.project_l1_ball(delta.view(1, -1), cfg.trigger_norm, "exact").view_as(delta)
        return delta.detach(), total / cfg.steps

    def _recover_triggers_batched(self) -> tuple[torch.Tensor, torch.Tensor]:
        """K triggers at once: one forward over the [K·B] triggered batch, the fused trigger-step op."""
        cfg = self.cfg
        k = cfg.num_triggers
        triggers = self._initial_triggers(k)
        lo, hi = cfg.input_bounds if cfg.clamp_ascent else (-math.inf, math.inf)
        # The paper projects once after the loop; otherwise every step is a projected ascent step.
        step_radius = math.inf if cfg.mode == "paper" else cfg.trigger_norm
        total = torch.zeros((), device=self.device)
        for rows in self._minibatches():
            images = self.x[rows]
            with torch.no_grad(), self._autocast():
                own_labels = self.model(images).argmax(dim=1)
            triggers.requires_grad_(True)
            perturbed = ops.apply_triggers(images, triggers, lo, hi)  # [K, B, C, H, W]
            with self._autocast():
                logits = self.model(perturbed.flatten(0, 1)).float()
            # Sum over triggers of each trigger's batch-mean CE: trigger k's gradient is its own.
            loss = F.cross_entropy(logits, own_labels.repeat(k), reduction="sum") / images.shape[0]
            (grad,) = torch.autograd.grad(loss, triggers)
            triggers = triggers.detach()
            ops.trigger_step(triggers, grad, cfg.lr_trigger, step_radius, "plain", cfg.projection)
            total += loss.detach() / k
        projected = ops.project_l1_ball(triggers.flatten(1), cfg.trigger_norm, cfg.projection)
        return projected.view_as(triggers), total / cfg.steps

    def _initial_triggers(self, k: int) -> torch.Tensor:
        """Trigger 0 starts at zero (the paper); restarts 1..K-1 at random points of L1 norm τ/2."""
        shape = (k, *self.x.shape[1:])
        triggers = torch.zeros(shape)
        if k > 1:
            noise = torch.rand((k - 1, *shape[1:]), generator=self.generator) * 2 - 1
            noise *= 0.5 * self.cfg.trigger_norm / noise.flatten(1).abs().sum(1).view(-1, *[1] * (len(shape) - 1))
            triggers[1:] = noise
        return triggers.to(self.device)

    # ---- step 2: mask update (outer min) ---------------------------------------------------------------

    def _mask_step(self, optimizer: torch.optim.Optimizer, rows: torch.Tensor,
                   triggers: torch.Tensor | None) -> torch.Tensor:
        """One Adam step on the masks, then clamp to [0, 1]. Returns [loss, clean term, trigger term]."""
        cfg = self.cfg
        images, labels = self.x[rows], self.y[rows]
        lo, hi = cfg.input_bounds
        with self._autocast():
            if triggers is None:  # shrink warm-up: clean term only
                clean_logits, trigger_term = self.model(images).float(), torch.zeros((), device=self.device)
            elif self.eager:  # the authors' two forward passes
                perturbed = (images + triggers[0]).clamp(lo, hi)
                trigger_term = F.cross_entropy(self.model(perturbed).float(), labels)
                clean_logits = self.model(images).float()
            else:  # eval-mode BatchNorm makes samples independent: one forward over clean + K triggered
                perturbed = ops.apply_triggers(images, triggers, lo, hi).flatten(0, 1)
                logits = self.model(torch.cat([images, perturbed])).float()
                clean_logits, triggered_logits = logits[: len(images)], logits[len(images):]
                trigger_term = F.cross_entropy(triggered_logits, labels.repeat(cfg.num_triggers))
        clean_term = self._clean_loss(clean_logits, labels, rows)
        alpha = 1.0 if triggers is None else cfg.alpha
        l1 = torch.stack([m.abs().sum() for m in self.masks]).sum()
        loss = alpha * clean_term + (1 - alpha) * trigger_term + cfg.gamma * l1
        optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            torch._foreach_clamp_min_(self.masks, 0.0)
            torch._foreach_clamp_max_(self.masks, 1.0)
        return torch.stack([loss.detach(), clean_term.detach(), trigger_term.detach()])

    def _clean_loss(self, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.teacher_probs is None:
            return F.cross_entropy(logits, labels)
        return F.kl_div(F.log_softmax(logits, dim=1), self.teacher_probs[rows], reduction="batchmean")

    @torch.no_grad()
    def _teacher_probs(self) -> torch.Tensor:
        """Softmax of the unpurified model (masks are all ones now) on every sample: [N, num_classes] fp32."""
        with self._autocast():
            return torch.cat([self.model(chunk).float().softmax(dim=1) for chunk in self.x.split(512)])

    # ---- bookkeeping -------------------------------------------------------------------------------

    def _set_masks_trainable(self, trainable: bool) -> None:
        # Trigger steps need no mask gradient: switching it off skips the grad_m GEMMs entirely.
        for mask in self.masks:
            mask.requires_grad_(trainable)

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _epoch_record(self, epoch: int, means: torch.Tensor, ascent_loss: torch.Tensor, triggers: torch.Tensor,
                      lr: float, start: float) -> dict[str, float]:
        with torch.no_grad():
            mask_l1 = torch.stack([m.sum() for m in self.masks]).sum()
            numel = sum(m.numel() for m in self.masks)
            stats = torch.stack([*means, ascent_loss, mask_l1, triggers.flatten(1).abs().sum(1).max()]).tolist()
        record = {"epoch": epoch + 1, "loss": stats[0], "clean_loss": stats[1], "trigger_loss": stats[2],
                  "ascent_loss": stats[3], "mask_l1": stats[4], "mask_mean": stats[4] / numel,
                  "trigger_l1": stats[5], "lr_mask": lr}
        if self.eval_fn is not None:
            with torch.no_grad():
                record.update(self.eval_fn(self.model))
            self.model.eval()
        record["seconds"] = time.perf_counter() - start
        if self.verbose and self.cfg.log_every and (epoch + 1) % self.cfg.log_every == 0:
            _print_progress(record, self.cfg.outer)
        return record


def _print_progress(record: dict[str, float], outer: int) -> None:
    extras = "".join(f"  {key} {value:.4f}" for key, value in record.items()
                     if key not in {"epoch", "loss", "clean_loss", "trigger_loss", "ascent_loss", "mask_l1",
                                    "mask_mean", "trigger_l1", "lr_mask", "seconds"}
                     and isinstance(value, (int, float)))
    print(f"[awm] epoch {record['epoch']:>3}/{outer}  loss {record['loss']:.4f}  clean {record['clean_loss']:.4f}"
          f"  triggered {record['trigger_loss']:.4f}  mask mean {record['mask_mean']:.4f}{extras}"
          f"  {record['seconds']:.2f}s", file=sys.stderr, flush=True)


def _module_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        raise ValueError("the model has no parameters: nothing to purify")
    return tensor.device


@torch.no_grad()
def _check_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The model must map x [B, ...] to logits [B, C] with C covering every label."""
    try:
        logits = model(x[:2])
    except Exception as exc:  # the model rejected the input: say so in one line, keep the cause chained
        raise ValueError(f"the model rejects inputs of shape {tuple(x.shape[1:])}: {exc}") from exc
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != min(2, len(x)):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits [B, num_classes]; got {shape} for a batch of {min(2, len(x))}")
    if int(y.max()) >= logits.shape[1]:
        raise ValueError(f"label {int(y.max())} is out of range for a model with {logits.shape[1]} outputs")


def _restore_requires_grad(model: nn.Module, flags: dict[str, bool]) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(flags.get(name, parameter.requires_grad))
