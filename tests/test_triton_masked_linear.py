"""The fused Triton masked Linear (awm_fast.kernels.masked_linear) under the Triton interpreter.

Every kernel runs on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1) and is compared, output and
every gradient, with float64 eager references (tests/references.py). Default run: every dtype combination,
every autotune config pinned once, odd shapes, strides, autocast, needs_input_grad. The full cross product
(every shape x dtype x config) carries the `slow` marker:

    python -m pytest -m slow tests/test_triton_masked_linear.py

Tolerances. The reference is computed in fp64 from the operands as the kernels see them (x and dY rounded
to the compute dtype, as the contract says), so what remains is the kernels' own rounding:
  - W⊙m is rounded once to the compute dtype (relative error <= u) and then enters K products;
    fp32 accumulation adds <= K·2^-24 relative per partial sum;
  - the result is rounded once to the output dtype (<= u relative);
  - the interpreter's fp32 -> bf16/fp16 casts may differ from torch's round-to-nearest-even by one ulp
    (DESIGN.md), so each rounding is allowed 2u.
Per-term rounding errors of random sign add up like a random walk, i.e. in proportion to
    scale = sqrt(Σ_k (a_k · b_k)²)
(the root-sum-square of the products that form each output element), not to |result|, which cancellation
can make arbitrarily small. Hence the check |out − ref| <= rtol·|ref| + atol·scale with, per dtype
(u = unit roundoff: fp32 2^-24, fp16 2^-11, bf16 2^-8):
  rtol = 4u  (output rounding, ≤ 2u with the interpreter's ulp, plus headroom)
  atol = 8u  (operand rounding of 2u per term: a 4-sigma random-walk bound; fp32 also covers the
              accumulation over the K <= 257 terms used here, K·2^-24 / sqrt(K) < 1e-6)
Plus a floor for gradual underflow (fp16 subnormals, see assert_close_scaled). Gradients that round nothing
in-kernel (dmask from operands already in the compute dtype: bf16/fp16 products
are exact in fp32) use the fp32 row; the dtype an output is stored in also bounds it (max of both rows).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import triton
from awm_fast.kernels import masked_linear as ml
from awm_fast.kernels.masked_linear import MaskedLinearFunction
from awm_fast.kernels.utils import interpreter_active, prune_configs_by_shared_memory, shared_memory_bytes

from awm_fast.ops.torch_autograd import MaskedLinearTorchFunction

from references import grads_through, masked_linear_ref

pytestmark = pytest.mark.skipif(not interpreter_active() and not torch.cuda.is_available(),
                                reason="Triton kernels need CUDA or TRITON_INTERPRET=1")

DEVICE = "cuda" if not interpreter_active() else "cpu"

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# dtype -> (rtol, atol) for |out - ref| <= rtol·|ref| + atol·scale; derivation in the module docstring.
# fp32 is floored at 1e-5: on GPUs fp32 dots run as TF32x3 (error ~ 2^-22 per product), not exact fp32.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (4 * UNIT_ROUNDOFF[torch.float16], 8 * UNIT_ROUNDOFF[torch.float16]),
    torch.bfloat16: (4 * UNIT_ROUNDOFF[torch.bfloat16], 8 * UNIT_ROUNDOFF[torch.bfloat16]),
}

SUBNORMAL_SPACING = {torch.float32: 2.0**-149, torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133}

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
DTYPE_COMBOS = list(itertools.product(FLOATS, FLOATS))  # (x dtype, weight dtype): every combination
ODD_SIZES = (1, 7, 33, 129)


def _tol(*dtypes: torch.dtype) -> tuple[float, float]:
    """The loosest (rtol, atol) among the dtypes a value is rounded to on its way out."""
    return max(TOLERANCES[d][0] for d in dtypes), max(TOLERANCES[d][1] for d in dtypes)


def assert_close_scaled(name, actual, expected, scale, dtypes, operand_norm=0.0):
    """|actual - expected| <= rtol·|expected| + atol·scale + floor elementwise (all fp64), failing readably.

    floor = 4·eta·(operand_norm + 1) covers gradual underflow: eta is the subnormal spacing of the dtypes
    (fp16 2^-24 matters; bf16 and fp32 share fp32's exponent range), a W⊙m term rounded to a subnormal is off by
    up to eta·|a_k|, adding up to eta·sqrt(Σ a_k²) = eta·operand_norm, and the output rounding adds eta.
    """
    rtol, atol = _tol(*dtypes)
    eta = max(SUBNORMAL_SPACING[d] for d in dtypes)
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.double() - expected).abs()
    bound = rtol * expected.abs() + atol * scale + 4 * eta * (operand_norm + 1)
    worst = (err / bound).max().item() if err.numel() else 0.0
    if worst > 1.0:
        at = (err / bound).argmax()
        got, want = actual.flatten()[at].item(), expected.flatten()[at].item()
        raise AssertionError(
            f"{name}: error {err.flatten()[at].item():.3e} at {at.item()} is {worst:.2f}x the bound "
            f"{bound.flatten()[at]:.3e} (actual {got:.6g}, expected {want:.6g}, scale {scale.flatten()[at].item():.3e};"
            f" rtol={rtol:.1e}, atol={atol:.1e} x scale, dtypes {dtypes})")


def make_inputs(lead_shape, k, n, x_dtype, w_dtype, bias=True, x_layout="contiguous", w_layout="contiguous"):
    """x [*lead_shape, k] in the requested layout, W [n, k] (possibly a transposed view), m [n, k] in (0, 1)."""
    if x_layout == "contiguous":
        x = torch.randn(*lead_shape, k, dtype=x_dtype, device=DEVICE)
    elif x_layout == "sliced":  # every other feature of a wider tensor: stride_xk = 2
        x = torch.randn(*lead_shape, 2 * k, dtype=x_dtype, device=DEVICE)[..., ::2]
    elif x_layout == "transposed_lead":  # seq-first view [T, B, K] of a [B, T, K] tensor (a 3-D row view)
        assert len(lead_shape) == 2
        x = torch.randn(lead_shape[1], lead_shape[0], k, dtype=x_dtype, device=DEVICE).transpose(0, 1)
    elif x_layout == "permuted":  # leading dims that stay three strided groups: the documented copy path
        assert len(lead_shape) == 3
        x = torch.randn(*reversed(lead_shape), k, dtype=x_dtype, device=DEVICE).permute(2, 1, 0, 3)
    else:
        raise ValueError(x_layout)
    if w_layout == "contiguous":
        weight = torch.randn(n, k, dtype=w_dtype, device=DEVICE)
        mask = torch.rand(n, k, dtype=torch.float32, device=DEVICE)
    else:  # transposed storage for both
        weight = torch.randn(k, n, dtype=w_dtype, device=DEVICE).t()
        mask = torch.rand(k, n, dtype=torch.float32, device=DEVICE).t()
    b = torch.randn(n, dtype=w_dtype, device=DEVICE) if bias else None
    return x, weight, mask, b


def check_against_reference(x, weight, mask, bias, *, compute_dtype=None, grad_y=None, needs=(True, True, True),
                            fwd_config=None, dx_config=None, dmask_config=None):
    """Run forward + backward through the launchers and compare y, dX, dmask, dbias with fp64 autograd."""
    compute_dtype = compute_dtype or x.dtype
    y = ml.masked_linear_forward(x, weight, mask, bias, compute_dtype=compute_dtype, config=fwd_config)
    assert y.dtype == compute_dtype and y.shape == (*x.shape[:-1], weight.shape[0])
    if grad_y is None:
        grad_y = torch.randn_like(y)
    # The contract: x and dY enter the matmuls rounded to the compute dtype.
    x_c = x.to(compute_dtype).double()
    dy_c = grad_y.to(compute_dtype).double()
    w_eff = weight.double() * mask.double()

    leaves = {"x": x_c.clone().requires_grad_(needs[0]), "weight": weight.double(),
              "mask": mask.double().requires_grad_(needs[1]),
              "bias": None if bias is None else bias.double().requires_grad_(needs[2])}
    ref_grads = grads_through(masked_linear_ref, leaves, dy_c) if any(needs) else {}
    y_ref = masked_linear_ref(**{k: v.detach() if v is not None else None for k, v in leaves.items()})

    scale_y = (x_c.square() @ w_eff.square().t()).sqrt()
    x_norm = x_c.square().sum(-1, keepdim=True).sqrt()
    assert_close_scaled("y", y, y_ref, scale_y, (compute_dtype,), operand_norm=x_norm)

    grad_x, grad_mask, grad_bias = ml.masked_linear_backward(
        grad_y, x, weight, mask, bias, needs, compute_dtype=compute_dtype, dx_config=dx_config,
        dmask_config=dmask_config)
    if needs[0]:
        assert grad_x.dtype == x.dtype and grad_x.shape == x.shape
        scale_dx = (dy_c.square() @ w_eff.square()).sqrt()
        dy_norm = dy_c.square().sum(-1, keepdim=True).sqrt()
        assert_close_scaled("grad_x", grad_x, ref_grads["x"], scale_dx, (compute_dtype, x.dtype), operand_norm=dy_norm)
    else:
        assert grad_x is None
    if needs[1]:
        assert grad_mask.dtype == mask.dtype and grad_mask.shape == mask.shape
        dy2 = dy_c.reshape(-1, dy_c.shape[-1]).square()
        x2 = x_c.reshape(-1, x_c.shape[-1]).square()
        scale_dm = (dy2.t() @ x2).sqrt() * weight.double().abs()
        # x or dY rounded in-kernel (their dtype differs from the compute dtype) -> compute-dtype tolerance.
        rounded = compute_dtype if (x.dtype != compute_dtype or grad_y.dtype != compute_dtype) else torch.float32
        assert_close_scaled("grad_mask", grad_mask, ref_grads["mask"], scale_dm, (rounded, mask.dtype))
    else:
        assert grad_mask is None
    if bias is not None and needs[2]:
        assert grad_bias.dtype == bias.dtype and grad_bias.shape == bias.shape
        scale_db = dy_c.reshape(-1, dy_c.shape[-1]).square().sum(0).sqrt()
        assert_close_scaled("grad_bias", grad_bias, ref_grads["bias"], scale_db, (torch.float32, bias.dtype))
    else:
        assert grad_bias is None
    return y, grad_x, grad_mask, grad_bias


# ------------------------------------------------------------------------------------------------------------
# Default (CI) subset
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_dtype, w_dtype", DTYPE_COMBOS, ids=lambda d: str(d).removeprefix("torch."))
def test_every_dtype_combination(x_dtype, w_dtype):
    x, weight, mask, bias = make_inputs((3, 11), 33, 7, x_dtype, w_dtype)
    check_against_reference(x, weight, mask, bias)


def _pass_configs():
    """(pass, compute dtype, config) for every autotune config of every pass (16-bit lists run in bf16)."""
    passes = {"fwd": ml.fwd_configs, "dx": ml.bwd_dx_configs, "dmask": ml.bwd_dmask_configs}
    for (name, configs), dtype in itertools.product(passes.items(), (torch.bfloat16, torch.float32)):
        for config in configs(dtype):
            yield pytest.param(name, dtype, config, id=f"{name}-{str(dtype)[6:]}-{ml.config_name(config)}")


@pytest.mark.parametrize("kernel_pass, dtype, config", list(_pass_configs()))
def test_every_autotune_config_pinned(kernel_pass, dtype, config):
    # Odd sizes straddle every tile edge: 33 rows (as [3, 11]), K = 129 (a K tail), N = 65 (an N tail).
    x, weight, mask, bias = make_inputs((3, 11), 129, 65, dtype, dtype)
    pinned = {"fwd_config": config} if kernel_pass == "fwd" else {f"{kernel_pass}_config": config}
    needs = {"fwd": (False, False, False), "dx": (True, False, False), "dmask": (False, True, False)}[kernel_pass]
    check_against_reference(x, weight, mask, bias, needs=needs, **pinned)


@pytest.mark.parametrize("lead_shape, k, n", [((1,), 1, 1), ((7,), 7, 33), ((129,), 33, 7), ((2, 3, 5), 129, 1),
                                              ((), 20, 9)])
def test_odd_shapes_and_leading_dims(lead_shape, k, n):
    x, weight, mask, bias = make_inputs(lead_shape, k, n, torch.float16, torch.float16)
    check_against_reference(x, weight, mask, bias)


@pytest.mark.parametrize("x_layout, lead_shape", [("sliced", (5, 7)), ("transposed_lead", (5, 7)),
                                                  ("permuted", (2, 3, 4))])
def test_non_contiguous_inputs(x_layout, lead_shape):
    x, weight, mask, bias = make_inputs(lead_shape, 33, 17, torch.float32, torch.float32, x_layout=x_layout,
                                        w_layout="transposed")
    assert not x.is_contiguous() and not weight.is_contiguous() and not mask.is_contiguous()
    grad_y = torch.randn(17, *lead_shape, device=DEVICE).movedim(0, -1)  # non-contiguous dY too
    check_against_reference(x, weight, mask, bias, grad_y=grad_y)


def test_strided_views_are_not_copied():
    base = torch.randn(7, 5, 66)
    for t, rows_3d in ((base[..., ::2], False), (base.transpose(0, 1), True), (base[2], False), (base[:, 1:4], True)):
        view, inner, stride_b, stride_r, is_3d = ml._rows_view(t)
        assert view.data_ptr() == t.data_ptr() and is_3d == rows_3d
        rows = torch.arange(math.prod(t.shape[:-1]))
        offsets = (rows // inner) * stride_b + (rows % inner) * stride_r if is_3d else rows * stride_r
        first_column = base.flatten()[t.storage_offset() + offsets]
        assert torch.equal(first_column, t.reshape(-1, t.shape[-1])[:, 0])
    # Three leading groups that do not merge: one documented copy.
    permuted = torch.randn(4, 3, 2, 8).permute(2, 1, 0, 3)
    view, *_, is_3d = ml._rows_view(permuted)
    assert view.is_contiguous() and not is_3d and torch.equal(view, permuted)


def test_broadcast_grad_output():
    # y.sum().backward() hands an expanded dY (every stride 0); it must be read in place.
    x, weight, mask, bias = make_inputs((4, 9), 33, 12, torch.float32, torch.float32)
    grad_y = torch.ones(1, 1, 1, device=DEVICE).expand(4, 9, 12)
    check_against_reference(x, weight, mask, bias, grad_y=grad_y)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_autocast_matches_torch_backend_and_reference(amp_dtype):
    x, weight, mask, bias = make_inputs((6, 5), 40, 24, torch.float32, torch.float32)
    grad_y = torch.randn(6, 5, 24, device=DEVICE).to(amp_dtype)
    results = {}
    for name, function in (("triton", MaskedLinearFunction), ("torch", MaskedLinearTorchFunction)):
        leaves = [t.clone().requires_grad_(True) for t in (x, mask, bias)]
        with torch.autocast(DEVICE, dtype=amp_dtype):
            y = function.apply(leaves[0], weight, leaves[1], leaves[2])
        y.backward(grad_y)
        results[name] = (y, *(t.grad for t in leaves))
    y, gx, gm, gb = results["triton"]
    assert y.dtype == amp_dtype and gx.dtype == gm.dtype == gb.dtype == torch.float32
    assert [t.dtype for t in results["torch"]] == [t.dtype for t in results["triton"]]

    # Both backends against fp64 on the autocast-rounded operands, with the same tolerance table.
    x_c, dy_c = x.to(amp_dtype).double(), grad_y.double()
    w_eff = weight.double() * mask.double()
    scale_y = (x_c.square() @ w_eff.square().t()).sqrt()
    scale_dx = (dy_c.square() @ w_eff.square()).sqrt()
    leaves = {"x": x_c.requires_grad_(), "weight": weight.double(), "mask": mask.double().requires_grad_(),
              "bias": bias.double().requires_grad_()}
    ref = grads_through(masked_linear_ref, leaves, dy_c)
    y_ref = masked_linear_ref(x_c.detach(), weight.double(), mask.double(), bias.double())
    for name, (y, gx, gm, gb) in results.items():
        assert_close_scaled(f"{name} y", y, y_ref, scale_y, (amp_dtype,))
        assert_close_scaled(f"{name} grad_x", gx, ref["x"], scale_dx, (amp_dtype,))
        scale_dm = (dy_c.reshape(-1, 24).square().t() @ x_c.detach().reshape(-1, 40).square()).sqrt()
        assert_close_scaled(f"{name} grad_mask", gm, ref["mask"], scale_dm * weight.double().abs(), (amp_dtype,))
        assert_close_scaled(f"{name} grad_bias", gb, ref["bias"], dy_c.reshape(-1, 24).square().sum(0).sqrt(),
                            (torch.float32,))


def test_autograd_function_honours_needs_input_grad(monkeypatch):
    launched = []
    for name in ("_FWD", "_BWD_DX", "_BWD_DMASK"):
        tuned = getattr(ml, name)
        original = tuned.launch
        monkeypatch.setattr(tuned, "launch", lambda *a, _o=original, _n=name, **k: (launched.append(_n), _o(*a, **k)))
    x, weight, mask, bias = make_inputs((5,), 16, 8, torch.float32, torch.float32)
    weight.requires_grad_(True)  # W is frozen in AWM: it must still get no gradient
    cases = [((True, False, False), {"_FWD", "_BWD_DX"}), ((False, True, False), {"_FWD", "_BWD_DMASK"}),
             ((False, False, True), {"_FWD"}), ((True, True, True), {"_FWD", "_BWD_DX", "_BWD_DMASK"})]
    for (gx, gm, gb), expected_launches in cases:
        launched.clear()
        xs, ms, bs = x.clone().requires_grad_(gx), mask.clone().requires_grad_(gm), bias.clone().requires_grad_(gb)
        MaskedLinearFunction.apply(xs, weight, ms, bs).sum().backward()
        assert set(launched) == expected_launches
        assert (xs.grad is not None) == gx and (ms.grad is not None) == gm and (bs.grad is not None) == gb
        assert weight.grad is None


def test_no_bias_and_gradcheck_style_agreement():
    # No bias; the Function against autograd through the eager reference, all in one call path.
    x, weight, mask, _ = make_inputs((4, 3), 24, 10, torch.float32, torch.float32, bias=False)
    x.requires_grad_(True)
    mask.requires_grad_(True)
    y = MaskedLinearFunction.apply(x, weight, mask, None)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)
    ref = grads_through(masked_linear_ref, {"x": x.detach().double().requires_grad_(), "weight": weight.double(),
                                            "mask": mask.detach().double().requires_grad_(), "bias": None},
                        grad_y.double())
    torch.testing.assert_close(x.grad.double(), ref["x"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mask.grad.double(), ref["mask"], rtol=1e-5, atol=1e-5)


def test_grouped_launch_order_covers_every_tile():
    # 9 x 3 output tiles in groups of 4 rows (a partial last group): every tile written exactly once.
    config = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 4}, num_warps=4, num_stages=2)
    x, weight, mask, bias = make_inputs((129,), 40, 33, torch.float16, torch.float16)
    check_against_reference(x, weight, mask, bias, needs=(False, False, False), fwd_config=config)
    dmask_config = triton.Config({"BLOCK_N": 16, "BLOCK_K": 16, "BLOCK_M": 16, "GROUP_N": 2}, num_warps=4,
                                 num_stages=2)
    check_against_reference(x, weight, mask, bias, needs=(False, True, False), dmask_config=dmask_config)


def test_empty_rows_and_zero_features():
    x, weight, mask, bias = make_inputs((0, 3), 5, 4, torch.float32, torch.float32)
    y = ml.masked_linear_forward(x, weight, mask, bias)
    assert y.shape == (0, 3, 4)
    gx, gm, gb = ml.masked_linear_backward(torch.zeros_like(y), x, weight, mask, bias, (True, True, True))
    assert gx.shape == x.shape and torch.equal(gm, torch.zeros_like(mask)) and torch.equal(gb, torch.zeros_like(bias))
    # K = 0: y is the bias alone.
    x, weight, mask, bias = make_inputs((3,), 0, 4, torch.float32, torch.float32)
    torch.testing.assert_close(ml.masked_linear_forward(x, weight, mask, bias), bias.expand(3, 4))


def test_input_errors_name_the_tensor():
    x, weight, mask, bias = make_inputs((3,), 8, 4, torch.float32, torch.float32)
    with pytest.raises(ValueError, match="mask shape"):
        ml.masked_linear_forward(x, weight, mask[:, :4], bias)
    with pytest.raises(ValueError, match="last dim"):
        ml.masked_linear_forward(x[:, :5], weight, mask, bias)
    with pytest.raises(ValueError, match="bias"):
        ml.masked_linear_forward(x, weight, mask, bias[:2])
    with pytest.raises(TypeError, match="x must be"):
        ml.masked_linear_forward(x.double(), weight, mask, bias)


def test_configs_are_pruned_for_shared_memory():
    config = triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3)
    tiles = [("BLOCK_M", "BLOCK_K", 2), ("BLOCK_K", "BLOCK_N", 2), ("BLOCK_K", "BLOCK_N", 4),
             ("BLOCK_K", "BLOCK_N", 2, "staged")]
    # 2 pipelined buffers of (16 + 16 + 32) KiB, a double-buffered 16 KiB staged tile, 1 KiB static.
    assert shared_memory_bytes(config, tiles) == 2 * 64 * 1024 + 2 * 16 * 1024 + 1024
    small = triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3)
    assert prune_configs_by_shared_memory([config, small], 100 * 1024, tiles) == [small]
    assert prune_configs_by_shared_memory([config], 1024, tiles) == [config]  # never empty
    assert prune_configs_by_shared_memory([config, small], None, tiles) == [config, small]
    # The launcher's own tiles, for an fp32-activation launch on an sm_80-sized device: the large 16-bit tiles
    # (sized for 2-byte operands) drop out, the first config always stays.
    meta = {"device": "meta"}
    args = ml._fwd_args(torch.empty(4096, 4096, **meta), torch.empty(4096, 4096, **meta),
                        torch.empty(4096, 4096, **meta), None, torch.empty(4096, 4096, dtype=torch.bfloat16, **meta),
                        torch.bfloat16)
    kept = ml._FWD.pruned_configs(166_912, args)
    assert ml.fwd_configs(torch.bfloat16)[0] in kept and len(kept) < len(ml.fwd_configs(torch.bfloat16))
    # The CUDA autotuner's early-prune hook takes the same route (no limit off CUDA: everything stays).
    autotuner = ml._FWD._autotuner(torch.bfloat16)
    assert autotuner.early_config_prune(autotuner.configs, {}, **args) == autotuner.configs


# ------------------------------------------------------------------------------------------------------------
# Full sweep (slow): python -m pytest -m slow tests/test_triton_masked_linear.py
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("x_dtype, w_dtype", DTYPE_COMBOS, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("rows, k, n", list(itertools.product(ODD_SIZES, ODD_SIZES, ODD_SIZES)))
def test_sweep_shapes_by_dtypes(rows, k, n, x_dtype, w_dtype):
    x, weight, mask, bias = make_inputs((rows,), k, n, x_dtype, w_dtype)
    check_against_reference(x, weight, mask, bias)


def _all_configs_by_dtype():
    for dtype in FLOATS:
        compute = torch.float32 if dtype == torch.float32 else torch.bfloat16
        fwd, dx, dm = ml.fwd_configs(compute), ml.bwd_dx_configs(compute), ml.bwd_dmask_configs(compute)
        for i in range(max(len(fwd), len(dx), len(dm))):
            yield pytest.param(dtype, fwd[i % len(fwd)], dx[i % len(dx)], dm[i % len(dm)],
                               id=f"{str(dtype)[6:]}-{i}")


@pytest.mark.slow
@pytest.mark.parametrize("dtype, fwd_config, dx_config, dmask_config", list(_all_configs_by_dtype()))
@pytest.mark.parametrize("x_layout", ["contiguous", "sliced", "transposed_lead"])
def test_sweep_configs_by_dtypes_and_layouts(dtype, fwd_config, dx_config, dmask_config, x_layout):
    x, weight, mask, bias = make_inputs((9, 15), 257, 129, dtype, dtype, x_layout=x_layout)
    check_against_reference(x, weight, mask, bias, fwd_config=fwd_config, dx_config=dx_config,
                            dmask_config=dmask_config)


@pytest.mark.slow
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("x_dtype, w_dtype", DTYPE_COMBOS, ids=lambda d: str(d).removeprefix("torch."))
def test_sweep_autocast(x_dtype, w_dtype, amp_dtype):
    x, weight, mask, bias = make_inputs((7, 5), 33, 19, x_dtype, w_dtype)
    check_against_reference(x, weight, mask, bias, compute_dtype=amp_dtype)
    with torch.autocast(DEVICE, dtype=amp_dtype):
        assert MaskedLinearFunction.apply(x, weight, mask, bias).dtype == amp_dtype


def test_reference_itself_is_the_eager_formula():
    # Guard the oracle: the fp64 reference is F.linear on W⊙m.
    x, weight, mask, bias = make_inputs((3,), 5, 4, torch.float32, torch.float32)
    torch.testing.assert_close(masked_linear_ref(x, weight, mask, bias),
                               F.linear(x.double(), weight.double() * mask.double(), bias.double()))
