"""Fused masked Linear: y = x · (W⊙m)ᵀ + b, its backward, and the autograd Function.

Shapes: x [..., K] (any leading dims, any strides), weight W [N, K], mask m [N, K], bias b [N];
y [..., N]. Rows M = prod(x.shape[:-1]).

    forward   y  = x · (W⊙m)ᵀ + b          _masked_linear_fwd_kernel        grid over (M, N) tiles, loop over K
    backward  dX = dY · (W⊙m)              _masked_linear_bwd_dx_kernel     grid over (M, K) tiles, loop over N
              dm = (dYᵀ · X) ⊙ W           _masked_linear_bwd_dmask_kernel  grid over (N, K) tiles, loop over M
              db = Σ_rows dY               one torch reduction (fp32 accumulate) over dY's leading dims
    W gets no gradient (AWM freezes θ and trains only m).

W⊙m never exists in global memory: the forward and dX kernels load a W tile and an m tile, multiply them in
fp32 registers and round once to the compute dtype right before `tl.dot`; the dmask kernel multiplies its
fp32 accumulator by the W tile in the epilogue.

Numerics (the "torch" backend's convention, awm_fast/ops/torch_autograd.py): the compute dtype is x's dtype,
or torch.get_autocast_dtype(device) under autocast. x, dY and W⊙m tiles are rounded to it in registers (no
cast copies in global memory); accumulation is fp32; y is stored in the compute dtype, dX in x's own dtype
(straight from the fp32 accumulator), dmask in the mask's dtype (fp32), db in the bias dtype. fp32 dots use
TF32 tensor cores as torch.get_float32_matmul_precision() allows (utils.fp32_dot_input_precision).

Strides: x and dY are read through a [B, R, F] strided view of their leading dims (row r of the flattened
[M, F] matrix is (r // R, r % R)), so slices, transposed leading dims (seq-first [T, B, E] views) and
broadcast (stride 0) gradients run without copies. Only leading dims that do not collapse into two strided
dims (e.g. a permuted 4-D activation) are copied once with .contiguous(): a third index level would cost
integer divisions on every row of every tile. W, m and b may have any strides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl
from awm_fast.kernels.aot import ARCHS, AOTCase
from awm_fast.kernels.utils import (
    FLOAT_DTYPES,
    TunedKernel,
    arch_shared_memory_limit,
    config_name,
    dot_in_fp32,
    fp32_dot_input_precision,
    swizzle_tile,
    tl_dtype,
)

# --------------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------------


@triton.jit
def _dot_masked_weight(a, w_ptrs, m_ptrs, w_ok, acc, COMPUTE_DTYPE: tl.constexpr, DOT_IN_FP32: tl.constexpr,
                       INPUT_PRECISION: tl.constexpr):
    """acc + a · (W⊙m) for a [BM, BK] in COMPUTE_DTYPE and a W, m tile [BK, BN] read at w_ptrs / m_ptrs.

    W⊙m is formed on the tile: the product in fp32, one rounding to the compute dtype; never in global memory.
    """
    w = tl.load(w_ptrs, mask=w_ok, other=0.0)
    m = tl.load(m_ptrs, mask=w_ok, other=0.0)
    w_eff = (w.to(tl.float32) * m.to(tl.float32)).to(COMPUTE_DTYPE)
    if DOT_IN_FP32:  # interpreter only (utils.dot_in_fp32): exact upcast of the rounded bf16 tiles
        a = a.to(tl.float32)
        w_eff = w_eff.to(tl.float32)
    return tl.dot(a, w_eff, acc, input_precision=INPUT_PRECISION)


@triton.jit
def _row_offsets(rows, inner_rows, stride_outer, stride_inner, ROWS_3D: tl.constexpr):
    """Element offsets (int64) of flattened rows `rows` of a [B, R, F] strided view ([R, F] when not ROWS_3D)."""
    if ROWS_3D:
        return (rows // inner_rows) * stride_outer + (rows % inner_rows) * stride_inner
    else:
        return rows * stride_inner


@triton.jit
def _masked_linear_fwd_kernel(
    x_ptr, w_ptr, m_ptr, b_ptr, y_ptr,
    M, N, K, x_inner_rows,
    stride_xb, stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_mn, stride_mk,
    stride_bn,
    stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, X_ROWS_3D: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[M, N] = x[M, K] · (W⊙m)[N, K]ᵀ (+ b[N]); one program per BLOCK_M x BLOCK_N tile of y."""
    pid_m, pid_n = swizzle_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    mask_m = offs_m < M
    mask_n = offs_n < N

    x_ptrs = x_ptr + (_row_offsets(offs_m, x_inner_rows, stride_xb, stride_xm, X_ROWS_3D)[:, None]
                      + offs_k[None, :] * stride_xk)
    # W and m are read as [BLOCK_K, BLOCK_N] tiles (the transposed operand of the dot).
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    m_ptrs = m_ptr + offs_k[:, None] * stride_mk + offs_n[None, :] * stride_mn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, tl.cdiv(K, BLOCK_K)):
        mask_k = offs_k < K - k_start * BLOCK_K
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(COMPUTE_DTYPE)
        acc = _dot_masked_weight(x, w_ptrs, m_ptrs, mask_k[:, None] & mask_n[None, :], acc,
                                 COMPUTE_DTYPE, DOT_IN_FP32, INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
        m_ptrs += BLOCK_K * stride_mk

    if HAS_BIAS:
        # The bias is rounded to the compute dtype first, as F.linear on cast operands would see it.
        bias = tl.load(b_ptr + offs_n * stride_bn, mask=mask_n, other=0.0).to(COMPUTE_DTYPE)
        acc += bias.to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _masked_linear_bwd_dx_kernel(
    dy_ptr, w_ptr, m_ptr, dx_ptr,
    M, N, K, dy_inner_rows,
    stride_dyb, stride_dym, stride_dyn,
    stride_wn, stride_wk,
    stride_mn, stride_mk,
    stride_dxm, stride_dxk,
    DY_ROWS_3D: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """dX[M, K] = dY[M, N] · (W⊙m)[N, K]; one program per BLOCK_M x BLOCK_K tile of dX, loop over N."""
    pid_m, pid_k = swizzle_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
    mask_m = offs_m < M
    mask_k = offs_k < K

    dy_ptrs = dy_ptr + (_row_offsets(offs_m, dy_inner_rows, stride_dyb, stride_dym, DY_ROWS_3D)[:, None]
                        + offs_n[None, :] * stride_dyn)
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk
    m_ptrs = m_ptr + offs_n[:, None] * stride_mn + offs_k[None, :] * stride_mk

    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n_start in range(0, tl.cdiv(N, BLOCK_N)):
        mask_n = offs_n < N - n_start * BLOCK_N
        dy = tl.load(dy_ptrs, mask=mask_m[:, None] & mask_n[None, :], other=0.0).to(COMPUTE_DTYPE)
        acc = _dot_masked_weight(dy, w_ptrs, m_ptrs, mask_n[:, None] & mask_k[None, :], acc,
                                 COMPUTE_DTYPE, DOT_IN_FP32, INPUT_PRECISION)
        dy_ptrs += BLOCK_N * stride_dyn
        w_ptrs += BLOCK_N * stride_wn
        m_ptrs += BLOCK_N * stride_mn

    dx_ptrs = dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])


@triton.jit
def _masked_linear_bwd_dmask_kernel(
    dy_ptr, x_ptr, w_ptr, dm_ptr,
    M, N, K, dy_inner_rows, x_inner_rows,
    stride_dyb, stride_dym, stride_dyn,
    stride_xb, stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_dmn, stride_dmk,
    DY_ROWS_3D: tl.constexpr, X_ROWS_3D: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
):
    """dm[N, K] = (dY[M, N]ᵀ · X[M, K]) ⊙ W[N, K]; one program per BLOCK_N x BLOCK_K tile, loop over the M rows."""
    pid_n, pid_k = swizzle_tile(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.cdiv(K, BLOCK_K), GROUP_N)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    rows = tl.arange(0, BLOCK_M).to(tl.int64)
    mask_n = offs_n < N
    mask_k = offs_k < K

    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for m_start in range(0, tl.cdiv(M, BLOCK_M)):
        offs_m = m_start * BLOCK_M + rows
        mask_m = offs_m < M
        # dYᵀ tile [BLOCK_N, BLOCK_M] and X tile [BLOCK_M, BLOCK_K], both rounded to the compute dtype.
        dy_row_off = _row_offsets(offs_m, dy_inner_rows, stride_dyb, stride_dym, DY_ROWS_3D)
        x_row_off = _row_offsets(offs_m, x_inner_rows, stride_xb, stride_xm, X_ROWS_3D)
        dy_t = tl.load(dy_ptr + offs_n[:, None] * stride_dyn + dy_row_off[None, :],
                       mask=mask_n[:, None] & mask_m[None, :], other=0.0).to(COMPUTE_DTYPE)
        x = tl.load(x_ptr + x_row_off[:, None] + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(COMPUTE_DTYPE)
        if DOT_IN_FP32:
            dy_t = dy_t.to(tl.float32)
            x = x.to(tl.float32)
        acc = tl.dot(dy_t, x, acc, input_precision=INPUT_PRECISION)

    # Epilogue: ⊙W in fp32 (W is only read here, once per tile), stored in the mask gradient's dtype.
    w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk,
                mask=mask_n[:, None] & mask_k[None, :], other=0.0)
    acc = acc * w.to(tl.float32)
    dm_ptrs = dm_ptr + offs_n[:, None] * stride_dmn + offs_k[None, :] * stride_dmk
    tl.store(dm_ptrs, acc.to(dm_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_k[None, :])


# --------------------------------------------------------------------------------------------------------------
# Autotune configs: one function per pass
# --------------------------------------------------------------------------------------------------------------


def _configs(names: tuple[str, str, str, str], rows: Sequence[tuple[int, int, int, int, int, int]],
             ) -> list[triton.Config]:
    """Configs from (block_a, block_b, block_reduction, group, num_warps, num_stages) rows."""
    return [triton.Config(dict(zip(names, row[:4], strict=True)), num_warps=row[4], num_stages=row[5]) for row in rows]


# Every 16-bit config below compiles without spills and within shared memory on sm_80 and sm_90 (the AOT
# test checks it). fp32 operands run the dot as TF32 (x3 by default, utils.fp32_dot_input_precision): mma.sync
# then needs the hi/lo split of both operands in registers, so fp32 gets smaller tiles or more warps.
# The first config of each list is what the interpreter runs when no config is pinned.


def fwd_configs(compute_dtype: torch.dtype = torch.bfloat16) -> list[triton.Config]:
    """Forward tiles: BLOCK_M rows x BLOCK_N outputs, BLOCK_K reduction.

    The mask tile is fp32 and W⊙m is formed in registers, so a tile carries the accumulator plus two weight
    operand tiles in registers: 128 x 128 x 64 needs 8 warps (4 spill), 128 x 256 only fits with BLOCK_K 32.
    BLOCK_M 16 / 32 serve small batches (M = 16).
    """
    names = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
    if compute_dtype == torch.float32:
        return _configs(names, [(64, 64, 32, 8, 8, 3), (64, 128, 32, 8, 8, 3), (64, 128, 32, 8, 8, 4),
                                (128, 64, 16, 8, 4, 3), (32, 128, 32, 8, 8, 3), (16, 64, 32, 1, 4, 3)])
    return _configs(names, [(64, 64, 32, 8, 4, 3), (128, 128, 32, 8, 8, 3), (128, 128, 64, 8, 8, 3),
                            (128, 256, 32, 8, 8, 3), (256, 128, 32, 8, 8, 3), (64, 128, 32, 8, 4, 4),
                            (128, 64, 32, 8, 4, 4), (16, 128, 64, 1, 4, 3), (32, 64, 64, 8, 4, 4)])


def bwd_dx_configs(compute_dtype: torch.dtype = torch.bfloat16) -> list[triton.Config]:
    """dX tiles: BLOCK_M rows x BLOCK_K inputs, BLOCK_N reduction; the same register budget as the forward."""
    names = ("BLOCK_M", "BLOCK_K", "BLOCK_N", "GROUP_M")
    if compute_dtype == torch.float32:
        return _configs(names, [(64, 64, 32, 8, 8, 3), (64, 128, 32, 8, 8, 3), (64, 128, 32, 8, 8, 4),
                                (32, 128, 32, 8, 8, 3), (32, 64, 32, 8, 4, 4), (16, 64, 32, 1, 4, 3)])
    return _configs(names, [(64, 64, 32, 8, 4, 3), (128, 128, 32, 8, 8, 3), (128, 128, 64, 8, 8, 3),
                            (128, 256, 32, 8, 8, 3), (64, 128, 32, 8, 4, 4), (128, 64, 32, 8, 4, 4),
                            (16, 128, 64, 1, 4, 3), (32, 64, 64, 8, 4, 4)])


def bwd_dmask_configs(compute_dtype: torch.dtype = torch.bfloat16) -> list[triton.Config]:
    """dmask tiles: BLOCK_N x BLOCK_K of the mask, BLOCK_M rows of reduction.

    The main loop is a plain GEMM over the token rows (no mask multiply), the ⊙W epilogue reads one W tile;
    deep BLOCK_M suits the long reduction. 128 x 128 accumulators need 8 warps (4 spill on sm_90).
    """
    names = ("BLOCK_N", "BLOCK_K", "BLOCK_M", "GROUP_N")
    if compute_dtype == torch.float32:
        return _configs(names, [(64, 64, 32, 8, 8, 3), (64, 128, 32, 8, 8, 3), (128, 64, 32, 8, 8, 3),
                                (64, 128, 32, 8, 8, 4), (64, 64, 32, 8, 4, 4), (32, 64, 64, 8, 4, 3)])
    return _configs(names, [(64, 64, 32, 8, 4, 3), (128, 128, 32, 8, 8, 3), (128, 128, 64, 8, 8, 3),
                            (128, 128, 64, 8, 8, 4), (128, 128, 128, 8, 8, 3), (64, 128, 64, 8, 4, 4),
                            (128, 64, 64, 8, 4, 4), (64, 128, 128, 8, 4, 3)])


def _fwd_operand_tiles(args: Mapping[str, Any]) -> list[tuple]:
    compute_bytes = args["COMPUTE_DTYPE"].primitive_bitwidth // 8
    return [("BLOCK_M", "BLOCK_K", args["x_ptr"].element_size()),
            ("BLOCK_K", "BLOCK_N", args["w_ptr"].element_size()),
            ("BLOCK_K", "BLOCK_N", args["m_ptr"].element_size()),
            ("BLOCK_K", "BLOCK_N", compute_bytes, "staged")]  # W⊙m, formed in registers


def _dx_operand_tiles(args: Mapping[str, Any]) -> list[tuple]:
    compute_bytes = args["COMPUTE_DTYPE"].primitive_bitwidth // 8
    return [("BLOCK_M", "BLOCK_N", args["dy_ptr"].element_size()),
            ("BLOCK_N", "BLOCK_K", args["w_ptr"].element_size()),
            ("BLOCK_N", "BLOCK_K", args["m_ptr"].element_size()),
            ("BLOCK_N", "BLOCK_K", compute_bytes, "staged")]  # W⊙m, formed in registers


def _dmask_operand_tiles(args: Mapping[str, Any]) -> list[tuple]:
    compute_bytes = args["COMPUTE_DTYPE"].primitive_bitwidth // 8
    return [("BLOCK_N", "BLOCK_M", args["dy_ptr"].element_size()),
            ("BLOCK_M", "BLOCK_K", args["x_ptr"].element_size()),
            ("BLOCK_N", "BLOCK_M", compute_bytes, "staged")]  # dYᵀ, a transposed A operand


_FWD = TunedKernel(_masked_linear_fwd_kernel, fwd_configs, key=["M", "N", "K"], operand_tiles=_fwd_operand_tiles)
_BWD_DX = TunedKernel(_masked_linear_bwd_dx_kernel, bwd_dx_configs, key=["M", "N", "K"],
                      operand_tiles=_dx_operand_tiles)
_BWD_DMASK = TunedKernel(_masked_linear_bwd_dmask_kernel, bwd_dmask_configs, key=["M", "N", "K"],
                         operand_tiles=_dmask_operand_tiles)


# --------------------------------------------------------------------------------------------------------------
# Host launchers
# --------------------------------------------------------------------------------------------------------------


def _rows_view(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int, bool]:
    """View t [..., F] as rows of a [B, R, F] strided tensor without copying when its leading dims allow.

    Returns (tensor, R, stride_b, stride_r, rows_3d). Size-1 dims are dropped and adjacent dims merged when
    stride[i] == stride[i+1] * size[i+1]; more than two groups left means one .contiguous() copy (see module
    docstring). rows_3d is False when a single group remains, so the kernels skip the row division.
    """
    groups: list[list[int]] = []  # [size, stride], outermost first
    for size, stride in zip(t.shape[:-1], t.stride()[:-1], strict=True):
        if size == 1:
            continue
        if groups and groups[-1][1] == stride * size:
            groups[-1] = [groups[-1][0] * size, stride]
        else:
            groups.append([size, stride])
    if len(groups) > 2:
        return _rows_view(t.contiguous())
    if len(groups) == 2:
        return t, groups[1][0], groups[0][1], groups[1][1], True
    rows, stride = groups[0] if groups else (1, 0)
    return t, rows, 0, stride, False


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The autocast dtype for x's device when autocast is on, else x's dtype (the torch backend's rule)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.is_floating_point():
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _input_precision(compute_dtype: torch.dtype) -> str:
    return fp32_dot_input_precision() if compute_dtype == torch.float32 else "ieee"


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None) -> None:
    if weight.dim() != 2:
        raise ValueError(f"masked_linear: weight must be 2-D [out_features, in_features], got {tuple(weight.shape)}")
    if mask.shape != weight.shape:
        raise ValueError(f"masked_linear: mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"masked_linear: x's last dim must be in_features={weight.shape[1]}, got {tuple(x.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"masked_linear: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    named = {"x": x, "weight": weight, "mask": mask, "bias": bias}
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"masked_linear: {name} must be float32/bfloat16/float16, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"masked_linear: {name} is on {t.device}, x is on {x.device}")


def _grid(rows: int, cols: int, block_rows: str, block_cols: str):
    def grid(meta: Mapping[str, Any]) -> tuple[int]:
        return (triton.cdiv(rows, meta[block_rows]) * triton.cdiv(cols, meta[block_cols]),)

    return grid


def _fwd_args(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
              y: torch.Tensor, compute_dtype: torch.dtype) -> dict[str, Any]:
    """Kernel arguments of the forward launch (without the config's meta-parameters). y is [M, N]."""
    x_rows, x_inner, stride_xb, stride_xm, x_3d = _rows_view(x)
    n, k = weight.shape
    return dict(
        x_ptr=x_rows, w_ptr=weight, m_ptr=mask, b_ptr=bias if bias is not None else y, y_ptr=y,
        M=y.shape[0], N=n, K=k, x_inner_rows=x_inner,
        stride_xb=stride_xb, stride_xm=stride_xm, stride_xk=x_rows.stride(-1),
        stride_wn=weight.stride(0), stride_wk=weight.stride(1),
        stride_mn=mask.stride(0), stride_mk=mask.stride(1),
        stride_bn=bias.stride(0) if bias is not None else 0,
        stride_ym=y.stride(0), stride_yn=y.stride(1),
        HAS_BIAS=bias is not None, X_ROWS_3D=x_3d,
        COMPUTE_DTYPE=tl_dtype(compute_dtype), DOT_IN_FP32=dot_in_fp32(compute_dtype),
        INPUT_PRECISION=_input_precision(compute_dtype),
    )


def _dx_args(grad_y: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, grad_x: torch.Tensor,
             compute_dtype: torch.dtype) -> dict[str, Any]:
    """Kernel arguments of the dX launch. grad_x is [M, K]."""
    dy_rows, dy_inner, stride_dyb, stride_dym, dy_3d = _rows_view(grad_y)
    n, k = weight.shape
    return dict(
        dy_ptr=dy_rows, w_ptr=weight, m_ptr=mask, dx_ptr=grad_x,
        M=grad_x.shape[0], N=n, K=k, dy_inner_rows=dy_inner,
        stride_dyb=stride_dyb, stride_dym=stride_dym, stride_dyn=dy_rows.stride(-1),
        stride_wn=weight.stride(0), stride_wk=weight.stride(1),
        stride_mn=mask.stride(0), stride_mk=mask.stride(1),
        stride_dxm=grad_x.stride(0), stride_dxk=grad_x.stride(1),
        DY_ROWS_3D=dy_3d,
        COMPUTE_DTYPE=tl_dtype(compute_dtype), DOT_IN_FP32=dot_in_fp32(compute_dtype),
        INPUT_PRECISION=_input_precision(compute_dtype),
    )


def _dmask_args(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, grad_mask: torch.Tensor,
                compute_dtype: torch.dtype) -> dict[str, Any]:
    """Kernel arguments of the dmask launch. grad_mask is [N, K]."""
    dy_rows, dy_inner, stride_dyb, stride_dym, dy_3d = _rows_view(grad_y)
    x_rows, x_inner, stride_xb, stride_xm, x_3d = _rows_view(x)
    n, k = weight.shape
    return dict(
        dy_ptr=dy_rows, x_ptr=x_rows, w_ptr=weight, dm_ptr=grad_mask,
        M=math.prod(x.shape[:-1]), N=n, K=k, dy_inner_rows=dy_inner, x_inner_rows=x_inner,
        stride_dyb=stride_dyb, stride_dym=stride_dym, stride_dyn=dy_rows.stride(-1),
        stride_xb=stride_xb, stride_xm=stride_xm, stride_xk=x_rows.stride(-1),
        stride_wn=weight.stride(0), stride_wk=weight.stride(1),
        stride_dmn=grad_mask.stride(0), stride_dmk=grad_mask.stride(1),
        DY_ROWS_3D=dy_3d, X_ROWS_3D=x_3d,
        COMPUTE_DTYPE=tl_dtype(compute_dtype), DOT_IN_FP32=dot_in_fp32(compute_dtype),
        INPUT_PRECISION=_input_precision(compute_dtype),
    )


def masked_linear_forward(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
                          compute_dtype: torch.dtype | None = None,
                          config: triton.Config | None = None) -> torch.Tensor:
    """y = x · (W⊙m)ᵀ + b.

    x [..., K] fp32/bf16/fp16, any strides; weight [N, K] and mask [N, K] any float dtype; bias [N] or None.
    compute_dtype: dtype of the MMA operands and of y (default: x's dtype). config pins one of fwd_configs().
    Returns y [..., N] in compute_dtype.
    """
    _check_inputs(x, weight, mask, bias)
    compute_dtype = compute_dtype or x.dtype
    n, k = weight.shape
    rows = math.prod(x.shape[:-1])
    y = torch.empty((rows, n), device=x.device, dtype=compute_dtype)
    if rows > 0 and n > 0:
        _FWD.launch(_grid(rows, n, "BLOCK_M", "BLOCK_N"), config=config,
                    **_fwd_args(x, weight, mask, bias, y, compute_dtype))
    return y.view(*x.shape[:-1], n)


def masked_linear_backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                           bias: torch.Tensor | None, needs_grad: Sequence[bool],
                           compute_dtype: torch.dtype | None = None, dx_config: triton.Config | None = None,
                           dmask_config: triton.Config | None = None,
                           ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of y = x · (W⊙m)ᵀ + b with respect to (x, mask, bias).

    grad_y [..., N] (any strides, e.g. expanded); x [..., K] as given to the forward; needs_grad: three bools
    (x, mask, bias). Returns (grad_x [..., K] in x's dtype, grad_mask [N, K] in mask's dtype, grad_bias [N]
    in bias's dtype), None where not needed. dx_config / dmask_config pin one config of each pass.
    """
    _check_inputs(x, weight, mask, bias)
    if grad_y.shape != (*x.shape[:-1], weight.shape[0]):
        raise ValueError(f"masked_linear: grad_y shape {tuple(grad_y.shape)} does not match the output shape")
    compute_dtype = compute_dtype or x.dtype
    need_dx, need_dmask, need_dbias = needs_grad
    n, k = weight.shape
    rows = math.prod(x.shape[:-1])
    grad_x = grad_mask = grad_bias = None
    if need_dx:
        grad_x = torch.empty((rows, k), device=x.device, dtype=x.dtype)
        if rows > 0 and k > 0:
            _BWD_DX.launch(_grid(rows, k, "BLOCK_M", "BLOCK_K"), config=dx_config,
                           **_dx_args(grad_y, weight, mask, grad_x, compute_dtype))
        grad_x = grad_x.view(x.shape)
    if need_dmask:
        grad_mask = torch.empty((n, k), device=x.device, dtype=mask.dtype)
        if n > 0 and k > 0:
            _BWD_DMASK.launch(_grid(n, k, "BLOCK_N", "BLOCK_K"), config=dmask_config,
                              **_dmask_args(grad_y, x, weight, grad_mask, compute_dtype))
    if need_dbias and bias is not None:
        # Σ over every leading dim with an fp32 accumulator; reads dY in place whatever its strides. dY is
        # rounded to the compute dtype first, as the kernels see it.
        dy = grad_y.to(compute_dtype)
        if dy.dim() == 1:  # a single row (x was 1-D); sum(dim=()) would reduce everything
            grad_bias = dy.to(bias.dtype)
        else:
            grad_bias = dy.sum(dim=tuple(range(dy.dim() - 1)), dtype=torch.float32).to(bias.dtype)
    return grad_x, grad_mask, grad_bias


# --------------------------------------------------------------------------------------------------------------
# Autograd Function
# --------------------------------------------------------------------------------------------------------------


class MaskedLinearFunction(torch.autograd.Function):
    """y = x · (W⊙m)ᵀ + b with fused Triton kernels; gradients for x, mask and bias, none for weight.

    Saves (x, W, m) as given: no cast copy of x and no W⊙m; the backward re-forms W⊙m on the tile. Under
    autocast the compute dtype is fixed at forward time, so the backward agrees with the forward whatever
    autocast state it runs under.
    """

    @staticmethod
    def forward(ctx, x, weight, mask, bias):
        compute_dtype = _compute_dtype(x)
        y = masked_linear_forward(x, weight, mask, bias, compute_dtype=compute_dtype)
        ctx.save_for_backward(x, weight, mask, bias)
        ctx.compute_dtype = compute_dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mask, bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x, grad_mask, grad_bias = masked_linear_backward(
            grad_y, x, weight, mask, bias, (needs[0], needs[2], bias is not None and needs[3]),
            compute_dtype=ctx.compute_dtype)
        return grad_x, None, grad_mask, grad_bias


# --------------------------------------------------------------------------------------------------------------
# Ahead-of-time build cases (kernels/aot.py convention)
# --------------------------------------------------------------------------------------------------------------

# (x dtype, weight dtype, compute dtype): bf16 and fp16 end to end, fp32 weights under bf16 autocast, and fp32
# (TF32 tensor cores). The first two are the representative CI subset.
AOT_DTYPES: tuple[tuple[torch.dtype, torch.dtype, torch.dtype], ...] = (
    (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16, torch.float16),
    (torch.float32, torch.float32, torch.bfloat16),
    (torch.float32, torch.float32, torch.float32),
)


def aot_cases(full: bool = True, rows: int = 4096, features: int = 4096,
              archs: Sequence[int] = ARCHS) -> list[AOTCase]:
    """Build cases (kernels/aot.py convention): every kernel x every config x AOT_DTYPES, specialised like a
    launch on contiguous [rows, features] tensors (meta-device tensors stand in for data). A config that the
    shared-memory pruning drops on an arch for a dtype combination is built only for the other arch(es), as
    the autotuner would never launch it there. full=False (CI): every config in bf16, and the first config of
    each pass for the other dtype combinations.
    """
    cases = []
    for index, (x_dtype, w_dtype, compute_dtype) in enumerate(AOT_DTYPES):
        meta = dict(device="meta")
        x = torch.empty(rows, features, dtype=x_dtype, **meta)
        weight = torch.empty(features, features, dtype=w_dtype, **meta)
        mask = torch.empty(features, features, dtype=torch.float32, **meta)
        bias = torch.empty(features, dtype=w_dtype, **meta)
        y = torch.empty(rows, features, dtype=compute_dtype, **meta)
        dx = torch.empty(rows, features, dtype=x_dtype, **meta)
        passes = {
            "fwd": (_FWD, _fwd_args(x, weight, mask, bias, y, compute_dtype)),
            "bwd_dx": (_BWD_DX, _dx_args(y, weight, mask, dx, compute_dtype)),
            "bwd_dmask": (_BWD_DMASK, _dmask_args(y, x, weight, mask, compute_dtype)),
        }
        dtype_label = f"x={_short(x_dtype)} w={_short(w_dtype)} compute={_short(compute_dtype)}"
        for pass_name, (tuned, args) in passes.items():
            args["DOT_IN_FP32"] = False  # real GPUs never take the interpreter workaround
            configs = tuned.configs(compute_dtype)
            kept = {arch: tuned.pruned_configs(arch_shared_memory_limit(arch), args) for arch in archs}
            for config in configs if full or index == 0 else configs[:1]:
                config_archs = tuple(arch for arch in archs if config in kept[arch])
                if not config_archs:
                    continue
                cases.append(AOTCase.from_example(
                    tuned.kernel, {**args, **config.kwargs}, num_warps=config.num_warps,
                    num_stages=config.num_stages, label=f"{pass_name} {config_name(config)} {dtype_label}",
                    archs=config_archs))
    return cases


def _short(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
