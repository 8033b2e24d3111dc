"""Smoke runs of purify on large torchvision models in bf16 autocast on the CPU: peak memory and seconds.

    python benchmarks/large_models.py [resnet50|vit_b_16 ...]

Random weights (nothing is downloaded), 10 classes, one 3x224x224 image per class, a short smoke
configuration (1 outer epoch, 1 step per phase, batch 10, no augmentation), conv+linear masks. Each
model runs in a fresh subprocess so its peak RSS growth is its own. Prints one Markdown row per model.
"""

from __future__ import annotations

import sys

from memory import peak_growth_mib_in_subprocess

SCRIPT = """
import torch, torchvision, awm_fast

def setup():
    torch.manual_seed(0)
    model = torchvision.models.{name}(weights=None, num_classes=10).eval()
    x, y = torch.rand(10, 3, 224, 224), torch.arange(10)
    masked = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    print("PARAMS", sum(p.numel() for p in model.parameters()), masked, flush=True)
    return model, x, y

def measured(state):
    model, x, y = state
    # paper mode: one epoch of the masked machinery (improved mode's first search visits all 1000 classes)
    awm_fast.purify(model, (x, y), mode="paper", precision="bf16", backend="torch", mask_layers="conv+linear",
                    outer=1, steps=1, batch_size=10, one_shot_augment=0)
"""


def main(names: list[str]) -> None:
    print("| model | precision | seconds per outer epoch (1 step per phase) | peak RSS growth (MiB) |")
    print("|---|---|---|---|")
    for name in names:
        result = peak_growth_mib_in_subprocess(SCRIPT.format(name=name))
        print(f"| {name} | bf16 autocast | {result['seconds']:.1f} | {result['peak_growth_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["resnet50", "vit_b_16"])
