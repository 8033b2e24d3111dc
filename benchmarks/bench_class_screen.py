"""The first epoch's searches on a many-class model: every class searched in full ("reference",
class_shortlist=None) vs the class screen ("screened", class_shortlist=10, the default), time AND peak-memory
growth.

Setting: a SmallCNN for 1x28x28 inputs with 100 classes (random weights: the work per step does not depend on
them), one image per class (100 search images), improved mode's first-epoch work that grows with the classes: the
warp check (warp_suspect) and the naming search (TargetedSearch.recover, with the all-to-all check). Quick mode:
12 classes on 1x8x8 (width 4), shortlist 3. Each measurement runs in a fresh subprocess so peak RSS can be read.
"""

from __future__ import annotations

import os

import pytest

from conftest import QUICK
from memory import peak_growth_mib_in_subprocess

SCRIPT = """
import torch
from awm_fast import AWMConfig
from awm_fast.models import SmallCNN
from awm_fast.search import TargetedSearch
from awm_fast.warp import warp_suspect
torch.set_num_threads({threads})

def setup():
    torch.manual_seed(0)
    model = SmallCNN(1, {classes}, {size}, width={width}).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    x = torch.rand({classes}, 1, {size}, {size})
    cfg = AWMConfig(class_shortlist={shortlist}).resolve({size} * {size}, {classes})
    return model, x, cfg

def measured(state):
    model, x, cfg = state
    generator = torch.Generator().manual_seed(0)
    warp_suspect(model, x, cfg, generator)
    TargetedSearch(model, x, cfg, generator).recover()
"""


def _script(search: str) -> str:
    classes, size, width, shortlist = (12, 8, 4, 3) if QUICK else (100, 28, 32, 10)
    return SCRIPT.format(threads=os.cpu_count() or 1, classes=classes, size=size, width=width,
                         shortlist=None if search == "reference" else shortlist)


@pytest.mark.parametrize("search", ["reference", "screened"])
def test_first_epoch_searches_on_many_classes(benchmark, search):
    benchmark.group = "first-epoch searches " + ("12 classes 1x8x8" if QUICK else "SmallCNN 100 classes 1x28x28")
    results = []
    benchmark.pedantic(lambda: results.append(peak_growth_mib_in_subprocess(_script(search))), rounds=1,
                       iterations=1)
    benchmark.extra_info.update(results[-1])
