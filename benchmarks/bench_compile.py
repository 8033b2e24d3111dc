"""Does torch.compile help an AWM mask step of the torch backend on this CPU? Eager vs compiled, same run.

One mask step = forward of the clean and the triggered images in one batch through a model whose Conv2d
and Linear layers carry masks (backend "torch"), α·CE + (1−α)·CE, backward into the masks. Compiled:
torch.compile(backend="inductor") of the whole step (forward and, through AOTAutograd, backward); its
compile time runs outside the timing (warm-up) and is recorded in extra_info["compile_s"]. Quick mode
(CI) uses backend="aot_eager" on a tiny model: it checks the step still compiles without timing inductor.

    python -m pytest benchmarks/bench_compile.py && python benchmarks/compare.py  # or --benchmark-json=...
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from awm_fast.masking import attach_masks, select_layers
from awm_fast.models import ResNet18Cifar, SmallCNN

from conftest import QUICK, rounds

BATCH = 8 if QUICK else 32  # clean images; the step forwards twice as many (clean + triggered)
COMPILE_BACKEND = "aot_eager" if QUICK else "inductor"


def _model_and_data():
    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8) if QUICK else ResNet18Cifar(10)
    shape = (1, 8, 8) if QUICK else (3, 32, 32)
    model = model.eval().requires_grad_(False)
    attached = attach_masks(model, select_layers(model, "conv+linear"), backend="torch")
    x, y = torch.rand(BATCH, *shape), torch.randint(0, 10, (BATCH,))
    trigger = torch.rand(1, *shape) * 0.05
    return model, list(attached.masks.values()), x, y, trigger


def _mask_step(model, masks, x, y, trigger):
    for mask in masks:
        mask.grad = None
    logits = model(torch.cat([x, (x + trigger).clamp(0, 1)]))
    loss = 0.9 * F.cross_entropy(logits[: len(x)], y) + 0.1 * F.cross_entropy(logits[len(x):], y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("variant", ["eager", "compiled"])
def test_mask_step(benchmark, variant):
    torch._dynamo.reset()
    model, masks, x, y, trigger = _model_and_data()
    step = _mask_step if variant == "eager" else torch.compile(_mask_step, backend=COMPILE_BACKEND)
    start = time.perf_counter()
    step(model, masks, x, y, trigger)  # the compile happens here, outside the timing
    benchmark.extra_info["compile_s"] = time.perf_counter() - start if variant == "compiled" else 0.0
    benchmark.extra_info["compile_backend"] = COMPILE_BACKEND if variant == "compiled" else "none"
    benchmark.group = f"mask step {'SmallCNN 1x8x8' if QUICK else 'ResNet-18 3x32x32'}, {2 * BATCH} images"
    benchmark.pedantic(step, args=(model, masks, x, y, trigger), rounds=rounds(10), warmup_rounds=0 if QUICK else 1)
    assert all(mask.grad is not None for mask in masks)
