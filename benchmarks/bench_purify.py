"""AWM level: a one-shot purify, backend "torch" vs "reference", time AND peak-memory growth.

Setting of the issue's target: mode="paper", CIFAR-style ResNet-18 (random weights: the work per step
does not depend on them), 10 classes, one 3x32x32 image per class plus the authors' 9 augmented copies
(100 images), batch 128, 5 steps per phase. Every outer epoch does the same work, so by default the
benchmark runs AWM_BENCH_OUTER=1 epoch (the full 20-epoch run is AWM_BENCH_OUTER=20; the ratio is the
same, the wall time 20x). Each measurement runs in a fresh subprocess so peak RSS can be read.
"""

from __future__ import annotations

import os

import pytest

from conftest import QUICK
from memory import peak_growth_mib_in_subprocess

OUTER = int(os.environ.get("AWM_BENCH_OUTER", "1"))

SCRIPT = """
import torch, awm_fast
from awm_fast.models import ResNet18Cifar, SmallCNN
torch.set_num_threads({threads})

def setup():
    torch.manual_seed(0)
    model = {model}.eval()
    x, y = torch.rand(10, *{shape}), torch.arange(10)
    return model, x, y

def measured(state):
    model, x, y = state
    awm_fast.purify(model, (x, y), mode="paper", backend={backend!r}, outer={outer}, seed=0)
"""


def _script(backend: str) -> str:
    model, shape = ("SmallCNN(1, 10, 8)", (1, 8, 8)) if QUICK else ("ResNet18Cifar(10)", (3, 32, 32))
    return SCRIPT.format(threads=os.cpu_count() or 1, model=model, shape=shape, backend=backend,
                         outer=1 if QUICK else OUTER)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_one_shot_purify(benchmark, backend):
    benchmark.group = "purify one-shot " + ("SmallCNN 1x8x8" if QUICK else f"ResNet-18 3x32x32, {OUTER} outer")
    results = []
    benchmark.pedantic(lambda: results.append(peak_growth_mib_in_subprocess(_script(backend))), rounds=1,
                       iterations=1)
    benchmark.extra_info.update(results[-1])
