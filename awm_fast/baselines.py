"""Baseline backdoor defences under AWM's data budget: plain fine-tuning (FT) and ANP.

Both take the same few clean images as `awm_fast.purify` (x [N, C, H, W] in [0, 1], y [N] int64, or
anything `awm_fast.inputs.as_tensors` accepts), add the same one-shot augmentation when no class has
more than one image, and return a purified deep copy of the model: same class, eval mode, same device.
The caller's model is never modified.

- fine_tune: every parameter trained on the clean set with SGD (momentum 0.9); BatchNorm statistics
  stay frozen (eval mode), since 100 images in batches of 128 drawn with replacement would wreck them.
- anp: Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021). One mask value m ∈ [0, 1] per neuron
  (output channel of every BatchNorm layer, output unit of every hidden Linear layer); each step draws
  multiplicative neuron perturbations δ, ξ uniformly in [-ε, ε], takes `perturb_steps` signed ascent steps
  on them, then descends α·CE(clean) + (1-α)·CE(perturbed) on m; finally neurons with m < threshold are
  pruned (their scale zeroed), the rest kept at 1: the authors' "pruning by threshold".

ANP, compactly: the authors wrap BatchNorm in NoisyBatchNorm2d; here one forward hook per neuron
layer rewrites its output y = s·x̂ + b (s·x̂ the scaled part, b the bias) as (m + δ)·s·x̂ + (1 + ξ)·b, which
is the same function in eval mode. Simplifications, stated: hidden Linear layers get neuron masks too
(the authors' CIFAR models have BatchNorm after every conv; our SmallCNN ends in two Linear layers
that would otherwise be unprotected); the final classifier is never masked; the default step count
is 300 instead of their 2000 (one-shot sets are ~100 images, and a 2-core CPU is the target).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast.inputs import as_tensors, augment_one_shot, check_classes, is_one_shot
from awm_fast.masking import select_layers

__all__ = ["ANPConfig", "FineTuneConfig", "anp", "anp_neuron_layers", "fine_tune"]


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    """steps of SGD(lr, momentum 0.9, weight_decay) on minibatches of batch_size drawn with replacement.

    lr 1e-3: on one-shot digits lr 1e-2 drove clean accuracy to chance (10-32%) within 100 steps (docs/EFFICACY.md).
    """

    steps: int = 100
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    one_shot_augment: int = 9
    seed: int | None = 0


@dataclasses.dataclass(frozen=True)
class ANPConfig:
    """The authors' defaults (ANP, main.py) except steps: ε=0.4, 1 perturbation step, α=0.2, mask SGD lr 0.2
    (momentum 0.9), pruning threshold 0.2."""

    steps: int = 300
    eps: float = 0.4
    perturb_steps: int = 1
    alpha: float = 0.2
    lr: float = 0.2
    threshold: float = 0.2
    batch_size: int = 128
    one_shot_augment: int = 9
    seed: int | None = 0


def _prepare(model: nn.Module, data, one_shot_augment: int, seed: int | None):
    """(deep copy of the model in eval mode, x, y on its device, generator)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x, y = as_tensors(data)
    check_classes(y)
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    if one_shot_augment and is_one_shot(y):
        x, y = augment_one_shot(x, y, one_shot_augment, generator)
    work = copy.deepcopy(model).eval()
    device = next(work.parameters()).device
    return work, x.to(device), y.to(device), generator


def _minibatch(n: int, batch_size: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, n, (batch_size,), generator=generator).to(device)


def fine_tune(model: nn.Module, data, config: FineTuneConfig | None = None, **overrides) -> nn.Module:
    """Plain fine-tuning of every parameter on the clean few-shot data; returns a purified copy (eval mode)."""
    cfg = dataclasses.replace(config or FineTuneConfig(), **overrides)
    work, x, y, generator = _prepare(model, data, cfg.one_shot_augment, cfg.seed)
    parameters = [p for p in work.parameters() if p.is_floating_point()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    for _ in range(cfg.steps):
        rows = _minibatch(len(x), cfg.batch_size, generator, x.device)
        loss = F.cross_entropy(work(x[rows]), y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for parameter in parameters:
        parameter.requires_grad_(False)
        parameter.grad = None
    return work.eval()


# ---- ANP --------------------------------------------------------------------------------------------------------


def anp_neuron_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose output neurons ANP masks: every BatchNorm, and every Linear but the last one."""
    batchnorms = [name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    linears = select_layers(model, "linear")
    return batchnorms + linears[:-1]


class _NeuronPerturbation:
    """A forward hook rewriting a layer's output y = s·x̂ + b as (m + δ)·(y - b) + (1 + ξ)·b, per neuron (dim 1).

    mask m [C] in [0, 1] (trainable), δ and ξ [C] (perturbations, used when `noisy`).
    """

    def __init__(self, module: nn.Module) -> None:
        weight = module.weight
        channels = weight.shape[0]
        self.module = module
        self.mask = torch.ones(channels, device=weight.device, requires_grad=True)
        self.delta = torch.zeros(channels, device=weight.device)
        self.xi = torch.zeros(channels, device=weight.device)
        self.noisy = False
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (output.dim() - 2)
        if module.bias is None:
            bias = torch.zeros_like(self.mask)
        else:
            bias = module.bias.to(output.dtype)
        if self.noisy:
            scale, bias_scale = self.mask + self.delta, 1 + self.xi
        else:
            scale, bias_scale = self.mask, torch.ones_like(self.mask)
        bias = bias.view(shape)
        return scale.view(shape) * (output - bias) + bias_scale.view(shape) * bias


def anp(model: nn.Module, data, config: ANPConfig | None = None, *, return_masks: bool = False, **overrides):
    """Adversarial Neuron Pruning on the clean few-shot data; returns a pruned copy (eval mode), or
    (model, {layer name: neuron mask [C] fp32 before thresholding}) when return_masks.

    After optimisation, a neuron whose mask ends below `threshold` gets its scale zeroed (BatchNorm weight,
    or the Linear's weight row); its bias stays, as in the authors' pruning code.
    """
    cfg = dataclasses.replace(config or ANPConfig(), **overrides)
    work, x, y, generator = _prepare(model, data, cfg.one_shot_augment, cfg.seed)
    work.requires_grad_(False)
    modules = dict(work.named_modules())
    names = anp_neuron_layers(work)
    if not names:
        raise ValueError("ANP found no BatchNorm or hidden Linear layer to put neuron masks on")
    hooks = [_NeuronPerturbation(modules[name]) for name in names]
    masks = [hook.mask for hook in hooks]
    mask_optimizer = torch.optim.SGD(masks, lr=cfg.lr, momentum=0.9)
    step_size = cfg.eps / cfg.perturb_steps
    try:
        for _ in range(cfg.steps):
            rows = _minibatch(len(x), cfg.batch_size, generator, x.device)
            images, labels = x[rows], y[rows]
            # 1. perturbation: random start in [-ε, ε], then signed ascent steps on the loss, clipped to the box.
            perturbations = []
            for hook in hooks:
                hook.delta = (torch.rand(hook.mask.shape, generator=generator) * 2 - 1).mul_(cfg.eps).to(x.device)
                hook.xi = (torch.rand(hook.mask.shape, generator=generator) * 2 - 1).mul_(cfg.eps).to(x.device)
                hook.noisy = True
                perturbations += [hook.delta, hook.xi]
            if cfg.eps > 0:
                for _ in range(cfg.perturb_steps):
                    for tensor in perturbations:
                        tensor.requires_grad_(True)
                    loss = F.cross_entropy(work(images), labels)
                    grads = torch.autograd.grad(loss, perturbations)
                    with torch.no_grad():
                        for tensor, grad in zip(perturbations, grads, strict=True):
                            tensor.add_(step_size * grad.sign()).clamp_(-cfg.eps, cfg.eps)
                    for tensor in perturbations:
                        tensor.requires_grad_(False)
            # 2. mask step: α·CE(clean, no perturbation) + (1-α)·CE(perturbed).
            robust = F.cross_entropy(work(images), labels) if cfg.alpha < 1 else 0.0
            for hook in hooks:
                hook.noisy = False
            natural = F.cross_entropy(work(images), labels)
            loss = cfg.alpha * natural + (1 - cfg.alpha) * robust
            mask_optimizer.zero_grad()
            loss.backward()
            mask_optimizer.step()
            with torch.no_grad():
                for mask in masks:
                    mask.clamp_(0.0, 1.0)
    finally:
        for hook in hooks:
            hook.handle.remove()
    with torch.no_grad():
        for hook in hooks:
            pruned = hook.mask.detach() < cfg.threshold
            hook.module.weight[pruned] = 0.0
    work.eval()
    if return_masks:
        return work, {name: hook.mask.detach().clone() for name, hook in zip(names, hooks, strict=True)}
    return work
