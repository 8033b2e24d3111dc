"""purify(): Adversarial Weight Masking on any PyTorch classifier (ALGORITHM.md).

This module holds the API: checking the inputs, copying the model, attaching the masks, folding them
into the weights and handing back a PurifyResult. The loop itself is awm_fast.loop.AWMLoop.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from awm_fast import ops
from awm_fast.config import AWMConfig, make_config
from awm_fast.feature_distill import linear_layers
from awm_fast.inputs import (
    as_tensors,
    augment_one_shot,
    augment_one_shot_consistent,
    check_bounds,
    check_classes,
    copies_per_image,
    is_one_shot,
)
from awm_fast.loop import AWMLoop, check_backend_options
from awm_fast.masking import attach_masks, select_layers
from awm_fast.search import (
    RESIDUAL_RADIUS_FACTOR,
    RESIDUAL_STANDOUT,
    TARGETED_REACH_CE,
    TargetedSearch,
    screens_classes,
)
from awm_fast.warp import warp_suspect, warped_copies


@dataclasses.dataclass
class PurifyResult:
    """What purify() returns.

    model:   the purified model: same class as the input, W := W⊙m folded in, eval mode, same device.
    masks:   {qualified weight name, e.g. "features.0.weight": mask tensor (fp32, values in [0, 1])}.
    trigger: the recovered trigger of the last outer epoch, shaped like one input [C, H, W]
             (or [K, C, H, W] when num_triggers = K > 1).
    history: one dict per outer epoch: losses, mask L1 norm, seconds, and whatever eval_fn returned; the epochs
             extra_outer added carry "extra": 1.0, those residual_outer added "residual": 1.0; the residual
             check's "suspect_standout" sits in the record of the epoch after which it ran (the last one's last).
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
               DataLoader. One sample per class works: the authors' augmentation then adds copies
               (improved mode adds label-consistent ones at every shot count). At least two classes
               are needed.
    config:    an AWMConfig; keyword `overrides` (any AWMConfig field) are applied on top. Unknown
               names raise TypeError.
    eval_fn:   called after each outer epoch with the masked model (no grad); the dict it returns
               (e.g. {"acc": .., "asr": ..}) is merged into that epoch's history entry.
    verbose:   print one progress line per `log_every` outer epochs to stderr.

    Devices: AWM runs on `config.device`, else on the model's device. Every parameter and buffer of the
    model must sit on one device (a model spread over several raises ValueError). x and y must share a
    device, which may differ from the model's: the few-shot data is copied to the run device (the
    caller's tensors are untouched). The result (model, masks, trigger) is on the model's own device.
    Mode: AWM needs eval mode (BatchNorm running statistics, no dropout). A model in train mode gets one
    UserWarning and its working copy is switched to eval; the caller's model keeps its mode unless
    inplace=True. On any error the model is left as it was found: weights, modes, requires_grad, device.
    Determinism: every random draw comes from a CPU torch.Generator seeded with config.seed (the global RNG
    is never read), so on the CPU the same seed gives bit-identical masks, trigger and history for every
    backend. On CUDA the draws are the same but reductions may not be (cuDNN/cuBLAS algorithm choice and
    atomics, TF32, Triton autotuning): see the README.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable or None, got {type(eval_fn).__name__}")
    cfg = make_config(config, overrides)
    x, y = as_tensors(data)
    check_bounds(x, cfg.input_bounds)
    check_classes(y)
    originals = x.shape[0]
    # The authors augment one-shot sets; improved mode augments images at every shot count (crops and flips
    # are image operations: other inputs with more than one sample per class are left as they are).
    augment = is_one_shot(y) or (cfg.resolved_augment_beyond_one_shot() and x.dim() == 4)
    copies = copies_per_image(y, cfg.one_shot_augment) if augment else 0
    # The filtered set's size is known only once the model has labelled the candidates (below): the step count
    # follows the size the augmentation aims for, N·(1 + copies), so filtering never changes it.
    cfg = cfg.resolve(input_numel=x[0].numel(), num_samples=originals * (1 + copies),
                      input_channels=x.shape[1] if x.dim() == 4 else 1, one_shot=is_one_shot(y),
                      has_conv=bool(select_layers(model, "conv")),
                      has_linear=bool(linear_layers(model)))
    model_device = _module_device(model)
    device = _run_device(cfg.device, model_device)
    backend = ops.resolve_backend(cfg.backend, device)
    check_backend_options(cfg, backend)  # before any work is done
    generator = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else torch.Generator()
    if cfg.seed is None:
        generator.seed()
    filter_copies = copies > 0 and cfg.one_shot_filter
    if copies > 0 and not filter_copies:
        x, y = augment_one_shot(x, y, copies, generator)

    work = model if cfg.inplace else copy.deepcopy(model)
    layer_names = select_layers(work, cfg.mask_layers)
    if not layer_names:
        raise ValueError(f"the model has no layer that mask_layers={cfg.mask_layers!r} selects "
                         "(AWM masks Conv2d and/or Linear weights)")
    if any(module.training for module in model.modules()):
        target = "the model itself (inplace=True)" if cfg.inplace else "purify's copy (your model keeps its mode)"
        warnings.warn("purify: the model is in train mode; AWM runs in eval mode (BatchNorm running statistics, "
                      f"no dropout), so {target} is switched to eval", UserWarning, stacklevel=2)
    requires_grad = {name: p.requires_grad for name, p in work.named_parameters()}
    training = {name: module.training for name, module in work.named_modules()}
    attached = None
    try:
        work.to(device).eval().requires_grad_(False)
        x, y = x.to(device), y.to(device)
        num_classes = _check_logits(work, x, y)
        if verbose and cfg.trigger_search == "targeted" and screens_classes(cfg, num_classes):
            print(f"purify: {num_classes} classes: the first epoch's searches screen every class and search the "
                  f"{cfg.class_shortlist} reached most easily in full (class_shortlist)", file=sys.stderr)
        suspect = None
        if filter_copies:
            # The targeted search also checks for a warping backdoor, whose target its patches cannot name: the
            # copies the model sends there are where that backdoor fires, so they are kept (with their labels).
            suspect = warp_suspect(work, x, cfg, generator) if cfg.trigger_search == "targeted" else None
            x, y = augment_one_shot_consistent(work, x, y, copies, generator, suspect=suspect,
                                               suspect_runner_up=cfg.warp_copies)
            if verbose:
                also = "" if suspect is None else f" (and those sent to class {suspect}, which half-pixel warps reach)"
                print(f"purify: kept {x.shape[0] - originals} label-consistent augmented copies{also} of "
                      f"{copies * originals} wanted", file=sys.stderr)
            if suspect is not None and cfg.warp_copies:
                kept = x.shape[0]
                x, y = warped_copies(work, x, y, suspect, cfg)
                if verbose:
                    print(f"purify: added {x.shape[0] - kept} images the warp check's flow field sends to class "
                          f"{suspect} (warp_copies)", file=sys.stderr)
        search = TargetedSearch(work, x, cfg, generator, suspect) if cfg.trigger_search == "targeted" else None
        attached = attach_masks(work, layer_names, backend)
        trigger, history = AWMLoop(work, attached, x, y, cfg, generator, eval_fn, verbose, search).run()
    except BaseException:
        if attached is not None:
            attached.detach()  # leave the model as it was found, not half-masked
        work.to(model_device)
        _restore_requires_grad(work, requires_grad)
        _restore_training(work, training)
        raise
    masks = attached.fold()
    work.to(model_device).eval()
    _restore_requires_grad(work, requires_grad)
    if search is not None:
        planned = [record for record in history if not record.get("residual")]
        warned = _warn_if_the_hunt_still_reaches(planned, search, cfg.outer)
        if "suspect_standout" in history[-1] and not warned:
            _warn_if_the_suspect_still_stands_out(history, search.suspect, RESIDUAL_RADIUS_FACTOR * cfg.targeted_norm)
    return PurifyResult(work, masks, trigger.detach().to(model_device), history, cfg)


def _warn_if_the_suspect_still_stands_out(history: list[dict[str, float]], suspect: int, radius: float) -> None:
    """A UserWarning when the residual check found the suspect standing out on the purified model (the last
    record's "suspect_standout", the runner-up's cross-entropy over the suspect's at L1 `radius`, above
    RESIDUAL_STANDOUT): the hunt failed, but what is left of the backdoor is larger than its radius; or when
    residual_outer's epochs ran (records with "residual") until it no longer did, which does not show the backdoor
    is gone (docs/EFFICACY.md, rounds 21-22: every LeNet-5 measured and the MLPs with dense triggers, 6.9-64% ASR
    left before those epochs; at most 0.21 on the 15 purified table SmallCNNs, at most 1.48 on never-poisoned ones)."""
    standout = history[-1]["suspect_standout"]
    ran = sum(1 for record in history if record.get("residual"))
    epochs = f"{ran} residual epoch{'s' if ran != 1 else ''}"
    if standout > RESIDUAL_STANDOUT:
        after = f" after {epochs}" if ran else ""
        message = (f"purify: after purification{after}, class {suspect} is still the class that a universal trigger "
                   f"of L1 radius {radius:g} reaches most easily ({standout:.3g} times more easily than the next "
                   "class, in cross-entropy): the backdoor is probably not erased, though the last hunts failed. "
                   "A larger hunt and more mask travel (targeted_norm_max, steps, residual_outer)")
    elif ran:
        message = (f"purify: class {suspect} stood out as the class that a universal trigger of L1 radius {radius:g} "
                   f"reaches most easily after the planned epochs; {epochs} ran until it no longer did (ratio "
                   f"{standout:.3g}), which does not show the backdoor is gone: it may be only partly erased. "
                   "A larger hunt and more mask travel (targeted_norm_max, steps)")
    else:
        return
    warnings.warn(f"{message} or more clean images per class are the next steps; measure the attack success rate "
                  "if the trigger is known.", UserWarning, stacklevel=3)


def _warn_if_the_hunt_still_reaches(history: list[dict[str, float]], search: TargetedSearch, outer: int) -> bool:
    """A UserWarning when the hunt of the last planned epoch (epoch `outer`) still reached the suspect (or, all-to-all,
    moved the images off their labels) at mean cross-entropy below TARGETED_REACH_CE: the backdoor is probably not
    erased if the last hunt of all still succeeds, and may be only partly erased if extra_outer's epochs ended with
    a hunt that failed. history: the records of the planned and extra_outer epochs (residual_outer's hunt a larger
    radius, so they are left out). Returns whether it warned.

    The evidence runs one way only (docs/EFFICACY.md, rounds 16-18): a hunt that fails does not show that the
    backdoor is gone, but one that still succeeds shows that it is not. On the 18 Fashion-MNIST SmallCNNs of the
    tables the last planned hunt's cross-entropy is 1.1-7.7 (ASR after 0.6-7.7%); on the held-out LeNet-5 BadNets
    models it is below 1, and after extra epochs that ended with a failing hunt they keep 12-28% ASR."""
    last, extra = history[-1], len(history) - outer
    epochs = f"{extra} extra epoch{'s' if extra != 1 else ''}"
    goal = "the images off their own labels" if search.all_to_all else f"class {search.suspect}"
    verb = ("moves", "moved") if search.all_to_all else ("reaches", "reached")
    if last["ascent_loss"] < TARGETED_REACH_CE:
        ran = f" after {epochs}" if extra > 0 else ""
        message = (f"purify: the last epoch's trigger hunt still {verb[0]} {goal}{ran} (mean cross-entropy "
                   f"{last['ascent_loss']:.3g} < {TARGETED_REACH_CE}): the backdoor is probably not erased.")
    elif extra > 0:
        message = (f"purify: the trigger hunt still {verb[1]} {goal} after the planned epochs (outer={outer}; mean "
                   f"cross-entropy {history[outer - 1]['ascent_loss']:.3g} < {TARGETED_REACH_CE}); {epochs} ran "
                   "until it failed, which does not show the backdoor is gone: it may be only partly erased.")
    else:
        return False
    warnings.warn(f"{message} More clean images per class, or measuring the attack success rate if the trigger is "
                  "known, are the next steps.", UserWarning, stacklevel=3)
    return True


def _module_device(model: nn.Module) -> torch.device:
    """The one device holding every parameter and buffer of `model`; ValueError when there is none or several."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        raise ValueError("the model has no parameters: nothing to purify")
    devices = {t.device for t in itertools.chain(model.parameters(), model.buffers())}
    if len(devices) > 1:
        raise ValueError(f"the model's parameters and buffers are spread over devices {sorted(map(str, devices))}; "
                         "purify runs on one device: move the model there first (model.to(device))")
    return tensor.device


def _run_device(requested: str | None, model_device: torch.device) -> torch.device:
    """config.device parsed (ValueError for a malformed or unavailable one), else the model's device."""
    if requested is None:
        return model_device
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {requested!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} but CUDA is not available on this machine")
    return device


@torch.no_grad()
def _check_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """The model must map x [B, ...] to finite floating-point logits [B, C] with C covering every label; returns C."""
    try:
        logits = model(x[:2])
    except Exception as exc:  # the model rejected the input: say so in one line, keep the cause chained
        raise ValueError(f"the model rejects inputs of shape {tuple(x.shape[1:])} and dtype {x.dtype}: {exc}") from exc
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != min(2, len(x)):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits [B, num_classes]; got {shape} for a batch of {min(2, len(x))}")
    if not logits.is_floating_point():
        raise ValueError(f"the model must return floating-point logits, got {logits.dtype}")
    if int(y.max()) >= logits.shape[1]:
        raise ValueError(f"label {int(y.max())} is out of range for a model with {logits.shape[1]} outputs")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the model returns NaN or Inf logits on the clean data: check its weights")
    return logits.shape[1]


def _restore_requires_grad(model: nn.Module, flags: dict[str, bool]) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(flags.get(name, parameter.requires_grad))


def _restore_training(model: nn.Module, flags: dict[str, bool]) -> None:
    # Per module, not model.train(flag): submodules may have had modes of their own (e.g. a frozen BatchNorm).
    for name, module in model.named_modules():
        module.training = flags.get(name, module.training)
