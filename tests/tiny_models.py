"""Small models and data used by several test files."""

from __future__ import annotations

import torch
import torch.nn as nn


def tiny_cnn(num_classes: int = 4, seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU x2 + 2 Linear for [N, 1, 8, 8] inputs; random weights, BatchNorm with non-trivial stats."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, num_classes),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_data(num_classes: int = 4, per_class: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(num_classes * per_class, 1, 8, 8, generator=generator)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return x, y
