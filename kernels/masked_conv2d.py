"""Fused masked Conv2d: y = conv2d(x, W⊙m, b) as implicit GEMMs; W⊙m is formed on the tile, never in memory.

Three kernels, one per pass, each an implicit GEMM in the style of Inductor's conv template (no im2col buffer:
the patch gather is index arithmetic on the load, and zero padding is folded into the load mask):

    pass    kernel                               GEMM rows (M)          cols (N)          reduction (K)
    fwd     _masked_conv2d_fwd_kernel            N·OH·OW output pixels  OC/groups         KH·KW·C/groups
    dX      _masked_conv2d_bwd_dx_kernel         N·H·W input pixels     C/groups          KH·KW·OC/groups
    dmask   _masked_conv2d_bwd_dmask_kernel      OC/groups              C/groups (per tap) N·OH·OW (split)

The reduction of fwd and dX walks (tap, channel block) pairs in one flat loop: the tap's spatial offset is a
per-row vector computed once per step, the channel block a contiguous run (channels_last) or a strided one
(NCHW); one flat loop keeps Triton's software pipeline busy even when C/groups fits one block.

dX is the transposed convolution. With stride s > 1 most taps do not land on a given input pixel; instead
of masking them (which wastes (s²-1)/s² of the MMAs) the input pixels are split into s_h·s_w phases
(ih mod s_h, iw mod s_w), each phase its own GEMM in which a fixed arithmetic progression of taps is valid.

dmask is the weight-gradient GEMM dY^T·patches(X) for one tap (kh, kw) per program, reduced over N·OH·OW;
the ⊙W epilogue turns grad(W⊙m) into grad(m). Small weights with a long reduction split it: partial sums go
to an fp32 workspace [split, *W.shape] that is summed afterwards (deterministic, unlike atomics).

Numerics: every tile is converted to the compute dtype (the activation dtype, or the autocast dtype) right
before tl.dot; W⊙m is formed in fp32 and rounded once; accumulation is fp32; one cast at the store. Outputs are
in the compute dtype, dX in x's dtype, dmask in fp32. fp32 compute uses TF32 tensor cores exactly when PyTorch's
own convolutions do (torch.backends.cudnn.allow_tf32), else 3xTF32 (about fp32 accuracy, still tensor cores).

Offsets: every address into an activation is int64 (program ids and the batch term n·stride_n are widened
before any pointer arithmetic). Terms that stay inside one sample (c·stride_c + h·stride_h + w·stride_w) and
offsets inside weight-sized tensors are int32, which the launchers check (< 2**31 elements spanned): this halves
the registers that the pipelined, per-element gathered tiles hold, and is what keeps the NCHW configs free of
spills (measured with the AOT build: 255 -> 186 registers for the 64x64x32 forward on sm_80). GEMM row/column
indices are int32 as well (N·OH·OW and N·H·W checked < 2**31).

Layouts: x, dY, y and dX may have any strides (NCHW, channels_last, views; no copies). A constexpr per tensor
says which side of a tile is memory-contiguous, so that warp lanes run along it (see _load_tile). The mask
must share W's strides, as masks created like their weights do; otherwise both weight-sized tensors are made
contiguous.

Known limits: depthwise convolutions run through the same GEMM tiles (16-wide at least), so with one channel
per group most of each MMA is padding; correct, but not the dedicated depthwise kernel a MobileNet would want.
1x1 convolutions run here as single-tap GEMMs rather than routing to the linear kernel.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from awm_fast.kernels.utils import FLOAT_DTYPES, TunedKernel, dot_in_fp32, swizzle_tile, tl_dtype

# --------------------------------------------------------------------------------------------------------------
# Host-side helpers
# --------------------------------------------------------------------------------------------------------------

_INT32_LIMIT = 2**31
_MAX_GRID_YZ = 65535  # CUDA's limit on grid dimensions y and z (groups, phases, splits live there)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the convolution runs in: autocast's when it is on for x's device, else x's own.

    Same convention as the torch backend (awm_fast/ops/torch_autograd.py), so both backends agree.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _fp32_conv_input_precision() -> str:
    """tl.dot input precision for fp32 operands, following PyTorch's own convolutions.

    cuDNN convolutions use TF32 by default (torch.backends.cudnn.allow_tf32, i.e. cudnn.conv.fp32_precision
    "tf32"), so the fused kernel does too; when the user turns that off we use "tf32x3" (three TF32 products,
    about fp32 accuracy) rather than "ieee", which would leave the tensor cores idle.
    """
    return "tf32" if torch.backends.cudnn.allow_tf32 else "tf32x3"


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a small "machine", so that tests exercise the split-K path on tiny shapes


def _conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------------------------------------------
# Autotune configs: one function per pass, pruned for shared memory
# --------------------------------------------------------------------------------------------------------------


def _config(block_m: int, block_n: int, block_k: int, num_warps: int, num_stages: int, group_m: int = 8):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": group_m},
                         num_warps=num_warps, num_stages=num_stages)


# Every config below compiles for sm_80 and sm_90 to tensor-core MMA with zero spills and within shared memory,
# for NCHW and channels_last activations (tests/test_triton_aot_conv2d.py). What bounds them is registers, not
# shared memory: NCHW tiles cannot be vectorised along the gathered pixel side, so 16-bit loads are pipelined
# through registers one element at a time, and W and m arrive as two tiles. Measured with the AOT build:
# 64x128x32 with 4 warps and 4 stages spills on sm_90, as do dmask tiles of 128x128 (the ⊙W epilogue holds a W
# tile next to the accumulator) and 128x64 with 4 warps. fp32 operands get their own, smaller lists: with TF32
# disallowed the dot runs as 3xTF32, whose hi/lo operand split on sm_80's mma.sync spills every 16-bit list's
# 128-wide tiles; the fp32 lists build spill-free for both TF32 and 3xTF32.
# The first config of each list is what the interpreter runs when no config is pinned.

_FP32_GEMM_CONFIGS = ((64, 128, 32, 8, 3), (128, 64, 16, 8, 3), (64, 64, 16, 4, 4), (32, 64, 32, 4, 3),
                      (64, 32, 32, 4, 4))


def fwd_configs(compute_dtype: torch.dtype = torch.bfloat16) -> list[triton.Config]:
    """Forward: M = N·OH·OW output pixels (large), N = OC/groups (16..2048), K = KH·KW·C/groups."""
    if compute_dtype == torch.float32:
        return [_config(*row) for row in _FP32_GEMM_CONFIGS]
    return [
        _config(128, 128, 32, 8, 2),
        _config(128, 128, 32, 8, 3),
        _config(128, 64, 32, 4, 3),
        _config(64, 128, 32, 4, 3),
        _config(64, 64, 32, 4, 3),
        _config(128, 32, 32, 4, 3),
        _config(64, 32, 32, 4, 4),
    ]


def dx_configs(compute_dtype: torch.dtype = torch.bfloat16) -> list[triton.Config]:
    """dX: M = N·H·W input pixels (per stride phase), N = C/groups, K = valid taps · OC/groups.

    The same register budget as the forward (a gathered A tile and the W, m tiles), hence the same tiles.
    """
    return fwd_configs(compute_dtype)


def dmask_configs(compute_dtype: torch.dtype = torch.bfloat16) -> list[triton.Config]:
    """dmask: M = OC/groups, N = C/groups (one tap per program), K = N·OH·OW output pixels (long, split)."""
    if compute_dtype == torch.float32:
        return [_config(64, 128, 32, 8, 3), _config(32, 64, 32, 4, 3), _config(64, 32, 32, 4, 3)]
    return [
        _config(64, 128, 32, 8, 3),
        _config(128, 64, 32, 8, 3),
        _config(64, 64, 32, 4, 3),
        _config(64, 64, 32, 4, 4),
        _config(32, 64, 64, 4, 3),
        _config(64, 32, 64, 4, 3),
    ]


def interpreter_config(block: int = 16) -> triton.Config:
    """The smallest legal tile (tl.dot needs every dimension >= 16): many programs on tiny test shapes."""
    return _config(block, block, block, 1, 1, 2)


def _operand_tiles(args) -> list[tuple]:
    """Shared-memory tiles of a launch (utils.shared_memory_bytes): what the pipelined main loop loads, in the
    loaded dtypes, plus W⊙m, formed in registers and read by the MMA through shared memory ("staged")."""
    compute_bytes = args["COMPUTE_DTYPE"].primitive_bitwidth // 8
    if "dmask_ptr" in args:  # A = dY^T [BLOCK_M, BLOCK_K], B = patches of x [BLOCK_K, BLOCK_N]
        return [("BLOCK_M", "BLOCK_K", args["dy_ptr"].element_size()),
                ("BLOCK_K", "BLOCK_N", args["x_ptr"].element_size())]
    a_bytes = args["x_ptr"].element_size() if "x_ptr" in args else args["dy_ptr"].element_size()
    return [("BLOCK_M", "BLOCK_K", a_bytes),
            ("BLOCK_K", "BLOCK_N", args["w_ptr"].element_size()),
            ("BLOCK_K", "BLOCK_N", args["mask_ptr"].element_size()),
            ("BLOCK_K", "BLOCK_N", compute_bytes, "staged")]


# --------------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------------


@triton.jit
def _tile_mma(a, b, acc, COMPUTE_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """acc += a·b with both tiles rounded to COMPUTE_DTYPE first.

    UPCAST_DOT (interpreter only): Triton 3.8's interpreter multiplies bf16 dot operands as raw bits, so the
    bf16-rounded tiles are widened to fp32 (exactly) and multiplied there; the AOT build proves the bf16 MMA.
    """
    a = a.to(COMPUTE_DTYPE)
    b = b.to(COMPUTE_DTYPE)
    if UPCAST_DOT:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif COMPUTE_DTYPE == tl.float32:
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _load_tile(base, row_offs, col_offs, row_ok, col_ok, COLS_CONTIGUOUS: tl.constexpr):
    """tile[r, c] = base[row_offs[r] + col_offs[c]] (0 where masked), shape [len(row_offs), len(col_offs)].

    Warp lanes run along the last dimension of a load. When the rows are the memory-contiguous side (pixels of
    an NCHW tensor) the tile is loaded as [cols, rows] and transposed (free: the operand goes through shared
    memory anyway), so that lanes read consecutive addresses and each thread keeps few rows of index state.
    """
    if COLS_CONTIGUOUS:
        tile = tl.load(base + row_offs[:, None] + col_offs[None, :], mask=row_ok[:, None] & col_ok[None, :],
                       other=0.0)
    else:
        tile = tl.trans(tl.load(base + row_offs[None, :] + col_offs[:, None], mask=row_ok[None, :] & col_ok[:, None],
                                other=0.0))
    return tile


@triton.jit
def _masked_weight_tile(w_ptr, mask_ptr, offs, ok):
    """W⊙m on the tile, in fp32 (rounded once, by the caller's MMA operand cast): W and m share their strides,
    so one offset tensor addresses both. W⊙m never exists in global memory."""
    w_tile = tl.load(w_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    return w_tile * tl.load(mask_ptr + offs, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _store_tile(base, row_offs, col_offs, row_ok, col_ok, tile, COLS_CONTIGUOUS: tl.constexpr):
    """base[row_offs[r] + col_offs[c]] = tile[r, c] where masked in; lanes run along the contiguous side."""
    if COLS_CONTIGUOUS:
        tl.store(base + row_offs[:, None] + col_offs[None, :], tile, mask=row_ok[:, None] & col_ok[None, :])
    else:
        tl.store(base + row_offs[None, :] + col_offs[:, None], tl.trans(tile), mask=row_ok[None, :] & col_ok[:, None])


@triton.jit
def _masked_conv2d_fwd_kernel(
    x_ptr, w_ptr, mask_ptr, bias_ptr, y_ptr,
    batch, in_h, in_w, channels_per_group, out_h, out_w, oc_per_group, kernel_h, kernel_w,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    HAS_BIAS: tl.constexpr, X_CHANNELS_LAST: tl.constexpr, Y_CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[n, g·OCg + o, oh, ow] = b + Σ_{kh, kw, c} x[n, g·Cg + c, oh·s - p + kh·d, ...] · (W⊙m)[g·OCg + o, c, kh, kw].

    mask shares W's strides (the launcher guarantees it). *_CHANNELS_LAST: the tensor's channel stride is the
    smallest (orientation of the loads/stores only; any strides are handled). Grid: (cdiv(N·OH·OW, BLOCK_M) ·
    cdiv(OCg, BLOCK_N), groups).
    """
    group = tl.program_id(1)
    m_total = batch * out_h * out_w
    num_pid_m = tl.cdiv(m_total, BLOCK_M)
    num_pid_n = tl.cdiv(oc_per_group, BLOCK_N)
    pid_m, pid_n = swizzle_tile(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)

    # Rows: output pixels (n, oh, ow). Columns: output channels of this group.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < m_total
    n_ok = offs_n < oc_per_group
    ow = offs_m % out_w
    oh = (offs_m // out_w) % out_h
    nb = (offs_m // (out_w * out_h)).to(tl.int64)
    ih0 = oh * conv_stride_h - pad_h
    iw0 = ow * conv_stride_w - pad_w
    x_base = x_ptr + (group * channels_per_group).to(tl.int64) * stride_xc
    oc = group * oc_per_group + offs_n
    w_cols = oc * stride_wo  # int32: weight-sized tensors have < 2**31 elements (checked by the launcher)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    c_blocks = tl.cdiv(channels_per_group, BLOCK_K)
    for step in range(0, kernel_h * kernel_w * c_blocks):
        tap = step // c_blocks
        offs_k = (step - tap * c_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
        kh = tap // kernel_w
        kw = tap - kh * kernel_w
        ih = ih0 + kh * dil_h
        iw = iw0 + kw * dil_w
        # Zero padding lives here: out-of-image rows load 0 instead of reading a padded copy of x.
        row_ok = m_ok & (ih >= 0) & (ih < in_h) & (iw >= 0) & (iw < in_w)
        k_ok = offs_k < channels_per_group
        x_rows = nb * stride_xn + (ih * stride_xh + iw * stride_xw)
        x_tile = _load_tile(x_base, x_rows, offs_k * stride_xc, row_ok, k_ok, X_CHANNELS_LAST)
        w_offs = (offs_k * stride_wc + kh * stride_wh + kw * stride_ww)[:, None] + w_cols[None, :]
        w_tile = _masked_weight_tile(w_ptr, mask_ptr, w_offs, k_ok[:, None] & n_ok[None, :])
        acc = _tile_mma(x_tile, w_tile, acc, COMPUTE_DTYPE, DOT_PRECISION, UPCAST_DOT)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + oc, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y_rows = nb * stride_yn + (oh * stride_yh + ow * stride_yw)
    _store_tile(y_ptr, y_rows, oc * stride_yc, m_ok, n_ok, acc.to(y_ptr.dtype.element_ty), Y_CHANNELS_LAST)


@triton.jit
def _first_tap(phase, pad, dil, conv_stride, tap_step, kernel):
    """Smallest tap t in [0, tap_step) with t·dil ≡ phase + pad (mod conv_stride); `kernel` if there is none.

    Tap t reaches input row ih = oh·s - pad + t·dil, so for input rows of phase r = ih mod s the valid taps are
    those with (r + pad - t·dil) ≡ 0 (mod s): an arithmetic progression with step s / gcd(s, dil). The test is
    written with -t·dil ≡ t·dil·(s - 1) so that every operand of % is non-negative (C and Python differ on
    negative remainders, and so would the compiled kernel and the interpreter).
    """
    first = kernel
    for t in range(0, tap_step):
        hit = (phase + pad + t * dil * (conv_stride - 1)) % conv_stride == 0
        first = tl.minimum(first, tl.where(hit, t, kernel))
    return first


@triton.jit
def _masked_conv2d_bwd_dx_kernel(
    dy_ptr, w_ptr, mask_ptr, dx_ptr,
    batch, in_h, in_w, channels_per_group, out_h, out_w, oc_per_group, kernel_h, kernel_w,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w, tap_step_h, tap_step_w,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    DY_CHANNELS_LAST: tl.constexpr, DX_CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """dx[n, g·Cg + c, ih, iw] = Σ_{valid kh, kw, o} dy[n, g·OCg + o, oh, ow] · (W⊙m)[g·OCg + o, c, kh, kw],
    oh = (ih + p - kh·d) / s. Every dx element is written (zeros where no tap reaches it).

    Grid: (cdiv(N·ceil(H/s_h)·ceil(W/s_w), BLOCK_M) · cdiv(Cg, BLOCK_N), groups · s_h · s_w); axis 1 is
    (group, phase), phase = (ih mod s_h, iw mod s_w). tap_step_* = s / gcd(s, d). mask shares W's strides.
    """
    num_phases = conv_stride_h * conv_stride_w
    group = tl.program_id(1) // num_phases
    phase = tl.program_id(1) % num_phases
    phase_h = phase // conv_stride_w
    phase_w = phase % conv_stride_w
    # Rows: input pixels (n, th, tw) of this phase, ih = th·s_h + phase_h; sized for the largest phase.
    rows_h = tl.cdiv(in_h, conv_stride_h)
    rows_w = tl.cdiv(in_w, conv_stride_w)
    m_total = batch * rows_h * rows_w
    num_pid_m = tl.cdiv(m_total, BLOCK_M)
    num_pid_n = tl.cdiv(channels_per_group, BLOCK_N)
    pid_m, pid_n = swizzle_tile(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    tw = offs_m % rows_w
    th = (offs_m // rows_w) % rows_h
    nb = (offs_m // (rows_w * rows_h)).to(tl.int64)
    ih = th * conv_stride_h + phase_h
    iw = tw * conv_stride_w + phase_w
    pix_ok = (offs_m < m_total) & (ih < in_h) & (iw < in_w)
    n_ok = offs_n < channels_per_group
    dy_base = dy_ptr + (group * oc_per_group).to(tl.int64) * stride_dyc
    w_cols = group * oc_per_group * stride_wo + offs_n * stride_wc  # int32: weight-sized (checked by the launcher)

    kh_first = _first_tap(phase_h, pad_h, dil_h, conv_stride_h, tap_step_h, kernel_h)
    kw_first = _first_tap(phase_w, pad_w, dil_w, conv_stride_w, tap_step_w, kernel_w)
    taps_h = tl.cdiv(tl.maximum(kernel_h - kh_first, 0), tap_step_h)
    taps_w = tl.cdiv(tl.maximum(kernel_w - kw_first, 0), tap_step_w)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    o_blocks = tl.cdiv(oc_per_group, BLOCK_K)
    for step in range(0, taps_h * taps_w * o_blocks):
        tap = step // o_blocks
        offs_k = (step - tap * o_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
        tap_h = tap // taps_w
        kh = kh_first + tap_h * tap_step_h
        kw = kw_first + (tap - tap_h * taps_w) * tap_step_w
        # oh·s_h = ih + p - kh·d exactly (kh is a valid tap of this phase): shift = (phase + p - kh·d) / s_h.
        # The offset by kernel·d·s keeps the dividend non-negative (floor and truncation then agree).
        shift_h = (phase_h + pad_h - kh * dil_h + kernel_h * dil_h * conv_stride_h) // conv_stride_h \
            - kernel_h * dil_h
        shift_w = (phase_w + pad_w - kw * dil_w + kernel_w * dil_w * conv_stride_w) // conv_stride_w \
            - kernel_w * dil_w
        oh = th + shift_h
        ow = tw + shift_w
        row_ok = pix_ok & (oh >= 0) & (oh < out_h) & (ow >= 0) & (ow < out_w)
        k_ok = offs_k < oc_per_group
        dy_rows = nb * stride_dyn + (oh * stride_dyh + ow * stride_dyw)
        dy_tile = _load_tile(dy_base, dy_rows, offs_k * stride_dyc, row_ok, k_ok, DY_CHANNELS_LAST)
        w_offs = (offs_k * stride_wo + kh * stride_wh + kw * stride_ww)[:, None] + w_cols[None, :]
        w_tile = _masked_weight_tile(w_ptr, mask_ptr, w_offs, k_ok[:, None] & n_ok[None, :])
        acc = _tile_mma(dy_tile, w_tile, acc, COMPUTE_DTYPE, DOT_PRECISION, UPCAST_DOT)

    dx_rows = nb * stride_dxn + (ih * stride_dxh + iw * stride_dxw)
    dx_cols = (group * channels_per_group + offs_n) * stride_dxc
    _store_tile(dx_ptr, dx_rows, dx_cols, pix_ok, n_ok, acc.to(dx_ptr.dtype.element_ty), DX_CHANNELS_LAST)


@triton.jit
def _masked_conv2d_bwd_dmask_kernel(
    dy_ptr, x_ptr, w_ptr, dmask_ptr,
    batch, in_h, in_w, channels_per_group, out_h, out_w, oc_per_group, kernel_h, kernel_w,
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w, pixels_per_split,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_dms, stride_dmo, stride_dmc, stride_dmh, stride_dmw,
    DY_CHANNELS_LAST: tl.constexpr, X_CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """dmask[s, g·OCg + o, c, kh, kw] = W[g·OCg + o, c, kh, kw] · Σ_{pixels q of split s} dy[q, o] · x[q + tap, c].

    Grid: (cdiv(OCg, BLOCK_M) · cdiv(Cg, BLOCK_N) · KH·KW, groups, splits); split s reduces output pixels
    [s·pixels_per_split, (s+1)·pixels_per_split) ∩ [0, N·OH·OW) and writes plane s of dmask (stride_dms).
    """
    num_pid_m = tl.cdiv(oc_per_group, BLOCK_M)
    num_pid_n = tl.cdiv(channels_per_group, BLOCK_N)
    tiles = num_pid_m * num_pid_n
    tap = tl.program_id(0) // tiles
    pid_m, pid_n = swizzle_tile(tl.program_id(0) % tiles, num_pid_m, num_pid_n, GROUP_M)
    group = tl.program_id(1)
    split = tl.program_id(2)
    kh = tap // kernel_w
    kw = tap % kernel_w

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < oc_per_group
    n_ok = offs_n < channels_per_group
    oc = group * oc_per_group + offs_m
    dy_rows = oc * stride_dyc
    x_cols = (group * channels_per_group + offs_n) * stride_xc

    pixels = batch * out_h * out_w
    k_start = split * pixels_per_split
    k_end = tl.minimum(k_start + pixels_per_split, pixels)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        # Reduction index: output pixels q = (n, oh, ow); the tap reads x at (oh·s - p + kh·d, ow·s - p + kw·d).
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < k_end
        ow = offs_k % out_w
        oh = (offs_k // out_w) % out_h
        nb = (offs_k // (out_w * out_h)).to(tl.int64)
        ih = oh * conv_stride_h - pad_h + kh * dil_h
        iw = ow * conv_stride_w - pad_w + kw * dil_w
        dy_cols = nb * stride_dyn + (oh * stride_dyh + ow * stride_dyw)
        # dy^T tile [oc, pixels]: its columns are contiguous exactly when dy is not channels_last.
        dy_tile = _load_tile(dy_ptr, dy_rows, dy_cols, m_ok, k_ok, not DY_CHANNELS_LAST)
        x_ok = k_ok & (ih >= 0) & (ih < in_h) & (iw >= 0) & (iw < in_w)
        x_rows = nb * stride_xn + (ih * stride_xh + iw * stride_xw)
        x_tile = _load_tile(x_ptr, x_rows, x_cols, x_ok, n_ok, X_CHANNELS_LAST)
        acc = _tile_mma(dy_tile, x_tile, acc, COMPUTE_DTYPE, DOT_PRECISION, UPCAST_DOT)

    # Epilogue ⊙W: d(W⊙m)/dm = W, applied to the fp32 partial sum (linear, so per split is exact). Offsets
    # within one weight-sized plane are int32 (< 2**31 elements, checked by the launcher); the plane is int64.
    out_ok = m_ok[:, None] & n_ok[None, :]
    w_tile = tl.load(w_ptr + oc[:, None] * stride_wo + offs_n[None, :] * stride_wc + kh * stride_wh
                     + kw * stride_ww, mask=out_ok, other=0.0)
    dmask_plane = dmask_ptr + split.to(tl.int64) * stride_dms
    tl.store(dmask_plane + oc[:, None] * stride_dmo + offs_n[None, :] * stride_dmc + kh * stride_dmh
             + kw * stride_dmw, acc * w_tile.to(tl.float32), mask=out_ok)


_SHAPE_KEY = ["batch", "in_h", "in_w", "channels_per_group", "out_h", "out_w", "oc_per_group", "kernel_h",
              "kernel_w", "conv_stride_h", "conv_stride_w", "dil_h", "dil_w"]

# The kernels stay plain module-level @triton.jit functions (what the AOT build imports); TunedKernel autotunes
# them on CUDA and runs a pinned config anywhere (tests; the interpreter cannot autotune without a GPU). Keys:
# the shapes plus the layout flags (NCHW and channels_last tune separately); Triton adds the dtypes.
_FWD = TunedKernel(_masked_conv2d_fwd_kernel, fwd_configs, [*_SHAPE_KEY, "X_CHANNELS_LAST", "Y_CHANNELS_LAST"],
                   _operand_tiles)
_DX = TunedKernel(_masked_conv2d_bwd_dx_kernel, dx_configs, [*_SHAPE_KEY, "DY_CHANNELS_LAST", "DX_CHANNELS_LAST"],
                  _operand_tiles)
_DMASK = TunedKernel(_masked_conv2d_bwd_dmask_kernel, dmask_configs,
                     [*_SHAPE_KEY, "pixels_per_split", "DY_CHANNELS_LAST", "X_CHANNELS_LAST"], _operand_tiles)


# --------------------------------------------------------------------------------------------------------------
# Host launchers
# --------------------------------------------------------------------------------------------------------------


def _check_inputs(x, weight, mask, bias, groups) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D [OC, C/groups, KH, KW], got shape {tuple(weight.shape)}")
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal weight shape {tuple(weight.shape)}")
    for name, t in (("x", x), ("weight", weight), ("mask", mask)) + ((("bias", bias),) if bias is not None else ()):
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; supported: {FLOAT_DTYPES}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    oc, c_per_group = weight.shape[:2]
    if groups < 1 or x.shape[1] % groups or oc % groups:
        raise ValueError(f"groups={groups} must divide x's channels ({x.shape[1]}) and weight's ({oc})")
    if x.shape[1] // groups != c_per_group:
        raise ValueError(f"weight has {c_per_group} input channels per group, x has {x.shape[1]} / {groups} groups")
    if bias is not None and bias.shape != (oc,):
        raise ValueError(f"bias shape {tuple(bias.shape)} must be ({oc},)")
    if groups > _MAX_GRID_YZ:
        raise ValueError(f"groups={groups} exceeds the grid's second dimension ({_MAX_GRID_YZ})")


def _check_weight_extent(weight: torch.Tensor) -> None:
    # Offsets inside weight-sized tensors are int32 in the kernels (half the registers of int64 pointers
    # for the pipelined W and m tiles); activations always use int64.
    span = 1 + sum(st * (size - 1) for st, size in zip(weight.stride(), weight.shape, strict=True))
    if max(weight.numel(), span) >= _INT32_LIMIT:
        raise ValueError(f"weight {tuple(weight.shape)} spans >= 2**31 elements; not supported")


def _check_int32_extent(name: str, value: int) -> None:
    if value >= _INT32_LIMIT:
        raise ValueError(f"{name} = {value} exceeds int32 GEMM indexing; split the batch")


def _check_sample_span(name: str, t: torch.Tensor) -> None:
    """Offsets within one sample of an activation are int32 in the kernels (the batch term is int64)."""
    span = 1 + sum(abs(st) * (size - 1) for st, size in zip(t.stride()[1:], t.shape[1:], strict=True))
    if span >= _INT32_LIMIT:
        raise ValueError(f"{name}: one sample spans {span} elements, beyond the kernels' int32 in-sample offsets")


def _channels_fastest(t: torch.Tensor) -> bool:
    """Whether t's channel stride is smaller than its width stride (channels_last-like): decides which side of
    a tile the warp lanes run along, never correctness."""
    return t.stride(1) < t.stride(3)


def _shared_weight_strides(weight: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, mask) with equal strides, so one offset tensor addresses both tiles in the kernels.

    Masks are created like their weights, so this is a no-op in practice; otherwise both weight-sized tensors
    are made contiguous (small next to the activations, and W⊙m is still never formed).
    """
    if weight.stride() != mask.stride():
        weight, mask = weight.contiguous(), mask.contiguous()
    return weight, mask


def _like_memory_format(x: torch.Tensor):
    """channels_last when x is (strictly) channels_last, so y and dx keep x's layout like F.conv2d does."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


_STRIDE_SUFFIXES = {"x": "nchw", "y": "nchw", "dy": "nchw", "dx": "nchw", "w": "ochw", "dm": "sochw"}


def _strides(name: str, t: torch.Tensor) -> dict[str, int]:
    """{stride_<name><dim>: stride} in the kernels' naming, e.g. stride_xn ... stride_xw for x [N, C, H, W]."""
    return {f"stride_{name}{dim}": st for dim, st in zip(_STRIDE_SUFFIXES[name], t.stride(), strict=True)}


def _numerics(compute_dtype: torch.dtype) -> dict:
    """The numerics constexprs shared by the three kernels."""
    if compute_dtype not in FLOAT_DTYPES:
        raise TypeError(f"compute dtype {compute_dtype} unsupported; expected one of {FLOAT_DTYPES}")
    return dict(COMPUTE_DTYPE=tl_dtype(compute_dtype), DOT_PRECISION=_fp32_conv_input_precision(),
                UPCAST_DOT=dot_in_fp32(compute_dtype))


def _split_reduction(pixels: int, weight_numel: int, device: torch.device, split_k: int | None) -> tuple[int, int]:
    """(splits, pixels_per_split) for the dmask reduction over N·OH·OW output pixels.

    Without a split a small weight gives few programs, each walking the whole batch. Split until there are
    about two programs per SM (estimating 64×64 output tiles), keeping >= 1024 pixels per split so that the
    partial planes (weight-sized fp32 each) stay cheap next to the reduction. pixels_per_split is a multiple of
    256, hence of every BLOCK_K, so splits never share a tile.
    """
    if split_k is None:
        tiles = max(1, weight_numel // (64 * 64))
        split_k = min(triton.cdiv(2 * _num_sms(device), tiles), triton.cdiv(pixels, 1024))
    split_k = max(1, min(int(split_k), max(1, pixels), _MAX_GRID_YZ))
    pixels_per_split = triton.cdiv(triton.cdiv(max(pixels, 1), split_k), 256) * 256
    return triton.cdiv(max(pixels, 1), pixels_per_split), pixels_per_split


def _shape_args(x: torch.Tensor, weight: torch.Tensor, out_hw: tuple[int, int], stride, padding, dilation,
                groups: int) -> dict[str, int]:
    batch, _, in_h, in_w = x.shape
    oc, c_per_group, kernel_h, kernel_w = weight.shape
    return dict(
        batch=batch, in_h=in_h, in_w=in_w, channels_per_group=c_per_group, out_h=out_hw[0], out_w=out_hw[1],
        oc_per_group=oc // groups, kernel_h=kernel_h, kernel_w=kernel_w,
        conv_stride_h=stride[0], conv_stride_w=stride[1], pad_h=padding[0], pad_w=padding[1],
        dil_h=dilation[0], dil_w=dilation[1],
    )


def _fwd_args(x, weight, mask, bias, y, stride, padding, dilation, groups, compute_dtype) -> dict:
    """Launch arguments of _masked_conv2d_fwd_kernel (also used, with meta tensors, by aot_cases)."""
    return dict(
        x_ptr=x, w_ptr=weight, mask_ptr=mask, bias_ptr=bias if bias is not None else mask, y_ptr=y,
        **_shape_args(x, weight, y.shape[2:], stride, padding, dilation, groups),
        **_strides("x", x), **_strides("w", weight), **_strides("y", y),
        HAS_BIAS=bias is not None, X_CHANNELS_LAST=_channels_fastest(x), Y_CHANNELS_LAST=_channels_fastest(y),
        **_numerics(compute_dtype),
    )


def _dx_args(grad_y, weight, mask, grad_x, stride, padding, dilation, groups, compute_dtype) -> dict:
    """Launch arguments of _masked_conv2d_bwd_dx_kernel."""
    return dict(
        dy_ptr=grad_y, w_ptr=weight, mask_ptr=mask, dx_ptr=grad_x,
        **_shape_args(grad_x, weight, grad_y.shape[2:], stride, padding, dilation, groups),
        tap_step_h=stride[0] // math.gcd(stride[0], dilation[0]),
        tap_step_w=stride[1] // math.gcd(stride[1], dilation[1]),
        **_strides("dy", grad_y), **_strides("w", weight), **_strides("dx", grad_x),
        DY_CHANNELS_LAST=_channels_fastest(grad_y), DX_CHANNELS_LAST=_channels_fastest(grad_x),
        **_numerics(compute_dtype),
    )


def _dmask_args(grad_y, x, weight, partials, pixels_per_split, stride, padding, dilation, groups,
                compute_dtype) -> dict:
    """Launch arguments of _masked_conv2d_bwd_dmask_kernel; partials is the [splits, *W.shape] fp32 output."""
    return dict(
        dy_ptr=grad_y, x_ptr=x, w_ptr=weight, dmask_ptr=partials,
        **_shape_args(x, weight, grad_y.shape[2:], stride, padding, dilation, groups),
        pixels_per_split=pixels_per_split,
        **_strides("dy", grad_y), **_strides("x", x), **_strides("w", weight), **_strides("dm", partials),
        DY_CHANNELS_LAST=_channels_fastest(grad_y), X_CHANNELS_LAST=_channels_fastest(x),
        **_numerics(compute_dtype),
    )


def _output_hw(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation) -> tuple[int, int]:
    return (_conv_output_size(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0]),
            _conv_output_size(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1]))


def masked_conv2d_forward(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
    stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
    compute_dtype: torch.dtype | None = None, config: triton.Config | None = None,
) -> torch.Tensor:
    """y = conv2d(x, W⊙m, b) in `compute_dtype` (default x's dtype): [N, OC, OH, OW], laid out like x.

    x [N, C, H, W] any strides (NCHW, channels_last, views), fp32/bf16/fp16; weight [OC, C/groups, KH, KW]
    fp32/bf16/fp16; mask like weight (fp32); bias [OC] or None. `config` pins one autotune config.
    """
    _check_inputs(x, weight, mask, bias, groups)
    weight, mask = _shared_weight_strides(weight, mask)
    _check_weight_extent(weight)
    compute_dtype = compute_dtype or x.dtype
    out_h, out_w = _output_hw(x, weight, stride, padding, dilation)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output size {out_h}x{out_w} is empty for input {tuple(x.shape[2:])} and kernel "
                         f"{tuple(weight.shape[2:])} (stride {stride}, padding {padding}, dilation {dilation})")
    batch, oc = x.shape[0], weight.shape[0]
    _check_int32_extent("N·OH·OW", batch * out_h * out_w)
    _check_sample_span("x", x)
    y = torch.empty((batch, oc, out_h, out_w), device=x.device, dtype=compute_dtype,
                    memory_format=_like_memory_format(x))
    if y.numel() == 0:
        return y
    _check_sample_span("y", y)
    args = _fwd_args(x, weight, mask, bias, y, stride, padding, dilation, groups, compute_dtype)

    def grid(meta):
        return (triton.cdiv(batch * out_h * out_w, meta["BLOCK_M"]) * triton.cdiv(oc // groups, meta["BLOCK_N"]),
                groups)

    _FWD.launch(grid, config, **args)
    return y


def masked_conv2d_backward(
    grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
    stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
    needs_grad_x: bool = True, needs_grad_mask: bool = True, has_bias_grad: bool = False,
    compute_dtype: torch.dtype | None = None, dx_config: triton.Config | None = None,
    dmask_config: triton.Config | None = None, split_k: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(grad_x, grad_mask, grad_bias) of y = conv2d(x, W⊙m, b); each None unless asked for.

    grad_y [N, OC, OH, OW] any strides; grad_x [N, C, H, W] in x's dtype and layout; grad_mask like mask in fp32
    (mask's dtype if that differs); grad_bias [OC] fp32. Tiles are rounded to `compute_dtype` (default x's dtype)
    before each MMA. `split_k` overrides the dmask reduction split (default: enough programs for the GPU).
    """
    _check_inputs(x, weight, mask, None, groups)
    weight, mask = _shared_weight_strides(weight, mask)
    _check_weight_extent(weight)
    compute_dtype = compute_dtype or x.dtype
    batch, _, in_h, in_w = x.shape
    oc, c_per_group, kernel_h, kernel_w = weight.shape
    out_h, out_w = _output_hw(x, weight, stride, padding, dilation)
    if tuple(grad_y.shape) != (batch, oc, out_h, out_w):
        raise ValueError(f"grad_y shape {tuple(grad_y.shape)} does not match the forward output "
                         f"{(batch, oc, out_h, out_w)}")
    conv = (stride, padding, dilation, groups)
    _check_sample_span("x", x)
    _check_sample_span("grad_y", grad_y)
    grad_x = grad_mask = grad_bias = None

    if needs_grad_x:
        _check_int32_extent("N·H·W", batch * in_h * in_w)
        if groups * stride[0] * stride[1] > _MAX_GRID_YZ:
            raise ValueError(f"groups x stride phases = {groups * stride[0] * stride[1]} exceeds {_MAX_GRID_YZ}")
        grad_x = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=_like_memory_format(x))
        if grad_x.numel():
            rows = batch * triton.cdiv(in_h, stride[0]) * triton.cdiv(in_w, stride[1])

            def dx_grid(meta):
                return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(c_per_group, meta["BLOCK_N"]),
                        groups * stride[0] * stride[1])

            _DX.launch(dx_grid, dx_config, **_dx_args(grad_y, weight, mask, grad_x, *conv, compute_dtype))

    if needs_grad_mask:
        pixels = batch * out_h * out_w
        _check_int32_extent("N·OH·OW", pixels)
        splits, pixels_per_split = _split_reduction(pixels, weight.numel(), x.device, split_k)
        partials = torch.empty((splits, *weight.shape), device=x.device, dtype=torch.float32)
        if pixels == 0:
            partials.zero_()
        else:
            def dmask_grid(meta):
                return (triton.cdiv(oc // groups, meta["BLOCK_M"]) * triton.cdiv(c_per_group, meta["BLOCK_N"])
                        * kernel_h * kernel_w, groups, splits)

            _DMASK.launch(dmask_grid, dmask_config,
                          **_dmask_args(grad_y, x, weight, partials, pixels_per_split, *conv, compute_dtype))
        # Deterministic reduction of the split partials (a view, no copy, when there is one split).
        grad_mask = (partials[0] if splits == 1 else partials.sum(0)).to(mask.dtype)

    if has_bias_grad:
        grad_bias = grad_y.sum(dim=(0, 2, 3), dtype=torch.float32)
    return grad_x, grad_mask, grad_bias


# --------------------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------------------


class MaskedConv2dFunction(torch.autograd.Function):
    """y = conv2d(x, W⊙m, b) through the fused kernels. Gradients to x, mask and bias; never to W.

    Saves (x, W, m) — not W⊙m and not a cast copy of x: under autocast the tiles are converted on load.
    Semantics match MaskedConv2dTorchFunction: under autocast the compute dtype is the autocast dtype, y is in
    that dtype, grad_x in x's dtype, grad_mask in fp32.
    """

    @staticmethod
    def forward(ctx, x, weight, mask, bias, stride, padding, dilation, groups):
        compute_dtype = _compute_dtype(x)
        y = masked_conv2d_forward(x, weight, mask, bias, tuple(stride), tuple(padding), tuple(dilation), groups,
                                  compute_dtype=compute_dtype)
        ctx.save_for_backward(x, weight, mask)
        ctx.conv_args = (tuple(stride), tuple(padding), tuple(dilation), groups)
        ctx.compute_dtype = compute_dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mask = ctx.saved_tensors
        needs_x, _, needs_mask, needs_bias = ctx.needs_input_grad[:4]
        grad_x, grad_mask, grad_bias = masked_conv2d_backward(
            grad_y, x, weight, mask, *ctx.conv_args, needs_grad_x=needs_x, needs_grad_mask=needs_mask,
            has_bias_grad=ctx.bias_dtype is not None and needs_bias, compute_dtype=ctx.compute_dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.bias_dtype)
        return grad_x, None, grad_mask, grad_bias, None, None, None, None


# --------------------------------------------------------------------------------------------------------------
# Ahead-of-time build cases (tests/test_triton_aot_conv2d.py, benchmarks/triton_build_report.py)
# --------------------------------------------------------------------------------------------------------------

# A ResNet-style 3x3 layer: x [32, 128, 28, 28], W [128, 128, 3, 3], stride 1, padding 1, and the stride-2
# downsampling layer that exercises the phase-split dX. Shapes matter only through the JIT's specialisation
# (which integers are 1 or multiples of 16); the tile code is the same for every shape.
_AOT_GEOMETRIES = {
    "s1": dict(x=(32, 128, 28, 28), w=(128, 128, 3, 3), conv=((1, 1), (1, 1), (1, 1), 1)),
    "s2": dict(x=(32, 128, 56, 56), w=(256, 128, 3, 3), conv=((2, 2), (1, 1), (1, 1), 1)),
}
_AOT_DTYPES = {  # name: (x dtype, weight dtype, compute dtype, fp32 dot precision)
    "bf16": (torch.bfloat16, torch.bfloat16, torch.bfloat16, "tf32"),
    "fp16": (torch.float16, torch.float16, torch.float16, "tf32"),
    "fp32": (torch.float32, torch.float32, torch.float32, "tf32"),  # PyTorch's default for convolutions
    "fp32x3": (torch.float32, torch.float32, torch.float32, "tf32x3"),  # torch.backends.cudnn.allow_tf32 = False
    "bf16_fp32w": (torch.bfloat16, torch.float32, torch.bfloat16, "tf32"),  # autocast with fp32 master weights
}


def _aot_pass_args(kernel_pass: str, dtypes: str, channels_last: bool, geometry: str) -> dict:
    """Launch arguments of one pass on meta tensors (no memory), exactly as the launchers build them."""
    x_dtype, w_dtype, compute_dtype, precision = _AOT_DTYPES[dtypes]
    g = _AOT_GEOMETRIES[geometry]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    meta = dict(device="meta")
    x = torch.empty(g["x"], dtype=x_dtype, **meta).to(memory_format=fmt)
    weight = torch.empty(g["w"], dtype=w_dtype, **meta)
    mask = torch.empty(g["w"], dtype=torch.float32, **meta)
    out_hw = _output_hw(x, weight, *g["conv"][:3])
    y = torch.empty((g["x"][0], g["w"][0], *out_hw), dtype=compute_dtype, **meta).to(memory_format=fmt)
    if kernel_pass == "fwd":
        args = _fwd_args(x, weight, mask, torch.empty(g["w"][0], dtype=w_dtype, **meta), y, *g["conv"],
                         compute_dtype)
    elif kernel_pass == "dx":
        args = _dx_args(y, weight, mask, torch.empty_like(x), *g["conv"], compute_dtype)
    else:
        partials = torch.empty((4, *g["w"]), dtype=torch.float32, **meta)
        args = _dmask_args(y, x, weight, partials, y.shape[0] * y.shape[2] * y.shape[3] // 4, *g["conv"],
                           compute_dtype)
    # Real GPUs never take the interpreter workaround.
    return {**args, "UPCAST_DOT": False, "DOT_PRECISION": precision}


def aot_cases(full: bool = True, archs=None) -> list:
    """AOTCases (kernels/aot.py convention): every kernel x autotune config, specialised like a real launch.

    full=False (CI): every config of every pass for bf16 NCHW (the main mixed-precision path), plus the first
    config of each pass for fp32 (TF32) channels_last and for fp32 weights under bf16 compute (autocast).
    full=True: every config x {bf16, fp16, fp32 (TF32), fp32 (3xTF32), bf16 with fp32 weights} x {NCHW,
    channels_last}, plus the stride-2 geometry in bf16. A config that the shared-memory pruning drops on an
    arch is built only for the others, as the autotuner would never launch it there.
    """
    from awm_fast.kernels.aot import ARCHS, AOTCase
    from awm_fast.kernels.utils import arch_shared_memory_limit, config_name

    archs = tuple(archs or ARCHS)
    variants = [("bf16", False, "s1")]
    if full:
        variants += [(d, cl, "s1") for d in _AOT_DTYPES for cl in (False, True) if (d, cl) != ("bf16", False)]
        variants += [("bf16", False, "s2")]
    cases = []
    for kernel_pass, tuned in (("fwd", _FWD), ("dx", _DX), ("dmask", _DMASK)):
        pass_variants = [(v, tuned.configs(_AOT_DTYPES[v[0]][2])) for v in variants]
        if not full:
            pass_variants += [(("fp32", True, "s1"), tuned.configs(torch.float32)[:1]),
                              (("bf16_fp32w", False, "s1"), tuned.configs(torch.bfloat16)[:1])]
        for (dtypes, channels_last, geometry), configs in pass_variants:
            args = _aot_pass_args(kernel_pass, dtypes, channels_last, geometry)
            kept = {arch: tuned.pruned_configs(arch_shared_memory_limit(arch), args) for arch in archs}
            for config in configs:
                config_archs = tuple(arch for arch in archs if config in kept[arch])
                if not config_archs:
                    continue
                label = (f"{kernel_pass} {config_name(config)} {dtypes} "
                         f"{'channels_last' if channels_last else 'NCHW'} {geometry}")
                cases.append(AOTCase.from_example(tuned.kernel, {**args, **config.kwargs},
                                                  num_warps=config.num_warps, num_stages=config.num_stages,
                                                  label=label, archs=config_archs))
    return cases
