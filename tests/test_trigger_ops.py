"""The batched trigger step (awm_fast.ops.trigger): the compiled extension and the pure-PyTorch fallback, each
against references written here, independently of awm_fast (eager PyTorch and a NumPy sort-based projection).

The eager references below are reused by benchmarks/bench_trigger_step.py.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from awm_fast.ops import trigger as trigger_ops

# ---------------------------------------------------------------------------------------------- references


def eager_apply_triggers(x: torch.Tensor, triggers: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """clamp(x[b] + triggers[k], lo, hi) -> [K, B, ...], plain eager (autograd by torch.clamp)."""
    return (x.unsqueeze(0) + triggers.unsqueeze(1)).clamp(lo, hi)


def sort_projection(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of each row of v [K, n] onto the L1 ball (Duchi et al. 2008, Fig. 1), NumPy fp64."""
    rows = v.detach().cpu().double().numpy()
    out = rows.copy()
    for k, row in enumerate(rows):
        magnitudes = np.abs(row)
        if magnitudes.sum() <= radius:
            continue
        mu = np.sort(magnitudes)[::-1]
        cumulative = np.cumsum(mu)
        j = np.arange(1, mu.size + 1)
        rho = np.nonzero(mu * j > cumulative - radius)[0]
        rho = rho[-1] if rho.size else 0
        theta = max((cumulative[rho] - radius) / (rho + 1), 0.0)
        out[k] = np.sign(row) * np.maximum(magnitudes - theta, 0.0)
    return torch.from_numpy(out)


def rescale_projection(v: torch.Tensor, radius: float) -> torch.Tensor:
    """The authors' radial rescaling v · min(1, r / ‖v‖₁) per row, fp64."""
    v64 = v.double()
    norms = v64.abs().sum(dim=1, keepdim=True)
    return v64 * torch.clamp(radius / norms, max=1.0).nan_to_num(1.0)


def eager_trigger_step(triggers, grad, lr, radius, ascent, projection):
    """Eager ascent (add_ with alpha, one FMA like SGD) then the fp64 projection of each trigger, cast back."""
    step = grad if ascent == "plain" else grad.sign()
    out = triggers.clone().add_(step.to(triggers.dtype), alpha=lr)
    if math.isinf(radius):
        return out
    flat = out.view(out.shape[0], -1)
    projected = sort_projection(flat, radius) if projection == "exact" else rescale_projection(flat, radius)
    return projected.to(out.dtype).view_as(out)


def eager_apply_reduce_step(x, triggers, grad_out, lo, hi, lr, radius, projection="exact"):
    """Eager apply + per-trigger reduction (autograd through the clamp) + ascent step + projection."""
    triggers = triggers.detach().requires_grad_(True)
    out = eager_apply_triggers(x, triggers, lo, hi)
    (grad,) = torch.autograd.grad(out, triggers, grad_out)
    return eager_trigger_step(triggers.detach(), grad, lr, radius, "plain", projection)


# ---------------------------------------------------------------------------------------------- fixtures

NO_EXTENSION = os.environ.get("AWM_FAST_NO_EXTENSION", "").strip().lower() in ("1", "true", "yes", "on")
IMPLS = ["extension", "fallback"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Gradients are sums over the batch (or over K for x), accumulated in fp32 (fp64 for fp64) and rounded once, in a
# different order than eager's reduction: fp32 differs by a few ulps of the sum; bf16/fp16 by one ulp of the
# stored dtype when the two fp32 sums straddle a rounding boundary.
GRAD_TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2),
            torch.float16: (2e-3, 2e-3)}
# Projection of a low-precision row: the fp64 projection of the same stored values, rounded once to the dtype.
PROJ_TOL = {torch.float64: (1e-9, 1e-9), torch.float32: (1e-5, 1e-6), torch.bfloat16: (1e-2, 1e-2),
            torch.float16: (2e-3, 2e-3)}


class Impl:
    """The public ops bound to one implementation."""

    def __init__(self, name: str):
        self.name = name
        use = name == "extension"
        self.apply_triggers = functools.partial(trigger_ops.apply_triggers, use_extension=use)
        self.trigger_step = functools.partial(trigger_ops.trigger_step, use_extension=use)
        self.project_l1_ball = functools.partial(trigger_ops.project_l1_ball, use_extension=use)


@pytest.fixture(params=IMPLS)
def impl(request) -> Impl:
    if request.param == "extension" and not trigger_ops.extension_available():
        pytest.skip("awm_fast._C not built (AWM_FAST_NO_EXTENSION)" if NO_EXTENSION else "awm_fast._C not built")
    return Impl(request.param)


def _rand_images(shape, dtype, generator=None):
    return torch.rand(shape, generator=generator, dtype=torch.float64).to(dtype)


def _rand_triggers(shape, dtype, scale=0.5):
    return (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)


# ---------------------------------------------------------------------------------------------- apply_triggers

SHAPES = [((1, 1), 1), ((7, 3, 5, 5), 3), ((33, 2, 9), 1), ((4, 129), 10), ((2, 3, 32, 32), 2)]
BOUNDS = [(0.0, 1.0), (-math.inf, math.inf), (-0.25, 0.5), (-math.inf, 1.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, k", SHAPES)
@pytest.mark.parametrize("lo, hi", BOUNDS)
def test_apply_triggers_forward_matches_eager_bitwise(impl, dtype, x_shape, k, lo, hi):
    # x + Δ is rounded to the dtype before the clamp, exactly as eager: bitwise equal for every dtype.
    x = _rand_images(x_shape, dtype)
    triggers = _rand_triggers((k, *x_shape[1:]), dtype)
    out = impl.apply_triggers(x, triggers, lo, hi)
    expected = eager_apply_triggers(x, triggers, lo, hi)
    assert out.shape == (k, *x_shape) and out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, k", SHAPES)
@pytest.mark.parametrize("need", ["both", "triggers", "x"])
def test_apply_triggers_backward_matches_eager(impl, dtype, x_shape, k, need):
    lo, hi = 0.0, 1.0
    x = _rand_images(x_shape, dtype)
    triggers = _rand_triggers((k, *x_shape[1:]), dtype)
    # Put some sums exactly on the clamp bounds, where torch.clamp's backward has a convention (2.14: blocked).
    flat_x, flat_t = x.view(x.shape[0], -1), triggers.view(k, -1)
    flat_x[0, 0], flat_t[0, 0] = 0.75, 0.25
    if flat_x.shape[1] > 1:
        flat_x[0, 1], flat_t[0, 1] = 0.25, -0.25
    grad_out = torch.randn((k, *x_shape), dtype=torch.float64).to(dtype)
    want = {"both": (True, True), "triggers": (False, True), "x": (True, False)}[need]

    def grads(fn):
        xr = x.clone().requires_grad_(want[0])
        tr = triggers.clone().requires_grad_(want[1])
        out = fn(xr, tr, lo, hi)
        out.backward(grad_out)
        return xr.grad, tr.grad

    got, expected = grads(impl.apply_triggers), grads(eager_apply_triggers)
    rtol, atol = GRAD_TOL[dtype]
    for g, e in zip(got, expected, strict=True):
        assert (g is None) == (e is None)
        if e is not None:
            torch.testing.assert_close(g, e, rtol=rtol, atol=atol)


def test_apply_triggers_gradcheck_fp64(impl):
    # Values near the clamp boundaries would make finite differences straddle the kink: keep x + Δ inside
    # (0, 1) or clearly outside it.
    x = (torch.rand(3, 2, 4, 3, dtype=torch.float64) * 0.5 + 0.25).requires_grad_(True)
    triggers = (torch.randn(2, 2, 4, 3, dtype=torch.float64) * 0.1).requires_grad_(True)
    with torch.no_grad():
        triggers[1, 0] += 2.0  # every sum of trigger 1's first channel is clamped: zero gradient there
    assert torch.autograd.gradcheck(lambda a, b: impl.apply_triggers(a, b, 0.0, 1.0), (x, triggers))
    assert torch.autograd.gradcheck(lambda a, b: impl.apply_triggers(a, b, -math.inf, math.inf), (x, triggers))


def test_apply_triggers_promotes_mixed_dtypes(impl):
    x = torch.rand(4, 3, 2, 2, dtype=torch.bfloat16)
    triggers = torch.randn(2, 3, 2, 2)
    out = impl.apply_triggers(x, triggers, 0.0, 1.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, eager_apply_triggers(x, triggers, 0.0, 1.0), rtol=0, atol=0)


def test_apply_triggers_strided_inputs(impl):
    x = torch.rand(3, 8, 5, 2).transpose(1, 3)[:, :, ::2]  # non-contiguous [3, 2, 3, 8]
    triggers = torch.randn(8, 2, 3, 2).permute(3, 1, 2, 0)  # non-contiguous [2, 2, 3, 8]
    torch.testing.assert_close(impl.apply_triggers(x, triggers), eager_apply_triggers(x, triggers, 0.0, 1.0),
                               rtol=0, atol=0)


def test_apply_triggers_shape_mismatch_raises(impl):
    with pytest.raises(ValueError, match="agree after the first dimension"):
        impl.apply_triggers(torch.rand(4, 3, 8, 8), torch.rand(2, 3, 8, 7))


# ---------------------------------------------------------------------------------------------- projection


@pytest.mark.parametrize("n", [1, 2, 7, 33, 1000, 3072])
@pytest.mark.parametrize("radius", [1e-3, 0.5, 10.0, 300.0])
def test_projection_exact_matches_sort_based_fp64(impl, n, radius):
    v = torch.randn(5, n, dtype=torch.float64) * 3.0
    v[1] = v[1].abs().round()  # ties among the magnitudes
    v[2, : n // 2] = 0.0  # exact zeros
    out = impl.project_l1_ball(v, radius, "exact")
    expected = sort_projection(v, radius)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # Outside the ball the projection lands on the sphere.
    outside = v.abs().sum(1) > radius
    torch.testing.assert_close(out.abs().sum(1)[outside], torch.full_like(out[:, 0], radius)[outside],
                               rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    rows=st.integers(1, 3),
    n=st.integers(1, 40),
    radius=st.floats(0.0, 50.0),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_projection_exact_property_fp64(rows, n, radius, seed, scale):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(rows, n, generator=generator, dtype=torch.float64) * scale
    for use in [True, False] if trigger_ops.extension_available() else [False]:
        out = trigger_ops.project_l1_ball(v, radius, "exact", use_extension=use)
        torch.testing.assert_close(out, sort_projection(v, radius), rtol=0, atol=1e-6 * max(1.0, scale))
        assert bool((out.abs().sum(1) <= radius * (1 + 1e-12) + 1e-12).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["exact", "rescale"])
def test_projection_low_precision(impl, dtype, mode):
    v = (torch.randn(4, 3 * 32 * 32, dtype=torch.float64) * 2.0).to(dtype)
    radius = 500.0
    out = impl.project_l1_ball(v, radius, mode)
    expected = (sort_projection(v, radius) if mode == "exact" else rescale_projection(v, radius)).to(dtype)
    assert out.dtype == dtype
    rtol, atol = PROJ_TOL[dtype]
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("mode", ["exact", "rescale"])
def test_projection_idempotent_and_inside_unchanged(impl, mode):
    v = torch.randn(6, 257, dtype=torch.float64)
    radius = 20.0
    once = impl.project_l1_ball(v, radius, mode)
    twice = impl.project_l1_ball(once, radius, mode)
    torch.testing.assert_close(twice, once, rtol=1e-12, atol=1e-12)
    inside = v * (radius / v.abs().sum(1, keepdim=True)) * torch.rand(6, 1, dtype=torch.float64)
    assert torch.equal(impl.project_l1_ball(inside, radius, mode), inside)
    for dtype in (torch.float32, torch.bfloat16):  # points inside stay bit-identical in every dtype
        inside_low = (inside * 0.5).to(dtype)
        assert torch.equal(impl.project_l1_ball(inside_low, radius, mode), inside_low)


@pytest.mark.parametrize("mode", ["exact", "rescale"])
def test_projection_radius_zero_all_zero_and_inf(impl, mode):
    v = torch.randn(3, 50)
    assert torch.equal(impl.project_l1_ball(v, 0.0, mode), torch.zeros_like(v))
    zeros = torch.zeros(2, 17)
    assert torch.equal(impl.project_l1_ball(zeros, 0.0, mode), zeros)
    assert torch.equal(impl.project_l1_ball(zeros, 3.0, mode), zeros)
    out = impl.project_l1_ball(v, math.inf, mode)
    assert torch.equal(out, v) and out.data_ptr() != v.data_ptr()
    assert impl.project_l1_ball(torch.zeros(0, 5), 1.0, mode).shape == (0, 5)


def test_projection_rescale_is_the_authors_formula(impl):
    # The paper's step: Δ · min(1, τ / ‖Δ‖₁) in fp32, applied once.
    delta = torch.randn(1, 3 * 32 * 32) * 2.0
    tau = 100.0
    expected = delta * torch.clamp(tau / delta.abs().sum(), max=1.0)
    torch.testing.assert_close(impl.project_l1_ball(delta, tau, "rescale"), expected, rtol=1e-6, atol=0)


def test_projection_bad_arguments(impl):
    with pytest.raises(ValueError, match="unknown projection"):
        impl.project_l1_ball(torch.randn(2, 3), 1.0, "l2")
    with pytest.raises(ValueError, match="radius"):
        impl.project_l1_ball(torch.randn(2, 3), -1.0)
    with pytest.raises(ValueError, match="2-D"):
        impl.project_l1_ball(torch.randn(2, 3, 4), 1.0)


# ---------------------------------------------------------------------------------------------- trigger_step


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ascent", ["plain", "sign"])
@pytest.mark.parametrize("projection", ["exact", "rescale"])
@pytest.mark.parametrize("radius", [math.inf, 0.0, 5.0, 1e4])
def test_trigger_step_matches_eager(impl, dtype, ascent, projection, radius):
    triggers = _rand_triggers((3, 3, 7, 5), dtype)
    grad = _rand_triggers((3, 3, 7, 5), dtype, scale=1.0)
    expected = eager_trigger_step(triggers, grad, 0.3, radius, ascent, projection)
    updated = triggers.clone()
    returned = impl.trigger_step(updated, grad, 0.3, radius, ascent, projection)
    assert returned is updated
    rtol, atol = PROJ_TOL[dtype]
    torch.testing.assert_close(updated, expected, rtol=rtol, atol=atol)


def test_trigger_step_k1_reproduces_eager_sgd_bitwise(impl):
    # The paper's inner loop: SGD(lr) on -CE, i.e. Δ += lr · ∇CE, fp32, radius=inf during the steps; then the
    # rescale projection once.
    torch.manual_seed(1)
    delta_sgd = torch.zeros(1, 3, 32, 32, requires_grad=True)
    optimizer = torch.optim.SGD([delta_sgd], lr=10.0)
    delta = torch.zeros(1, 3, 32, 32)
    for _ in range(5):
        grad = torch.randn(1, 3, 32, 32) * 1e-2
        optimizer.zero_grad()
        delta_sgd.grad = -grad  # the gradient of -CE
        optimizer.step()
        impl.trigger_step(delta, grad, 10.0, math.inf, "plain")
        assert torch.equal(delta, delta_sgd.detach())
    tau = 30.0
    with torch.no_grad():
        paper = delta_sgd * torch.clamp(tau / delta_sgd.abs().sum(), max=1.0)
    torch.testing.assert_close(impl.project_l1_ball(delta.view(1, -1), tau, "rescale").view_as(delta), paper,
                               rtol=1e-6, atol=0)


def test_trigger_step_strided_triggers_and_mixed_grad_dtype(impl):
    base = torch.randn(5, 2, 3, 4)
    triggers = base.transpose(0, 3)  # [4, 2, 3, 5], non-contiguous view: updated through the view
    grad = torch.randn(4, 2, 3, 5, dtype=torch.float64)
    expected = eager_trigger_step(triggers.contiguous(), grad, 0.5, 3.0, "plain", "exact")
    impl.trigger_step(triggers, grad, 0.5, 3.0)
    torch.testing.assert_close(triggers, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(base.transpose(0, 3), expected, rtol=1e-5, atol=1e-6)


def test_trigger_step_on_leaf_that_requires_grad(impl):
    triggers = torch.zeros(2, 3, 4, 4, requires_grad=True)
    out = impl.apply_triggers(torch.rand(5, 3, 4, 4), triggers, 0.0, 1.0)
    (grad,) = torch.autograd.grad(out.square().sum(), triggers)
    version = triggers._version
    impl.trigger_step(triggers, grad, 0.1, 1.0)  # in place under no_grad, like an optimizer step
    assert triggers._version > version
    assert bool((triggers.detach().flatten(1).abs().sum(1) <= 1.0 + 1e-6).all())


def test_trigger_step_bad_arguments(impl):
    t, g = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown ascent"):
        impl.trigger_step(t, g, 1.0, ascent="adam")
    with pytest.raises(ValueError, match="unknown projection"):
        impl.trigger_step(t, g, 1.0, 1.0, projection="l2")
    with pytest.raises(ValueError, match="same shape"):
        impl.trigger_step(t, torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="radius"):
        impl.trigger_step(t, g, 1.0, -2.0)


# ---------------------------------------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_inputs_raise(impl, bad):
    x, triggers = torch.rand(4, 3, 5, 5), torch.randn(2, 3, 5, 5)
    x_bad, t_bad = x.clone(), triggers.clone()
    x_bad[2, 1, 3, 4] = bad
    t_bad[1, 2, 0, 0] = bad
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        impl.apply_triggers(x_bad, triggers)
    with pytest.raises(ValueError, match="triggers contains NaN or Inf"):
        impl.apply_triggers(x, t_bad)
    with pytest.raises(ValueError, match="v contains NaN or Inf"):
        impl.project_l1_ball(t_bad.flatten(1), 1.0)
    grad_bad = t_bad.clone()
    untouched = triggers.clone()
    with pytest.raises(ValueError, match="grad contains NaN or Inf"):
        impl.trigger_step(untouched, grad_bad, 0.1, 1.0)
    assert torch.equal(untouched, triggers)  # checked before anything is written
    with pytest.raises(ValueError, match="triggers contains NaN or Inf"):
        impl.trigger_step(t_bad.clone(), triggers, 0.1, 1.0)


# ---------------------------------------------------------------------------------------------- the fused path


@pytest.mark.parametrize("k", [1, 4])
def test_apply_reduce_step_matches_eager(impl, k):
    x = torch.rand(9, 3, 8, 8)
    triggers = torch.randn(k, 3, 8, 8) * 0.2
    grad_out = torch.randn(k, 9, 3, 8, 8)
    expected = eager_apply_reduce_step(x, triggers, grad_out, 0.0, 1.0, 2.0, 4.0)
    t = triggers.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(impl.apply_triggers(x, t, 0.0, 1.0), t, grad_out)
    got = impl.trigger_step(t.detach(), grad, 2.0, 4.0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_torch_compile_traces_the_ops():
    if not trigger_ops.extension_available():
        pytest.skip("awm_fast._C not built")

    def loss(x, triggers, weight):
        return (trigger_ops.apply_triggers(x, triggers, 0.0, 1.0, use_extension=True) * weight).sum()

    def step(triggers, grad):
        trigger_ops.trigger_step(triggers, grad, 0.5, 2.0, use_extension=True)
        return trigger_ops.project_l1_ball(triggers.flatten(1), 1.0, use_extension=True)

    x, triggers, weight = torch.rand(5, 2, 3, 3), torch.randn(3, 2, 3, 3) * 0.3, torch.randn(3, 5, 2, 3, 3)
    grads = []
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        t = triggers.clone().requires_grad_(True)
        fn(x, t, weight).backward()
        grads.append(t.grad)
    torch.testing.assert_close(grads[1], grads[0])
    results = []
    for fn in (step, torch.compile(step, backend="aot_eager", fullgraph=True)):
        t = triggers.clone()
        results.append((t, fn(t, grads[0])))
    torch.testing.assert_close(results[1], results[0])


def test_opcheck_schemas_fake_and_autograd_registrations():
    if not trigger_ops.extension_available():
        pytest.skip("awm_fast._C not built")
    ops = torch.ops.awm_fast
    x, triggers = torch.rand(3, 2, 4), torch.randn(2, 2, 4) * 0.3
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(ops.apply_triggers, (x, triggers.requires_grad_(), 0.0, 1.0, True), test_utils=checks)
    torch.library.opcheck(ops.apply_triggers_backward, (torch.randn(2, 3, 2, 4), x, triggers.detach(), 0.0, 1.0,
                                                        True, True, False), test_utils=checks)
    torch.library.opcheck(ops.trigger_step, (triggers.detach().clone(), torch.randn(2, 2, 4), 0.5, 1.0, "plain",
                                             "exact", True), test_utils=checks)
    torch.library.opcheck(ops.project_l1_ball, (torch.randn(3, 10), 1.0, "exact", True), test_utils=checks)


# ---------------------------------------------------------------------------------------------- fallback dispatch


def test_fallback_warns_once_and_matches(monkeypatch):
    monkeypatch.setattr(trigger_ops, "_EXTENSION_LOADED", False)
    monkeypatch.setattr(trigger_ops, "_EXTENSION_ERROR", "ImportError: simulated")
    monkeypatch.setattr(trigger_ops, "_warned_fallback", False)
    x, triggers = torch.rand(3, 2, 4), torch.randn(2, 2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = trigger_ops.apply_triggers(x, triggers)
        trigger_ops.project_l1_ball(triggers.flatten(1), 1.0)
        trigger_ops.trigger_step(triggers.clone(), triggers, 0.1, 1.0)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "pure-PyTorch fallback" in messages[0] and "simulated" in messages[0]
    torch.testing.assert_close(out, eager_apply_triggers(x, triggers, 0.0, 1.0), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="use_extension=True"):
        trigger_ops.apply_triggers(x, triggers, use_extension=True)


def test_auto_dispatch_uses_the_extension(monkeypatch):
    if not trigger_ops.extension_available():
        pytest.skip("awm_fast._C not built")

    def fail(*args, **kwargs):
        raise AssertionError("the pure-PyTorch fallback ran although the extension is available")

    for name in ("reference_apply_triggers", "reference_project_l1_ball", "reference_trigger_step"):
        monkeypatch.setattr(trigger_ops, name, fail)
    x, triggers = torch.rand(3, 2, 4), torch.randn(2, 2, 4, requires_grad=True)
    out = trigger_ops.apply_triggers(x, triggers)
    (grad,) = torch.autograd.grad(out.sum(), triggers)
    trigger_ops.trigger_step(triggers.detach(), grad, 0.1, 1.0)
    trigger_ops.project_l1_ball(triggers.detach().flatten(1), 1.0)


# ---------------------------------------------------------------------------------------------- int64 indexing


@pytest.mark.slow
def test_int64_indexing_beyond_2_31():
    # K·B·n = 257 · 32768 · 256 > 2^31 output elements (4.3 GB in fp16): the last rows must still be right.
    if not trigger_ops.extension_available():
        pytest.skip("awm_fast._C not built")
    k, b, n = 257, 32768, 256
    assert k * b * n > 2**31
    x = torch.rand(b, n, dtype=torch.float16)
    triggers = (torch.randn(k, n) * 0.5).to(torch.float16)
    out = trigger_ops.apply_triggers(x, triggers, 0.0, 1.0, use_extension=True)
    for kk in (0, k // 2, k - 1):
        torch.testing.assert_close(out[kk, -3:], eager_apply_triggers(x[-3:], triggers[kk : kk + 1], 0.0, 1.0)[0],
                                   rtol=0, atol=0)
