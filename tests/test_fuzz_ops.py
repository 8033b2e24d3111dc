"""Property-based fuzz of the masked ops (CPU backends "reference" and "torch") against the fp64 references.

Hypothesis draws shapes (odd sizes, size-1 dims, groups, strides, padding, dilation), memory layouts of x,
W and m (contiguous, transposed, sliced with a step, channels_last, broadcast with stride 0) and dtypes
(fp64, fp32, bf16 under autocast as purify runs it, bf16 storage); the output and every gradient (x, m, b)
must match references.py's fp64 ops within a bound derived from the arithmetic, not a guessed tolerance:

    |fast - ref| <= SAFETY · (L · u_acc + ROUNDINGS · u_compute) · |ref|_abs + tiny

where |ref|_abs is the same op on |inputs| (it bounds every partial sum, so cancellation cannot hide an
error), L the longest reduction of any of the four results, u_acc the accumulator's unit roundoff (fp32
accumulates bf16 products), u_compute that of the compute dtype, and ROUNDINGS the number of roundings to it
on the way (inputs, W⊙m, the result, the ⊙W epilogue of grad m).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from awm_fast.ops import masked_conv2d, masked_linear

from references import grads_through, masked_conv2d_ref, masked_linear_ref

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}
SAFETY = 2.0
ROUNDINGS = 6


@dataclasses.dataclass(frozen=True)
class Precision:
    """storage: dtype of x, W (and b); autocast: the autocast dtype or None. Masks are always fp32 (or fp64)."""

    name: str
    storage: torch.dtype
    autocast: torch.dtype | None = None

    @property
    def compute(self) -> torch.dtype:
        return self.autocast or self.storage

    def context(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=self.autocast)


FP64, FP32 = Precision("fp64", torch.float64), Precision("fp32", torch.float32)
AUTOCAST_BF16 = Precision("fp32+autocast-bf16", torch.float32, torch.bfloat16)
BF16_STORAGE = Precision("bf16", torch.bfloat16)
# The reference backend is F.linear(x, W*m): a bf16 x with a promoted fp32 W*m is a dtype error by design
# (purify runs low precision through autocast), so bf16 storage is the torch backend's alone.
BACKEND_PRECISIONS = [("reference", p) for p in (FP64, FP32, AUTOCAST_BF16)] + \
    [("torch", p) for p in (FP64, FP32, AUTOCAST_BF16, BF16_STORAGE)]


def _layout(base_shape, layout: str, dims: tuple[int, int] = (-2, -1)):
    """(shape of the tensor to allocate, view that gives `base_shape` with the requested strides)."""
    if layout == "transposed":  # allocate with two dims swapped, view back: non-unit innermost stride
        a, b = dims
        shape = list(base_shape)
        shape[a], shape[b] = shape[b], shape[a]
        return tuple(shape), lambda t: t.transpose(a, b)
    if layout == "sliced":  # every other element of the innermost dim: stride 2, odd storage offset
        shape = (*base_shape[:-1], 2 * base_shape[-1] + 1)
        return shape, lambda t: t[..., 1::2]
    if layout == "broadcast" and base_shape[0] > 1:  # stride 0 on the leading dim
        return (1, *base_shape[1:]), lambda t: t.expand(base_shape)
    if layout == "channels_last" and len(base_shape) == 4:
        return tuple(base_shape), lambda t: t.to(memory_format=torch.channels_last)
    return tuple(base_shape), lambda t: t


def _check(fast: torch.Tensor, ref: torch.Tensor, abs_ref: torch.Tensor, reduction: int, precision: Precision,
           what: str) -> None:
    u_compute = UNIT_ROUNDOFF[precision.compute]
    u_acc = UNIT_ROUNDOFF[torch.float64 if precision.compute == torch.float64 else torch.float32]
    bound = SAFETY * (reduction * u_acc + ROUNDINGS * u_compute) * abs_ref + 1e-30
    error = (fast.double() - ref).abs()
    worst = int((error - bound).flatten().argmax()) if error.numel() else 0
    assert bool((error <= bound).all()), (
        f"{what}: |error| {float(error.flatten()[worst]):.3g} > bound {float(bound.flatten()[worst]):.3g} "
        f"at flat index {worst} (value {float(ref.flatten()[worst]):.4g}, {precision.name})")


def _run_and_compare(op, ref_op, tensors: dict[str, torch.Tensor], views: dict[str, callable], constants: dict,
                     reductions: int, precision: Precision, seed: int) -> None:
    """op(**views(tensors)) vs ref_op on fp64 copies; the output and the gradient of every tensor but "weight"
    (AWM never differentiates W). Views (strides) are applied to the allocated tensors in both."""
    def viewed(values):
        return {k: views.get(k, lambda t: t)(v) for k, v in values.items()}

    def leaves(transform):
        return {k: transform(v).requires_grad_(k != "weight") for k, v in tensors.items()}

    fast_leaves = leaves(lambda t: t.detach().clone())
    with precision.context():
        out = op(**viewed(fast_leaves), **constants)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    out.backward(grad_out)

    def ref(**values):
        return ref_op(**viewed(values), **constants)

    # The same op on |inputs| and |grad_out| bounds every partial sum of the output and of each gradient.
    ref_leaves, abs_leaves = leaves(lambda t: t.detach().double()), leaves(lambda t: t.detach().double().abs())
    ref_out, abs_out = ref(**ref_leaves), ref(**abs_leaves)
    ref_grads = grads_through(ref, ref_leaves, grad_out.double())
    abs_grads = grads_through(ref, abs_leaves, grad_out.double().abs())

    assert out.shape == ref_out.shape and out.dtype == precision.compute
    _check(out.detach(), ref_out.detach(), abs_out.detach(), reductions, precision, "output")
    for name, leaf in fast_leaves.items():
        if name == "weight":
            assert leaf.grad is None  # W stays frozen
            continue
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype, name
        _check(leaf.grad, ref_grads[name], abs_grads[name], reductions, precision, f"grad {name}")


LAYOUTS_X = st.sampled_from(["contiguous", "transposed", "sliced", "broadcast"])
LAYOUTS_W = st.sampled_from(["contiguous", "transposed", "sliced"])
SIZES = st.integers(1, 9) | st.sampled_from([1, 7, 13, 33])


@FUZZ
@given(backend_precision=st.sampled_from(BACKEND_PRECISIONS),
       lead=st.lists(st.integers(1, 5), min_size=1, max_size=3), in_features=SIZES, out_features=SIZES,
       x_layout=LAYOUTS_X, w_layout=LAYOUTS_W, m_layout=LAYOUTS_W, has_bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_masked_linear_matches_fp64_reference(backend_precision, lead, in_features, out_features, x_layout,
                                              w_layout, m_layout, has_bias, seed):
    backend, precision = backend_precision
    generator = torch.Generator().manual_seed(seed)
    x_shape, x_view = _layout((*lead, in_features), x_layout, dims=(0, -1))
    w_shape, w_view = _layout((out_features, in_features), w_layout)
    m_shape, m_view = _layout((out_features, in_features), m_layout)
    mask_dtype = torch.float64 if precision.storage == torch.float64 else torch.float32
    tensors = {"x": torch.randn(x_shape, generator=generator).to(precision.storage),
               "weight": torch.randn(w_shape, generator=generator).to(precision.storage),
               "mask": torch.rand(m_shape, generator=generator, dtype=mask_dtype)}
    views = {"x": x_view, "weight": w_view, "mask": m_view}
    if has_bias:
        tensors["bias"] = torch.randn(out_features, generator=generator).to(precision.storage)
    rows = 1
    for size in lead:
        rows *= size

    def op(x, weight, mask, bias=None):
        return masked_linear(x, weight, mask, bias, backend=backend)

    # forward: in_features terms; grad x: out_features (times lead[0] when x is broadcast); grad m, grad b: rows
    reductions = max(in_features, out_features * (lead[0] if x_layout == "broadcast" else 1), rows) + 1
    _run_and_compare(op, masked_linear_ref, tensors, views, {}, reductions, precision, seed)


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    c, oc = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    assume(oh >= 1 and ow >= 1)
    return dict(n=n, c=c, h=h, w=w, oc=oc, kh=kh, kw=kw, stride=stride, padding=padding, dilation=dilation,
                groups=groups, oh=oh, ow=ow)


@FUZZ
@given(backend_precision=st.sampled_from(BACKEND_PRECISIONS), case=conv_cases(),
       x_layout=st.sampled_from(["contiguous", "channels_last", "sliced", "broadcast"]),
       m_layout=st.sampled_from(["contiguous", "channels_last", "transposed"]), has_bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_masked_conv2d_matches_fp64_reference(backend_precision, case, x_layout, m_layout, has_bias, seed):
    backend, precision = backend_precision
    generator = torch.Generator().manual_seed(seed)
    w_shape = (case["oc"], case["c"] // case["groups"], case["kh"], case["kw"])
    x_shape, x_view = _layout((case["n"], case["c"], case["h"], case["w"]), x_layout)
    m_alloc, m_view = _layout(w_shape, m_layout)
    mask_dtype = torch.float64 if precision.storage == torch.float64 else torch.float32
    tensors = {"x": torch.rand(x_shape, generator=generator).to(precision.storage),  # images: non-negative
               "weight": torch.randn(w_shape, generator=generator).to(precision.storage),
               "mask": torch.rand(m_alloc, generator=generator, dtype=mask_dtype)}
    views = {"x": x_view, "mask": m_view}
    if has_bias:
        tensors["bias"] = torch.randn(case["oc"], generator=generator).to(precision.storage)
    constants = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    taps = case["kh"] * case["kw"]
    broadcast = case["n"] if x_layout == "broadcast" else 1  # grad x of a stride-0 batch sums over it
    reductions = max(case["c"] // case["groups"] * taps, case["oc"] // case["groups"] * taps * broadcast,
                     case["n"] * case["oh"] * case["ow"]) + 1

    def op(x, weight, mask, bias=None, **conv):
        return masked_conv2d(x, weight, mask, bias, **conv, backend=backend)

    _run_and_compare(op, masked_conv2d_ref, tensors, views, constants, reductions, precision, seed)
