"""Fused Triton masked Conv2d (awm_fast.kernels.masked_conv2d) under the Triton interpreter vs fp64 references.

Every kernel runs on CPU tensors with TRITON_INTERPRET=1 (tests/conftest.py) and is compared with F.conv2d on
W⊙m in float64: the output and every gradient (x, mask, bias), for odd shapes, stride / padding / dilation /
groups (1, grouped, depthwise), NCHW / channels_last / non-contiguous inputs, every dtype combination, autocast,
split reductions, and each autotune config pinned in turn.

The default run (CI) is a representative subset on tiny shapes and small tiles; the full sweep carries the `slow`
marker:  python -m pytest -m slow tests/test_triton_masked_conv2d.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from awm_fast.kernels.masked_conv2d import (
    MaskedConv2dFunction,
    dmask_configs,
    dx_configs,
    fwd_configs,
    interpreter_config,
    masked_conv2d_backward,
    masked_conv2d_forward,
)
from awm_fast.kernels.utils import config_name

from awm_fast.ops import masked_conv2d

from references import masked_conv2d_ref

# Tolerances, per compute dtype, as a fraction of the reference's largest magnitude (atol = tol · max|ref|,
# rtol = tol): absolute errors of a dot product scale with the size of its terms, not of its result.
# - fp32: the interpreter's dots are fp32 with fp32 accumulation over K <= a few hundred terms, about
#   K · 2^-24 ≈ 2e-5 in the worst case and far less on average.
# - fp16 / bf16: the operands that are not already in the compute dtype (W⊙m always, x under autocast) are
#   rounded once (unit roundoff 2^-11 / 2^-8), products are exact in fp32 and accumulate in fp32, and the
#   result is rounded once more at the store: ~2 roundings ≈ 1e-3 / 8e-3, with headroom for the interpreter's
#   fp32 -> bf16 cast that can differ from torch's rounding by one ulp.
# - dmask (and dbias) are fp32 sums of products of values that are already in the compute dtype (x, and
#   grad_y = the gradient of a compute-dtype output), so they meet the fp32 tolerance unless x itself had to
#   be rounded (autocast), in which case the compute dtype's applies.
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Pinned tiles: SMALL (16) gives many programs and multi-step K loops on tiny shapes; FAST (32) is the default
# for everything else (the interpreter's cost is per program and per loop step, so fewer larger tiles are
# cheaper) and still leaves block tails on the odd sizes below; BIG (64) makes a pass one program per group.
SMALL, FAST, BIG = interpreter_config(16), interpreter_config(32), interpreter_config(64)

# (N, C, H, W, OC, kernel, stride, padding, dilation, groups): odd sizes, every geometry feature.
GEOMETRIES = {
    "basic3x3": (1, 3, 7, 7, 5, 3, 1, 1, 1, 1),
    "grouped_s2": (2, 4, 9, 8, 6, 3, 2, 0, 1, 2),
    "depthwise_dil2": (1, 4, 6, 6, 4, 3, 1, 2, 2, 4),
    "pointwise": (3, 2, 5, 5, 4, 1, 1, 0, 1, 1),
    "asymmetric": (1, 4, 11, 7, 8, (3, 2), (2, 1), (1, 0), 1, 4),
    "wide_channels": (1, 33, 4, 5, 17, 3, 1, 1, 1, 1),  # several channel blocks and column tiles
    "s3_d2": (2, 3, 9, 7, 4, 3, 3, 2, 2, 1),  # phase-split dX with tap step 3
    "s2_d3_k2x4": (1, 2, 8, 9, 4, (2, 4), (2, 3), (0, 2), (3, 1), 1),  # gcd(stride, dilation) = 1 and > 1
    "kernel_over_input": (1, 2, 3, 3, 3, 5, 1, 2, 1, 1),
    "stride_over_kernel": (1, 3, 9, 9, 4, 2, 3, 0, 1, 1),  # dX has pixels no tap reaches: must be zeros
    "depthwise_multiplier": (1, 3, 6, 5, 6, 3, 2, 1, 1, 3),  # 2 output channels per group
}
CI_GEOMETRIES = ["basic3x3", "grouped_s2", "depthwise_dil2", "pointwise", "asymmetric", "wide_channels", "s3_d2",
                 "s2_d3_k2x4", "stride_over_kernel"]
SMALL_TILE_GEOMETRIES = ["basic3x3", "grouped_s2", "wide_channels", "s2_d3_k2x4"]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _make(geometry, x_dtype=torch.float32, w_dtype=torch.float32, channels_last=False, has_bias=True,
          bias_dtype=None):
    """Inputs for one geometry; x and W are created in their dtypes so the fp64 reference sees the same values."""
    n, c, h, w, oc, k, stride, padding, dilation, groups = GEOMETRIES[geometry] if isinstance(geometry, str) \
        else geometry
    kh, kw = _pair(k)
    x = torch.randn(n, c, h, w).to(x_dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    fan_in = (c // groups) * kh * kw
    weight = (torch.randn(oc, c // groups, kh, kw) / fan_in**0.5).to(w_dtype)
    mask = torch.rand(oc, c // groups, kh, kw)
    bias = torch.randn(oc).to(bias_dtype or w_dtype) if has_bias else None
    conv = dict(stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), groups=groups)
    return x, weight, mask, bias, conv


def _reference(x, weight, mask, bias, conv, grad_y):
    """fp64 output and gradients {x, mask, bias} of conv2d(x, W⊙m, b)."""
    leaves = dict(x=x.detach().double().requires_grad_(), mask=mask.detach().double().requires_grad_(),
                  bias=None if bias is None else bias.detach().double().requires_grad_())
    out = masked_conv2d_ref(leaves["x"], weight.double(), leaves["mask"], leaves["bias"], **conv)
    out.backward(grad_y.double())
    return out.detach(), {name: t.grad for name, t in leaves.items() if t is not None}


def _assert_close(actual, expected, tol, what):
    scale = expected.abs().max().item() or 1.0
    torch.testing.assert_close(actual.double(), expected, atol=tol * scale, rtol=tol,
                               msg=lambda m: f"{what}: {m}")


def _check_launchers(x, weight, mask, bias, conv, compute_dtype=None, fwd=FAST, dx=FAST, dmask=FAST,
                     split_k=None, grad_y=None):
    """Run the three kernels through the launchers with pinned configs and compare with fp64."""
    compute_dtype = compute_dtype or x.dtype
    y = masked_conv2d_forward(x, weight, mask, bias, **_conv_args(conv), compute_dtype=compute_dtype, config=fwd)
    assert y.dtype == compute_dtype
    if grad_y is None:
        grad_y = torch.randn(y.shape).to(compute_dtype)
    ref, ref_grads = _reference(x, weight, mask, bias, conv, grad_y)
    grad_x, grad_mask, grad_bias = masked_conv2d_backward(
        grad_y, x, weight, mask, **_conv_args(conv), has_bias_grad=bias is not None, compute_dtype=compute_dtype,
        dx_config=dx, dmask_config=dmask, split_k=split_k)
    tol = TOLERANCE[compute_dtype]
    _assert_close(y, ref, tol, "y")
    _assert_close(grad_x, ref_grads["x"], tol, "grad_x")
    dmask_tol = TOLERANCE[torch.float32] if x.dtype == compute_dtype else tol
    _assert_close(grad_mask, ref_grads["mask"], dmask_tol, "grad_mask")
    assert grad_x.dtype == x.dtype and grad_x.shape == x.shape
    assert grad_mask.dtype == torch.float32 and grad_mask.shape == mask.shape
    if bias is not None:
        _assert_close(grad_bias, ref_grads["bias"], TOLERANCE[torch.float32], "grad_bias")
    return y, grad_x


def _conv_args(conv):
    return dict(stride=conv["stride"], padding=conv["padding"], dilation=conv["dilation"], groups=conv["groups"])


def _function_grads(x, weight, mask, bias, conv, grad_y=None):
    """Output and gradients through MaskedConv2dFunction.apply (the autograd path the backends use)."""
    leaves = dict(x=x.detach().clone().requires_grad_(), mask=mask.detach().clone().requires_grad_(),
                  bias=None if bias is None else bias.detach().clone().requires_grad_())
    out = MaskedConv2dFunction.apply(leaves["x"], weight, leaves["mask"], leaves["bias"], conv["stride"],
                                     conv["padding"], conv["dilation"], conv["groups"])
    if grad_y is None:
        grad_y = torch.randn(out.shape).to(out.dtype)
    out.backward(grad_y)
    return out, grad_y, {name: t.grad for name, t in leaves.items() if t is not None}


# --------------------------------------------------------------------------------------------------------------
# Geometry (fp32) through the autograd Function: outputs and all gradients, NCHW and channels_last
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("geometry", CI_GEOMETRIES)
def test_function_matches_fp64_reference(geometry, channels_last):
    x, weight, mask, bias, conv = _make(geometry, channels_last=channels_last, has_bias=geometry != "pointwise")
    out, grad_y, grads = _function_grads(x, weight, mask, bias, conv)
    ref, ref_grads = _reference(x, weight, mask, bias, conv, grad_y)
    tol = TOLERANCE[torch.float32]
    _assert_close(out, ref, tol, "y")
    for name, grad in grads.items():
        _assert_close(grad, ref_grads[name], tol, f"grad_{name}")
    # Like F.conv2d: y and grad_x keep x's memory format.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt) and grads["x"].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("geometry", SMALL_TILE_GEOMETRIES)
def test_small_tiles_match_fp64_reference(geometry):
    """16x16x16 tiles: many programs, block tails in every GEMM dimension and multi-step K loops."""
    _check_launchers(*_make(geometry), fwd=SMALL, dx=SMALL, dmask=SMALL)


def test_stride_over_kernel_leaves_unreached_inputs_zero():
    x, weight, mask, bias, conv = _make("stride_over_kernel")
    _, grad_x = _check_launchers(x, weight, mask, bias, conv)
    assert (grad_x[:, :, 2::3, :] == 0).all() and (grad_x[:, :, :, 2::3] == 0).all()


# --------------------------------------------------------------------------------------------------------------
# Strides: non-contiguous views of x, grad_y, weight and mask (no copies needed)
# --------------------------------------------------------------------------------------------------------------


def test_non_contiguous_inputs_and_grad():
    n, c, h, w, oc, groups = 2, 6, 9, 7, 5, 1
    x_big = torch.randn(n, 2 * c, h + 3, w + 2)
    x = x_big[:, ::2, 1:-2, 2:]  # strided channels, offset window
    x_t = torch.randn(n, c, w, h).transpose(2, 3)  # H and W swapped in memory
    weight = torch.randn(3, 3, c, oc).permute(3, 2, 0, 1)  # [OC, C, KH, KW] view of a permuted buffer
    mask = torch.rand(oc, c, 3, 3)  # contiguous: strides differ from weight's
    conv = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 1), groups=groups)
    for xin in (x, x_t):
        assert not xin.is_contiguous() and not xin.is_contiguous(memory_format=torch.channels_last)
        y_shape = F.conv2d(xin, weight, None, **conv).shape
        grad_y = torch.randn(y_shape[0], y_shape[2], y_shape[3], y_shape[1]).permute(0, 3, 1, 2)  # NHWC view
        _check_launchers(xin, weight, mask, None, conv, grad_y=grad_y)


def test_expanded_grad_output():
    """out.sum().backward() hands backward a stride-0 grad_y."""
    x, weight, mask, bias, conv = _make("grouped_s2")
    leaf = mask.clone().requires_grad_()
    out = MaskedConv2dFunction.apply(x, weight, leaf, bias, conv["stride"], conv["padding"], conv["dilation"],
                                     conv["groups"])
    out.sum().backward()
    _, ref_grads = _reference(x, weight, mask, bias, conv, torch.ones(out.shape))
    _assert_close(leaf.grad, ref_grads["mask"], TOLERANCE[torch.float32], "grad_mask")


# --------------------------------------------------------------------------------------------------------------
# Dtypes: every combination of activation and weight dtype (mask fp32), and autocast
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("w_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_dtype", DTYPES, ids=str)
def test_dtype_combinations(x_dtype, w_dtype):
    x, weight, mask, bias, conv = _make("grouped_s2", x_dtype, w_dtype)
    _check_launchers(x, weight, mask, bias, conv)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_channels_last_depthwise(dtype):
    _check_launchers(*_make("depthwise_multiplier", dtype, dtype, channels_last=True))


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_matches_torch_backend_convention(autocast_dtype):
    """Under autocast: y in the autocast dtype, grad_x in x's dtype (fp32), grad_mask fp32, like the torch backend."""
    x, weight, mask, bias, conv = _make("asymmetric")
    grad_y = torch.randn(F.conv2d(x, weight, None, **conv).shape).to(autocast_dtype)
    with torch.autocast("cpu", dtype=autocast_dtype):
        out, _, grads = _function_grads(x, weight, mask, bias, conv, grad_y=grad_y)
        torch_leaf = mask.clone().requires_grad_()
        torch_out = masked_conv2d(x, weight, torch_leaf, bias, backend="torch", **conv)
    assert out.dtype == torch_out.dtype == autocast_dtype
    assert grads["x"].dtype == torch.float32 and grads["mask"].dtype == torch.float32
    assert grads["bias"].dtype == bias.dtype
    ref, ref_grads = _reference(x, weight, mask, bias, conv, grad_y)
    tol = TOLERANCE[autocast_dtype]
    _assert_close(out, ref, tol, "y")
    for name, grad in grads.items():
        _assert_close(grad, ref_grads[name], tol, f"grad_{name}")


# --------------------------------------------------------------------------------------------------------------
# Split reduction of dmask, needs_input_grad, edge cases, errors, dispatch
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split_k", [1, 2, 3])
def test_dmask_split_reduction(split_k):
    x, weight, mask, bias, conv = _make((2, 2, 17, 17, 2, 1, 1, 0, 1, 1))  # 578 output pixels: 1, 2 or 3 splits
    _check_launchers(x, weight, mask, bias, conv, split_k=split_k, fwd=BIG, dx=BIG)


def test_default_split_heuristic_splits_long_reductions():
    import awm_fast.kernels.masked_conv2d as module

    x, weight, mask, bias, conv = _make((1, 2, 33, 33, 2, 1, 1, 0, 1, 1))  # tiny weight, 1089 pixels
    assert module._split_reduction(33 * 33, weight.numel(), x.device, None) == (2, 768)
    _check_launchers(x, weight, mask, bias, conv, fwd=BIG, dx=BIG, dmask=BIG)


@pytest.mark.parametrize("wanted", ["x", "mask", "bias", "none"])
def test_needs_input_grad_is_honoured(wanted, monkeypatch):
    import awm_fast.kernels.masked_conv2d as module

    launched = []
    for name in ("_DX", "_DMASK"):
        tuned = getattr(module, name)
        original = tuned.launch
        monkeypatch.setattr(tuned, "launch", lambda *a, _n=name, _o=original, **k: (launched.append(_n), _o(*a, **k)))
    x, weight, mask, bias, conv = _make("basic3x3")
    x.requires_grad_(wanted == "x")
    mask.requires_grad_(wanted == "mask")
    bias.requires_grad_(wanted == "bias")
    weight.requires_grad_(True)  # AWM freezes W: it never gets a gradient
    out = MaskedConv2dFunction.apply(x, weight, mask, bias, conv["stride"], conv["padding"], conv["dilation"],
                                     conv["groups"])
    if wanted == "none":
        out.sum().backward()  # only W requires grad, and W's gradient is None by design
        assert launched == []
        return
    out.sum().backward()
    assert weight.grad is None
    assert (x.grad is not None) == (wanted == "x") and (mask.grad is not None) == (wanted == "mask")
    assert (bias.grad is not None) == (wanted == "bias")
    assert launched == {"x": ["_DX"], "mask": ["_DMASK"], "bias": [], "none": []}[wanted]


def test_empty_batch():
    x, weight, mask, bias, conv = _make((0, 3, 5, 5, 4, 3, 1, 1, 1, 1))
    y = masked_conv2d_forward(x, weight, mask, bias, **_conv_args(conv))
    assert y.shape == (0, 4, 5, 5)
    grad_x, grad_mask, grad_bias = masked_conv2d_backward(y, x, weight, mask, **_conv_args(conv), has_bias_grad=True)
    assert grad_x.shape == x.shape and (grad_mask == 0).all() and (grad_bias == 0).all()


def test_input_errors_name_the_tensor():
    x, weight, mask, bias, conv = _make("basic3x3")
    args = _conv_args(conv)
    with pytest.raises(ValueError, match="mask shape"):
        masked_conv2d_forward(x, weight, mask[:, :2], bias, **args)
    with pytest.raises(ValueError, match="bias shape"):
        masked_conv2d_forward(x, weight, mask, bias[:2], **args)
    with pytest.raises(ValueError, match="groups"):
        masked_conv2d_forward(x, weight, mask, bias, **{**args, "groups": 2})
    with pytest.raises(TypeError, match="x has dtype"):
        masked_conv2d_forward(x.double(), weight, mask, bias, **args)
    with pytest.raises(ValueError, match="output size"):
        masked_conv2d_forward(x[:, :, :2, :2], weight, mask, bias, **{**args, "padding": (0, 0)})


def test_triton_backend_dispatch():
    x, weight, mask, bias, conv = _make("grouped_s2")
    leaf = mask.clone().requires_grad_()
    out = masked_conv2d(x, weight, leaf, bias, backend="triton", **conv)
    ref = masked_conv2d_ref(x.double(), weight.double(), mask.double(), bias.double(), **conv)
    _assert_close(out, ref, TOLERANCE[torch.float32], "y")


# --------------------------------------------------------------------------------------------------------------
# Every autotune config, pinned (CI: one or two small shapes per config; slow: every dtype and layout)
# --------------------------------------------------------------------------------------------------------------


def _pass_configs(compute_dtype):
    return [(kernel_pass, config) for kernel_pass, configs in
            (("fwd", fwd_configs(compute_dtype)), ("dx", dx_configs(compute_dtype)),
             ("dmask", dmask_configs(compute_dtype)))
            for config in configs]


def _config_ids(pass_configs):
    return [f"{p}-{config_name(c)}" for p, c in pass_configs]


PASS_CONFIGS = {dtype: _pass_configs(dtype) for dtype in (torch.bfloat16, torch.float32)}


def _check_config(kernel_pass, config, geometry, dtype, channels_last):
    """One pass with `config` pinned (the other two as one-program tiles), against fp64."""
    pinned = dict(fwd=BIG, dx=BIG, dmask=BIG)
    pinned[kernel_pass] = config
    _check_launchers(*_make(geometry, dtype, dtype, channels_last=channels_last), **pinned)


@pytest.mark.parametrize("kernel_pass, config", PASS_CONFIGS[torch.bfloat16],
                         ids=_config_ids(PASS_CONFIGS[torch.bfloat16]))
def test_every_config_16bit(kernel_pass, config):
    """Each 16-bit autotune config pinned: bf16 NCHW with several channel blocks, fp16 channels_last."""
    _check_config(kernel_pass, config, "wide_channels", torch.bfloat16, False)
    _check_config(kernel_pass, config, "grouped_s2", torch.float16, True)


@pytest.mark.parametrize("kernel_pass, config", PASS_CONFIGS[torch.float32],
                         ids=_config_ids(PASS_CONFIGS[torch.float32]))
def test_every_config_fp32(kernel_pass, config):
    _check_config(kernel_pass, config, "grouped_s2", torch.float32, True)


# --------------------------------------------------------------------------------------------------------------
# Full sweep (slow): geometry x dtype x layout x config
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("w_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_sweep_geometry_dtypes_layouts(geometry, x_dtype, w_dtype, channels_last):
    _check_launchers(*_make(geometry, x_dtype, w_dtype, channels_last=channels_last))


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", ["wide_channels", "s2_d3_k2x4", "depthwise_multiplier"])
def test_sweep_every_config(geometry, dtype, channels_last):
    for kernel_pass, config in _pass_configs(dtype):
        _check_config(kernel_pass, config, geometry, dtype, channels_last)


@pytest.mark.slow
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_sweep_autocast(geometry, autocast_dtype):
    x, weight, mask, bias, conv = _make(geometry)
    with torch.autocast("cpu", dtype=autocast_dtype):
        out, grad_y, grads = _function_grads(x, weight, mask, bias, conv)
    ref, ref_grads = _reference(x, weight, mask, bias, conv, grad_y)
    tol = TOLERANCE[autocast_dtype]
    _assert_close(out, ref, tol, "y")
    for name, grad in grads.items():
        _assert_close(grad, ref_grads[name], tol, f"grad_{name}")
