"""The batched trigger step: apply K triggers to B images, reduce gradients per trigger, ascend, L1-ball projection.

    perturbed = apply_triggers(x, triggers, lo, hi)      # x [B, ...], triggers [K, ...] -> [K, B, ...]
    loss = f(model(perturbed.flatten(0, 1)))             # one forward over all K·B triggered images
    (grad,) = torch.autograd.grad(loss, triggers)        # backward reduces over the batch: grad [K, ...]
    trigger_step(triggers, grad, lr, radius)             # in place: ascent, then L1-ball projection

The ops dispatch to the compiled extension `awm_fast._C` (csrc/: torch.ops.awm_fast.*, CPU and, where it was built
with nvcc, CUDA) when it loads, and otherwise to the pure-PyTorch `reference_*` functions below, with one warning.
The references are also the eager oracle the extension is tested and benchmarked against. Every public function
takes `use_extension=None` (auto) | True (require the extension) | False (force the reference).

Numerics (extension and reference agree): math in fp32 for fp32/bf16/fp16 storage (fp64 for fp64), x + Δ rounded to
the storage dtype before the clamp as in eager; the clamp's backward passes the gradient where lo <= x + Δ <= hi
(torch.clamp's convention). NaN/Inf in an input raises ValueError (check_finite=False skips the check, which on CUDA
costs a host synchronisation per call).
"""

from __future__ import annotations

import importlib
import math
import os
import warnings

import torch

PROJECTIONS = ("exact", "rescale")
ASCENTS = ("plain", "sign")
EXTENSION_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
OPS = ("apply_triggers", "apply_triggers_backward", "trigger_step", "project_l1_ball")


def _load_extension() -> tuple[bool, str | None]:
    """Import awm_fast._C (its static initialisers register torch.ops.awm_fast.*). Returns (loaded, why not)."""
    if os.environ.get("AWM_FAST_NO_EXTENSION", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "disabled by AWM_FAST_NO_EXTENSION"
    try:
        importlib.import_module("awm_fast._C")
    except (ImportError, OSError) as error:  # not built, or built against another torch
        return False, f"{type(error).__name__}: {error}"
    return True, None


def _clamp_passes_at_bounds() -> bool:
    """Whether torch.clamp's backward lets the gradient through where the input sits exactly on a bound.

    The convention changed between torch releases (2.14 blocks it); the extension's backward follows the torch it
    runs against so that it matches eager autograd everywhere.
    """
    with torch.enable_grad():
        probe = torch.tensor([0.0, 1.0], requires_grad=True)
        (grad,) = torch.autograd.grad(probe.clamp(0.0, 1.0).sum(), probe)
    return bool(grad.all())


_EXTENSION_LOADED, _EXTENSION_ERROR = _load_extension()
_warned_fallback = False


def extension_available() -> bool:
    """True when the compiled extension `awm_fast._C` is loaded."""
    return _EXTENSION_LOADED


def extension_has_kernels(device_type: str) -> bool:
    """True when the extension registered kernels for every op on `device_type` ("CPU", "CUDA")."""
    return _EXTENSION_LOADED and all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"awm_fast::{op}", device_type.upper()) for op in OPS
    )


# Device types the extension serves ("meta": its fake kernels), fixed at import so dispatch traces under compile.
_DEVICES_WITH_KERNELS = frozenset(
    ["meta", *(device for device in ("cpu", "cuda") if extension_has_kernels(device))] if _EXTENSION_LOADED else []
)


def _warn_fallback() -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"awm_fast: the compiled extension awm_fast._C is unavailable ({_EXTENSION_ERROR}); the trigger step runs "
            "on the pure-PyTorch fallback. Build it with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )


def _dispatch(use_extension: bool | None, tensor: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether this call runs on the extension (True) or on the reference (False)."""
    if use_extension is False:
        return False
    if not _EXTENSION_LOADED:
        if use_extension:
            raise RuntimeError(f"awm_fast: use_extension=True but awm_fast._C is unavailable ({_EXTENSION_ERROR})")
        _warn_fallback()
        return False
    device_ok = tensor.device.type in _DEVICES_WITH_KERNELS
    if device_ok and dtype in EXTENSION_DTYPES:
        return True
    if use_extension:
        raise RuntimeError(
            f"awm_fast: use_extension=True but awm_fast._C has no {tensor.device.type} kernels for {dtype} "
            f"(CUDA kernels exist only where setup.py found nvcc)"
        )
    return False


def _check_modes(radius: float, ascent: str | None = None, projection: str = "exact") -> None:
    if ascent is not None and ascent not in ASCENTS:
        raise ValueError(f"unknown ascent {ascent!r}; expected one of {ASCENTS}")
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection mode {projection!r}; expected one of {PROJECTIONS}")
    if math.isnan(radius) or radius < 0:
        raise ValueError(f"radius must be >= 0 (inf for no projection), got {radius}")


def _check_finite(op: str, **tensors: torch.Tensor) -> None:
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"awm_fast.{op}: {name} contains NaN or Inf; the trigger step needs finite inputs "
                             "(pass check_finite=False to skip this check)")


# ------------------------------------------------------------------------------------------- pure-PyTorch reference


def reference_apply_triggers(
    x: torch.Tensor, triggers: torch.Tensor, lo: float = 0.0, hi: float = 1.0, *, check_finite: bool = True
) -> torch.Tensor:
    """Eager clamp(x[b] + triggers[k], lo, hi): x [B, ...], triggers [K, ...] -> [K, B, ...]; autograd by torch."""
    if check_finite:
        _check_finite("apply_triggers", x=x, triggers=triggers)
    out = x.unsqueeze(0) + triggers.unsqueeze(1)
    if lo == -math.inf and hi == math.inf:
        return out
    return out.clamp(lo, hi)


def reference_project_l1_ball(
    v: torch.Tensor, radius: float, mode: str = "exact", *, check_finite: bool = True
) -> torch.Tensor:
    """Project each row of v [K, n] onto {u : ‖u‖₁ <= radius} in fp64, sort-based (Duchi et al. 2008); a new tensor.

    mode="rescale": the authors' radial rescaling v · min(1, radius / ‖v‖₁).
    """
    _check_modes(radius, projection=mode)
    if v.dim() != 2:
        raise ValueError(f"project_l1_ball: v must be 2-D [K, n], got shape {tuple(v.shape)}")
    if check_finite:
        _check_finite("project_l1_ball", v=v)
    v64 = v.double()
    norms = v64.abs().sum(dim=1, keepdim=True)
    if mode == "rescale":
        scale = torch.where(norms > radius, radius / norms.clamp_min(1e-300), torch.ones_like(norms))
        return (v64 * scale).to(v.dtype)
    magnitudes, _ = v64.abs().sort(dim=1, descending=True)
    cumsum = magnitudes.cumsum(dim=1)
    ranks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=torch.float64)
    # rho = the largest j with |v|_(j) > (cumsum_j - r) / j; theta = (cumsum_rho - r) / rho.
    support = magnitudes * ranks > (cumsum - radius)
    rho = support.sum(dim=1, keepdim=True).clamp_min(1)
    theta = ((cumsum.gather(1, rho - 1) - radius) / rho).clamp_min(0)
    projected = v64.sign() * (v64.abs() - theta).clamp_min(0)
    inside = norms <= radius
    return torch.where(inside, v64, projected).to(v.dtype)


@torch.no_grad()
def reference_trigger_step(
    triggers: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    radius: float = math.inf,
    ascent: str = "plain",
    projection: str = "exact",
    *,
    check_finite: bool = True,
) -> torch.Tensor:
    """Eager trigger_step (see trigger_step): add_(step, alpha=lr) then reference_project_l1_ball per trigger."""
    _check_modes(radius, ascent, projection)
    if check_finite:
        _check_finite("trigger_step", triggers=triggers, grad=grad)
    step = grad if ascent == "plain" else grad.sign()
    triggers.add_(step.to(triggers.dtype), alpha=lr)
    if not math.isinf(radius):
        flat = triggers.reshape(triggers.shape[0], -1)  # a copy when triggers is strided; written back below
        triggers.copy_(reference_project_l1_ball(flat, radius, projection, check_finite=False).view(triggers.shape))
    return triggers


# ------------------------------------------------------------------------------------------- public ops


def apply_triggers(
    x: torch.Tensor,
    triggers: torch.Tensor,
    lo: float = 0.0,
    hi: float = 1.0,
    *,
    check_finite: bool = True,
    use_extension: bool | None = None,
) -> torch.Tensor:
    """clamp(x[b] + triggers[k], lo, hi) for every pair: x [B, ...], triggers [K, ...] -> [K, B, ...].

    lo=-inf, hi=inf apply no clamp. Differentiable in x and triggers: the gradient of triggers[k] is the sum over
    the batch of the upstream gradient where the clamp let it through (that is the per-trigger reduction of a
    forward over all K·B triggered images); x's is the same summed over the K triggers. At x + Δ exactly on a
    bound the gradient follows torch.clamp's backward in the running torch (2.14: blocked). Inputs of different
    floating dtypes are promoted as eager `x + triggers` would.
    """
    if x.dim() < 1 or triggers.dim() < 1 or x.shape[1:] != triggers.shape[1:]:
        raise ValueError(f"apply_triggers: x [B, ...] and triggers [K, ...] must agree after the first dimension, "
                         f"got {tuple(x.shape)} and {tuple(triggers.shape)}")
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"apply_triggers: the clamp bounds must not be NaN, got lo={lo}, hi={hi}")
    # Same promotion as eager `x + triggers` for tensors of >= 1 dim (promote_types only when needed: it does not
    # trace under torch.compile).
    dtype = x.dtype if x.dtype == triggers.dtype else torch.promote_types(x.dtype, triggers.dtype)
    if not _dispatch(use_extension, x, dtype):
        return reference_apply_triggers(x, triggers, lo, hi, check_finite=check_finite)
    return torch.ops.awm_fast.apply_triggers(x.to(dtype), triggers.to(dtype), lo, hi, check_finite)


def project_l1_ball(
    v: torch.Tensor, radius: float, mode: str = "exact", *, check_finite: bool = True, use_extension: bool | None = None
) -> torch.Tensor:
    """Project each row of v [K, n] onto {u : ‖u‖₁ <= radius}; returns a new tensor (not differentiable).

    mode="exact": the Euclidean projection (Duchi et al. 2008): sign(v)·max(|v| - θ, 0), θ found per row by the
    extension's pivot (Michelot) iteration or the reference's sort. mode="rescale": the authors' radial
    rescaling v · min(1, radius / ‖v‖₁). Rows already inside the ball come back unchanged; radius=inf is a copy.
    """
    radius = float(radius)
    _check_modes(radius, projection=mode)
    if v.dim() != 2:
        raise ValueError(f"project_l1_ball: v must be 2-D [K, n], got shape {tuple(v.shape)}")
    if not _dispatch(use_extension, v, v.dtype):
        return reference_project_l1_ball(v, radius, mode, check_finite=check_finite)
    return torch.ops.awm_fast.project_l1_ball(v, radius, mode, check_finite)


@torch.no_grad()
def trigger_step(
    triggers: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    radius: float = math.inf,
    ascent: str = "plain",
    projection: str = "exact",
    *,
    check_finite: bool = True,
    use_extension: bool | None = None,
) -> torch.Tensor:
    """In place: triggers += lr · ascent(grad), then project each trigger onto the L1 ball of `radius`.

    triggers, grad [K, ...]; `grad` is the gradient of the loss to MAXIMISE. ascent="plain" steps along
    grad (SGD on the negated loss, one fused multiply-add like eager `add_(grad, alpha=lr)`); "sign" along
    sign(grad). radius=inf skips the projection; projection="exact" | "rescale" as in project_l1_ball.
    Returns `triggers`.
    """
    lr, radius = float(lr), float(radius)
    _check_modes(radius, ascent, projection)
    if grad.shape != triggers.shape:
        raise ValueError(f"trigger_step: triggers and grad must have the same shape, got {tuple(triggers.shape)} "
                         f"and {tuple(grad.shape)}")
    if not math.isfinite(lr):
        raise ValueError(f"trigger_step: lr must be finite, got {lr}")
    if triggers.dim() < 1 or not _dispatch(use_extension, triggers, triggers.dtype):
        return reference_trigger_step(triggers, grad, lr, radius, ascent, projection, check_finite=check_finite)
    # The op updates a contiguous tensor in place; a strided `triggers` (small: K·n) goes through a copy.
    target = triggers if triggers.is_contiguous() else triggers.contiguous()
    torch.ops.awm_fast.trigger_step(target, grad.to(target.dtype), lr, radius, ascent, projection, check_finite)
    if target is not triggers:
        triggers.copy_(target)
    elif not torch.compiler.is_compiling():
        # Like any in-place op, invalidate graphs that saved the old values (the custom op does not bump it).
        torch.autograd.graph.increment_version(triggers)
    return triggers


# ------------------------------------------------------------------------------------------- registrations


def _register_extension_python_side() -> None:
    """Fake (meta) kernels so torch.compile / FakeTensor can trace the ops, and apply_triggers' autograd."""

    @torch.library.register_fake("awm_fast::apply_triggers")
    def _apply_triggers_fake(x, triggers, lo, hi, check_finite=True):
        return x.new_empty((triggers.shape[0], *x.shape))

    @torch.library.register_fake("awm_fast::apply_triggers_backward")
    def _apply_triggers_backward_fake(grad_out, x, triggers, lo, hi, need_x, need_triggers, pass_at_bounds):
        grad_x = torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty((0,))
        grad_triggers = (
            torch.empty_like(triggers, memory_format=torch.contiguous_format) if need_triggers
            else triggers.new_empty((0,))
        )
        return grad_x, grad_triggers

    @torch.library.register_fake("awm_fast::trigger_step")
    def _trigger_step_fake(triggers, grad, lr, radius, ascent, projection, check_finite=True):
        return None

    @torch.library.register_fake("awm_fast::project_l1_ball")
    def _project_l1_ball_fake(v, radius, mode, check_finite=True):
        return torch.empty_like(v, memory_format=torch.contiguous_format)

    pass_at_bounds = _clamp_passes_at_bounds()

    def setup_context(ctx, inputs, output):
        x, triggers, lo, hi, _check = inputs
        ctx.save_for_backward(x, triggers)
        ctx.bounds = (lo, hi)

    def backward(ctx, grad_out):
        x, triggers = ctx.saved_tensors
        need_x, need_triggers = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_triggers = torch.ops.awm_fast.apply_triggers_backward(
            grad_out, x, triggers, *ctx.bounds, need_x, need_triggers, pass_at_bounds
        )
        return (grad_x if need_x else None), (grad_triggers if need_triggers else None), None, None, None

    torch.library.register_autograd("awm_fast::apply_triggers", backward, setup_context=setup_context)


if _EXTENSION_LOADED:
    _register_extension_python_side()
