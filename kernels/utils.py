"""Helpers shared by the Triton ops (masked_linear, masked_conv2d).

- interpreter_active(): whether @triton.jit kernels run under the Triton interpreter (TRITON_INTERPRET=1).
- TORCH_TO_TL / tl_dtype(): torch dtype -> Triton dtype, for dtype constexprs.
- dot_in_fp32(): the interpreter workaround for bf16 `tl.dot` (see below).
- fp32_dot_input_precision(): how fp32 dots use tensor cores, following torch's float32 matmul precision.
- shared_memory_bytes() / prune_configs_by_shared_memory(): drop configs whose tiles do not fit shared memory.
- swizzle_tile(): grouped launch order (a @triton.jit helper), as in Triton's matmul tutorial.
- TunedKernel: a plain @triton.jit kernel plus its one config function. It autotunes on CUDA; anywhere
  (and always under the interpreter, where @triton.autotune cannot run without a GPU) a config can be pinned.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl
from awm_fast.kernels.aot import SHARED_MEMORY_LIMIT

TORCH_TO_TL: dict[torch.dtype, tl.dtype] = {
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float64: tl.float64,
    torch.int32: tl.int32,
    torch.int64: tl.int64,
}

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreter_active() -> bool:
    """True when @triton.jit returns interpreter wrappers (TRITON_INTERPRET=1 when the kernels were defined)."""
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # older Triton without knobs
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


def tl_dtype(dtype: torch.dtype) -> tl.dtype:
    try:
        return TORCH_TO_TL[dtype]
    except KeyError:
        raise TypeError(f"no Triton dtype for {dtype}") from None


def dot_in_fp32(compute_dtype: torch.dtype) -> bool:
    """Whether kernels must upcast their (already rounded) bf16 tiles to fp32 right before `tl.dot`.

    Triton 3.8's interpreter multiplies the raw uint16 bit patterns of bf16 `tl.dot` operands
    (triton-lang/triton#11584), while fp16 and fp32 dots are exact. bf16 x bf16 products are exact in fp32,
    so upcasting after the bf16 rounding changes nothing but the accumulation order: loads, the rounding to
    bf16 and the epilogue still run in bf16. Never on real GPUs: the AOT build proves the bf16 MMA path.
    """
    return interpreter_active() and compute_dtype == torch.bfloat16


def fp32_dot_input_precision() -> str:
    """`tl.dot` input_precision for fp32 operands, following torch.get_float32_matmul_precision().

    "highest" (torch's default) -> "tf32x3": three TF32 tensor-core products per term, about fp32 accuracy,
    still on tensor cores. "high" / "medium" -> "tf32", what cuBLAS does when TF32 is allowed.
    """
    return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def shared_memory_limit(device: torch.device) -> int | None:
    """Bytes of shared memory a block may use on `device` (None for CPU / the interpreter)."""
    if device.type != "cuda" or interpreter_active():
        return None
    props = triton.runtime.driver.active.utils.get_device_properties(device.index or 0)
    return int(props["max_shared_mem"])


def arch_shared_memory_limit(arch: int) -> int:
    """Shared-memory limit of an ahead-of-time target (SHARED_MEMORY_LIMIT, sm_80 for unknown arches)."""
    return SHARED_MEMORY_LIMIT.get(arch, SHARED_MEMORY_LIMIT[80])


def shared_memory_bytes(config: triton.Config, operand_tiles: Sequence[tuple]) -> int:
    """Estimate of the shared memory one block of `config` uses, in bytes.

    operand_tiles: (rows meta-parameter, cols meta-parameter, bytes per element[, kind]) per tile, e.g.
    ("BLOCK_M", "BLOCK_K", 2). kind "pipelined" (the default): a tile the main loop loads; Triton's software
    pipeline keeps num_stages - 1 buffers of it in shared memory. kind "staged": a tile formed in registers
    that the dot still reads through shared memory (sm_90's wgmma takes its B operand, and a transposed A
    operand, from shared memory); double-buffered. Plus 1 KiB of static shared memory (barriers).
    A pre-filter, not an exact figure: it lands within about ±35% of the AOT builds (exact for many sm_90
    wgmma configs, above sm_80's, where mma.sync needs no staging); Triton's autotuner additionally skips any
    config that fails with OutOfResources, and tests/test_triton_aot.py checks every kept config fits.
    """
    pipelined = staged = 0
    for rows, cols, nbytes, *kind in operand_tiles:
        tile = config.kwargs[rows] * config.kwargs[cols] * nbytes
        if kind and kind[0] == "staged":
            staged += tile
        else:
            pipelined += tile
    return max(1, config.num_stages - 1) * pipelined + 2 * staged + 1024


def prune_configs_by_shared_memory(configs: Sequence[triton.Config], limit: int | None,
                                   operand_tiles: Sequence[tuple]) -> list[triton.Config]:
    """Configs whose shared_memory_bytes(config, operand_tiles) fits `limit` bytes.

    limit None (CPU, interpreter) keeps everything. Never returns an empty list: if nothing fits, the config
    with the smallest footprint is kept.
    """
    configs = list(configs)
    if limit is None or not configs:
        return configs
    kept = [c for c in configs if shared_memory_bytes(c, operand_tiles) <= limit]
    return kept or [min(configs, key=lambda c: shared_memory_bytes(c, operand_tiles))]


@triton.jit
def swizzle_tile(pid, num_pid_a, num_pid_b, GROUP_A: tl.constexpr):
    """Map a 1-D program id to (pid_a, pid_b) in groups of GROUP_A rows (L2 reuse of the b-operand tiles).

    Consecutive programs walk GROUP_A tiles down dimension a before moving along b, so a group of programs
    running together shares the same few tiles of both operands.
    """
    num_pid_in_group = GROUP_A * num_pid_b
    group_id = pid // num_pid_in_group
    first_pid_a = group_id * GROUP_A
    group_size_a = tl.minimum(num_pid_a - first_pid_a, GROUP_A)
    pid_in_group = pid % num_pid_in_group
    pid_a = first_pid_a + pid_in_group % group_size_a
    pid_b = pid_in_group // group_size_a
    return pid_a, pid_b


def config_name(config: triton.Config) -> str:
    """Short stable name of a config, e.g. "M64_N128_K32_G8_w4_s3" (meta-parameters in their given order)."""
    parts = [f"{k.removeprefix('BLOCK_').removeprefix('GROUP_')}{v}" if k.startswith("BLOCK_")
             else f"G{v}" if k.startswith("GROUP_") else f"{k}{v}" for k, v in config.kwargs.items()]
    return "_".join(parts + [f"w{config.num_warps}", f"s{config.num_stages}"])


_TL_TO_TORCH = {str(v): k for k, v in TORCH_TO_TL.items()}


class TunedKernel:
    """A plain @triton.jit kernel with its one autotune-config function.

    kernel          the @triton.jit kernel (launchable as kernel[grid](...) under the interpreter, too).
    configs         configs() -> the pass's candidate triton.Config list; or configs(compute_dtype) when the
                    candidates depend on the MMA operand dtype (fp32 runs TF32 paths that need smaller tiles).
                    compute_dtype is read from the launch's COMPUTE_DTYPE constexpr argument.
    key             argument names the autotuner keys on (the shape arguments; Triton adds the dtypes).
    operand_tiles   operand_tiles(args) -> tiles for shared_memory_bytes(); args are the launch arguments.

    launch(grid, config=None, **args):
      config given  -> run exactly that config (the tests pin every config in turn).
      interpreter   -> the first config (autotuning needs a GPU to time configs).
      CUDA          -> @triton.autotune over the configs that fit the device's shared memory.
    """

    def __init__(self, kernel: Any, configs: Callable[..., list[triton.Config]], key: Sequence[str],
                 operand_tiles: Callable[[Mapping[str, Any]], Sequence[tuple]]):
        self.kernel = kernel
        self._config_fn = configs
        self._configs_take_dtype = len(inspect.signature(configs).parameters) > 0
        self.key = list(key)
        self.operand_tiles = operand_tiles
        self._autotuners: dict[Any, Any] = {}

    def configs(self, compute_dtype: torch.dtype | None = None) -> list[triton.Config]:
        """The candidate configs (for `compute_dtype` when the config function distinguishes dtypes)."""
        if self._configs_take_dtype and compute_dtype is not None:
            return self._config_fn(compute_dtype)
        return self._config_fn()

    def pruned_configs(self, limit: int | None, args: Mapping[str, Any]) -> list[triton.Config]:
        """The configs a launch with `args` would consider on a device with `limit` bytes of shared memory."""
        return prune_configs_by_shared_memory(self.configs(_compute_dtype_arg(args)), limit,
                                              self.operand_tiles(args))

    def _autotuner(self, compute_dtype: torch.dtype | None) -> Any:
        if compute_dtype not in self._autotuners:
            def prune(configs, named_args, **kwargs):
                args = {**named_args, **kwargs}
                device = next(v.device for v in args.values() if isinstance(v, torch.Tensor))
                return prune_configs_by_shared_memory(configs, shared_memory_limit(device), self.operand_tiles(args))

            self._autotuners[compute_dtype] = triton.autotune(
                configs=self.configs(compute_dtype), key=self.key,
                prune_configs_by={"early_config_prune": prune})(self.kernel)
        return self._autotuners[compute_dtype]

    def launch(self, grid: Callable[[Mapping[str, Any]], tuple[int, ...]], config: triton.Config | None = None,
               **args: Any) -> None:
        compute_dtype = _compute_dtype_arg(args)
        if config is None and interpreter_active():
            config = self.configs(compute_dtype)[0]
        if config is not None:
            self.kernel[grid](**args, **config.all_kwargs())
        else:
            key = compute_dtype if self._configs_take_dtype else None
            self._autotuner(key)[grid](**args)


def _compute_dtype_arg(args: Mapping[str, Any]) -> torch.dtype | None:
    """torch dtype of a launch's COMPUTE_DTYPE constexpr (None when the kernel has none)."""
    value = args.get("COMPUTE_DTYPE")
    return None if value is None else _TL_TO_TORCH.get(str(value))
