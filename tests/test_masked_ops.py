"""Masked ops: the torch backend against fp64 references and autograd through the reference backend."""

import pytest
import torch
import torch.nn as nn

from awm_fast import MaskedConv2d, MaskedLinear
from awm_fast.ops import masked_conv2d, masked_linear

from references import masked_conv2d_ref, masked_linear_ref

# fp32 GEMMs of K <= 300 terms: relative error ~ K * 2^-24 ≈ 2e-5 in the worst case, far less on average.
FP32_TOL = dict(atol=1e-5, rtol=1e-5)
BACKENDS = ["reference", "torch"]


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lead_shape", [(1,), (7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("has_bias", [True, False])
def test_masked_linear_matches_fp64_reference(backend, lead_shape, has_bias):
    x = torch.randn(*lead_shape, 33)
    weight, mask = torch.randn(17, 33), torch.rand(17, 33)
    bias = torch.randn(17) if has_bias else None
    grad_out = torch.randn(*lead_shape, 17)

    inputs = dict(x=_leaf(x), weight=weight, mask=_leaf(mask), bias=_leaf(bias) if has_bias else None)
    out = masked_linear(**inputs, backend=backend)
    out.backward(grad_out)
    ref_inputs = dict(x=_leaf(x.double()), weight=weight.double(), mask=_leaf(mask.double()),
                      bias=_leaf(bias.double()) if has_bias else None)
    ref = masked_linear_ref(**ref_inputs)
    ref.backward(grad_out.double())

    torch.testing.assert_close(out.double(), ref, **FP32_TOL)
    for name in ("x", "mask") + (("bias",) if has_bias else ()):
        torch.testing.assert_close(inputs[name].grad.double(), ref_inputs[name].grad, **FP32_TOL, msg=name)


CONV_CASES = [
    # (N, C, H, W, OC, K, stride, padding, dilation, groups)
    (1, 3, 7, 7, 5, 3, 1, 1, 1, 1),
    (2, 4, 9, 8, 6, 3, 2, 0, 1, 2),
    (2, 6, 8, 8, 6, 3, 1, 2, 2, 6),   # depthwise, dilated
    (3, 2, 5, 5, 4, 1, 1, 0, 1, 1),   # 1x1
    (1, 4, 11, 7, 8, (3, 2), (2, 1), (1, 0), 1, 4),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_masked_conv2d_matches_fp64_reference(backend, case, channels_last):
    n, c, h, w, oc, k, stride, padding, dilation, groups = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, c, h, w)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight, mask, bias = torch.randn(oc, c // groups, kh, kw), torch.rand(oc, c // groups, kh, kw), torch.randn(oc)
    conv_args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    inputs = dict(x=_leaf(x), weight=weight, mask=_leaf(mask), bias=_leaf(bias))
    out = masked_conv2d(**inputs, **conv_args, backend=backend)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref_inputs = dict(x=_leaf(x.double()), weight=weight.double(), mask=_leaf(mask.double()), bias=_leaf(bias.double()))
    ref = masked_conv2d_ref(**ref_inputs, **conv_args)
    ref.backward(grad_out.double())

    torch.testing.assert_close(out.double(), ref, **FP32_TOL)
    for name in ("x", "mask", "bias"):
        torch.testing.assert_close(inputs[name].grad.double(), ref_inputs[name].grad, **FP32_TOL, msg=name)


def test_torch_backend_gradcheck_linear_fp64():
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.float64)
    mask = torch.rand(4, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, m, b: masked_linear(x, weight, m, b, backend="torch"), (x, mask, bias))


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 1, 1, 1), (2, 0, 1, 2), (1, 2, 2, 4)])
def test_torch_backend_gradcheck_conv2d_fp64(stride, padding, dilation, groups):
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64)
    mask = torch.rand(4, 4 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def op(x, m, b):
        return masked_conv2d(x, weight, m, b, stride, padding, dilation, groups, backend="torch")

    assert torch.autograd.gradcheck(op, (x, mask, bias))


def test_torch_backend_matches_autograd_through_reference_fp64():
    """grad_m = (dYᵀX)⊙W must be exactly what autograd derives through W⊙m."""
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64)
    weight, mask0 = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.rand(5, 4, 3, 3, dtype=torch.float64)
    grads = {}
    for backend in BACKENDS:
        mask = _leaf(mask0)
        masked_conv2d(x, weight, mask, None, 1, 1, backend=backend).square().sum().backward()
        grads[backend] = mask.grad
    torch.testing.assert_close(grads["torch"], grads["reference"], atol=1e-12, rtol=1e-12)


def test_torch_backend_gives_weight_no_gradient_and_honours_needs_input_grad():
    weight = torch.randn(6, 5, requires_grad=True)
    mask = torch.rand(6, 5, requires_grad=True)
    x = torch.randn(4, 5)  # no gradient wanted for x
    masked_linear(x, weight, mask, backend="torch").sum().backward()
    assert weight.grad is None
    assert mask.grad is not None and x.grad is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_backend_under_autocast_keeps_fp32_mask_grad(dtype):
    x = torch.randn(8, 16, requires_grad=True)
    weight, mask = torch.randn(12, 16), torch.rand(12, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        out = masked_linear(x, weight, mask, backend="torch")
        ref = torch.nn.functional.linear(x, weight * mask)
    assert out.dtype == ref.dtype == dtype
    out.float().sum().backward()
    assert mask.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    # bf16 has 8 significant bits: a 16-term dot product of O(1) values is good to ~2^-8 * sqrt(16).
    expected = masked_linear_ref(x.detach(), weight, mask.detach()).float()
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)
    grad_ref = (torch.ones(8, 12).t() @ x.detach()) * weight
    torch.testing.assert_close(mask.grad, grad_ref, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_backend_conv2d_mask_grad_reduces_in_fp32_under_autocast(dtype):
    # The mask gradient sums x · grad_y over every image and pixel: formed from the low-precision operands the
    # forward saw, but reduced in fp32, as for Linear (round 25). Written out: conv2d_weight on the rounded operands
    # in fp64, times W. A reduction in fp16/bf16 misses this by about 2^-11 / 2^-8 of the sum's terms; the fp32 one
    # by about 2^-24.
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 12, 12, generator=generator)
    weight, mask = torch.randn(4, 3, 3, 3, generator=generator), torch.rand(4, 3, 3, 3, generator=generator)
    mask.requires_grad_(True)
    grad_y = torch.randn(16, 4, 12, 12, generator=generator)
    with torch.autocast("cpu", dtype=dtype):
        out = masked_conv2d(x, weight, mask, None, 1, 1, backend="torch")
    out.backward(grad_y.to(out.dtype))
    rounded_x, rounded_grad = x.to(dtype).double(), grad_y.to(dtype).double()
    expected = torch.nn.grad.conv2d_weight(rounded_x, weight.shape, rounded_grad, padding=1) * weight.double()
    assert mask.grad.dtype == torch.float32
    torch.testing.assert_close(mask.grad.double(), expected, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("padding, padding_mode",
                         [("same", "zeros"), (1, "reflect"), (2, "circular"), ("valid", "zeros")])
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_conv2d_module_reproduces_nn_conv2d(padding, padding_mode, backend):
    conv = nn.Conv2d(3, 5, (3, 4), padding=padding, padding_mode=padding_mode, dilation=(1, 2) if padding == "same"
                     else 1)
    masked = MaskedConv2d.from_conv2d(conv, backend=backend)
    x = torch.randn(2, 3, 9, 10)
    torch.testing.assert_close(masked(x), conv(x))
    assert masked.weight is conv.weight and masked.mask.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_modules_constructed_directly(backend):
    linear = MaskedLinear(7, 3, backend=backend)
    conv = MaskedConv2d(2, 4, 3, padding=1, backend=backend)
    assert linear(torch.randn(5, 7)).shape == (5, 3)
    assert conv(torch.randn(1, 2, 6, 6)).shape == (1, 4, 6, 6)
    with torch.no_grad():
        linear.mask.zero_()
    torch.testing.assert_close(linear(torch.randn(5, 7)), linear.bias.expand(5, 3))


def test_mask_shape_and_backend_errors():
    with pytest.raises(ValueError, match="mask shape"):
        masked_linear(torch.randn(2, 3), torch.randn(4, 3), torch.rand(3, 4))
    with pytest.raises(ValueError, match="unknown backend"):
        masked_linear(torch.randn(2, 3), torch.randn(4, 3), torch.rand(4, 3), backend="cuda-magic")
