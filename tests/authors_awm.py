"""An independent, literal transcription of the authors' AWM loop (jinghuichen/AWM, main.py: mask_train).

Written for the tests without any awm_fast code: masks are applied with torch.func.functional_call on
W⊙m, the trigger is one [1, C, H, W] tensor under plain SGD, the L1 rescaling is the authors' formula.
Two deliberate, documented deviations shared with awm_fast's paper mode: the step count is guarded
against zero, and minibatch indices come from one seeded torch.Generator (two `randint` draws per outer
epoch, trigger phase then mask phase) instead of a global-RNG RandomSampler, so a run is reproducible.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


def authors_awm_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, outer: int, inner: int, batch_size: int,
                      alpha: float, gamma: float, trigger_norm: float, lr_trigger: float, lr_mask: float,
                      lr_decay: float, seed: int) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model).eval()
    model.requires_grad_(False)
    modules = dict(model.named_modules())
    masks = {name: torch.ones_like(m.weight, requires_grad=True) for name, m in modules.items()
             if isinstance(m, nn.Conv2d)}

    def forward(images):
        weights = {f"{name}.weight": modules[name].weight * mask for name, mask in masks.items()}
        return torch.func.functional_call(model, weights, (images,))

    generator = torch.Generator().manual_seed(seed)
    iters = max(1, len(x) // batch_size) * inner
    mask_opt = torch.optim.Adam(list(masks.values()), lr=lr_mask)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(mask_opt, gamma=lr_decay)
    for _ in range(outer):
        batch_pert = torch.zeros([1, *x.shape[1:]], requires_grad=True)
        batch_opt = torch.optim.SGD(params=[batch_pert], lr=lr_trigger)
        for rows in torch.randint(0, len(x), (iters, batch_size), generator=generator):
            images = x[rows]
            ori_lab = torch.argmax(forward(images), axis=1).long()
            per_logits = forward(images + batch_pert)
            loss = F.cross_entropy(per_logits, ori_lab, reduction="mean")
            loss_regu = torch.mean(-loss)
            batch_opt.zero_grad()
            loss_regu.backward(retain_graph=True)
            batch_opt.step()
        pert = batch_pert * min(1, trigger_norm / torch.sum(torch.abs(batch_pert)))
        pert = pert.detach()
        for rows in torch.randint(0, len(x), (iters, batch_size), generator=generator):
            images, labels = x[rows], y[rows]
            perturbed_images = torch.clamp(images + pert[0], min=0, max=1)
            mask_opt.zero_grad()
            output_noise = forward(perturbed_images)
            output_clean = forward(images)
            loss_rob = F.cross_entropy(output_noise, labels)
            loss_nat = F.cross_entropy(output_clean, labels)
            l1 = sum(torch.sum(torch.abs(m)) for m in masks.values())
            loss = alpha * loss_nat + (1 - alpha) * loss_rob + gamma * l1
            loss.backward()
            mask_opt.step()
            with torch.no_grad():
                for m in masks.values():
                    m.clamp_(0.0, 1.0)
        scheduler.step()
    return {f"{name}.weight": mask.detach() for name, mask in masks.items()}
