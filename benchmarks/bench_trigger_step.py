"""pytest-benchmark: the batched trigger step on CPU, the fused extension ops vs the eager equivalent, same run.

    python -m pytest benchmarks/bench_trigger_step.py --benchmark-group-by=param:config

One step = apply K triggers to B images with the clamp, reduce the upstream gradient per trigger (the backward of a
model forward over the K·B triggered images; a fixed random upstream gradient stands in for the model), ascent step,
exact L1-ball projection:
  fused: awm_fast.ops apply_triggers -> autograd (apply_triggers_backward) -> trigger_step   (awm_fast._C)
  eager: (x + Δ).clamp(lo, hi) -> torch autograd -> add_(grad, alpha=lr) -> sort-based projection (PyTorch, fp64)
The eager side skips the NaN/Inf checks the fused side runs. A ratio table (eager time / fused time) and the bytes
each side holds for backward (autograd-saved tensors beyond the images: the step's activation memory; peak memory
on CPU is not measured) are printed at the end; a separate group times the projection alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from awm_fast.ops import trigger as trigger_ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_trigger_ops import eager_apply_triggers  # noqa: E402  (the references live in tests/)

pytestmark = pytest.mark.skipif(not trigger_ops.extension_available(), reason="awm_fast._C not built")

IMAGES = {"3x32x32": (3, 32, 32), "3x224x224": (3, 224, 224)}
CONFIGS = [f"K{k}_B{b}_{image}" for image in IMAGES for k in (1, 10) for b in (10, 128)]
LR = 10.0


def _parse(config: str):
    k, b, image = config.split("_")
    return int(k[1:]), int(b[1:]), IMAGES[image]


def _inputs(config: str):
    k, b, image = _parse(config)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((b, *image), generator=generator)
    triggers = torch.randn((k, *image), generator=generator) * 0.05
    grad_out = torch.randn((k, b, *image), generator=generator) * 1e-3
    radius = 0.3 * x[0].numel()  # τ per element ≈ the authors' 1000 on 3×32×32: the projection is active
    return x, triggers, grad_out, radius


def fused_step(x, triggers, grad_out, radius):
    t = triggers.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(trigger_ops.apply_triggers(x, t, 0.0, 1.0, use_extension=True), t, grad_out)
    return trigger_ops.trigger_step(t.detach(), grad, LR, radius, use_extension=True)


def eager_step(x, triggers, grad_out, radius):
    t = triggers.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(eager_apply_triggers(x, t, 0.0, 1.0), t, grad_out)
    return trigger_ops.reference_trigger_step(t.detach(), grad, LR, radius, check_finite=False)


STEPS = {"fused": fused_step, "eager": eager_step}


def _saved_bytes(fn, x, *args) -> int:
    """Bytes the autograd graph of one call holds for backward beyond the image batch x (which exists anyway): the
    activation memory of the step. Eager keeps the [K, B, ...] pre-clamp sum; the fused op keeps only Δ [K, ...]."""
    total = 0
    images = x.untyped_storage().data_ptr()

    def pack(tensor):
        nonlocal total
        if tensor.untyped_storage().data_ptr() != images:
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(x, *args)
    return total


class Results:
    def __init__(self):
        self.rows: dict[tuple[str, str], dict[str, float]] = {}

    def record(self, group, config, impl, benchmark, saved=None):
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable
            return
        row = self.rows.setdefault((group, config), {})
        row[impl], row[f"{impl}_min"] = stats.stats.median, stats.stats.min
        if saved is not None:
            row[f"{impl}_saved"] = saved

    def table(self) -> list[str]:
        lines = [f"trigger step on CPU, {torch.get_num_threads()} threads; ratio = eager time / fused time "
                 "(medians; min-based ratio beside it, steadier on a loaded machine)",
                 f"{'group':<18}{'config':<22}{'fused ms':>10}{'eager ms':>11}{'ratio':>8}{'ratio(min)':>12}"
                 f"{'held fused MB':>15}{'held eager MB':>15}"]
        for (group, config), row in sorted(self.rows.items()):
            if "fused" not in row or "eager" not in row:
                continue
            saved = ""
            if "fused_saved" in row:
                saved = f"{row['fused_saved'] / 2**20:>15.2f}{row['eager_saved'] / 2**20:>15.2f}"
            lines.append(f"{group:<18}{config:<22}{row['fused'] * 1e3:>10.2f}{row['eager'] * 1e3:>11.2f}"
                         f"{row['eager'] / row['fused']:>7.2f}x{row['eager_min'] / row['fused_min']:>11.2f}x{saved}")
        return lines


@pytest.fixture(scope="module")
def results(request):
    collected = Results()
    yield collected
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    lines = collected.table()
    if reporter is not None and capture is not None and len(lines) > 2:
        with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)


def _rounds(config: str) -> int:
    k, b, image = _parse(config)
    return 3 if k * b * image[1] * image[2] > 10**7 else 10


@pytest.mark.parametrize("impl", list(STEPS))
@pytest.mark.parametrize("config", CONFIGS)
def test_apply_reduce_step(benchmark, results, config, impl):
    benchmark.group = f"apply+reduce+step {config}"
    x, triggers, grad_out, radius = _inputs(config)
    step = STEPS[impl]
    torch.testing.assert_close(fused_step(x, triggers, grad_out, radius), eager_step(x, triggers, grad_out, radius),
                               rtol=1e-4, atol=1e-4)
    benchmark.pedantic(step, args=(x, triggers, grad_out, radius), rounds=_rounds(config), warmup_rounds=1)
    results.record("apply+reduce+step", config, impl, benchmark, _saved_bytes(step, x, triggers, grad_out, radius))


@pytest.mark.parametrize("impl", ["fused", "eager"])
@pytest.mark.parametrize("config", ["K10_n3072", "K10_n150528"])
def test_project_l1_ball(benchmark, results, config, impl):
    benchmark.group = f"project_l1_ball {config}"
    k, n = (int(part[1:]) for part in config.split("_"))
    v = torch.randn(k, n, generator=torch.Generator().manual_seed(0))
    radius = 0.3 * n
    project = (lambda: trigger_ops.project_l1_ball(v, radius, "exact", use_extension=True)) if impl == "fused" else (
        lambda: trigger_ops.reference_project_l1_ball(v, radius, "exact", check_finite=False))
    benchmark.pedantic(project, rounds=10, warmup_rounds=1)
    results.record("project_l1_ball", config, impl, benchmark)
