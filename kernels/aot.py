"""Ahead-of-time compilation of Triton kernels for real GPU targets, on a machine without a GPU.

`triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))` runs the
whole pipeline (TTIR -> TTGIR -> LLIR -> PTX -> cubin via the bundled ptxas) without a driver. The cubin is
then read with the bundled `cuobjdump`: `--dump-resource-usage` gives REG / STACK / LOCAL / SHARED, and the
SASS gives the local-memory traffic (STL / LDL) that register spills produce. The PTX tells which
tensor-core instruction the dot lowered to (`mma.sync` on sm_80, `wgmma.mma_async` on sm_90).

Public API (stable; both op modules and benchmarks/triton_build_report.py use it):

    ARCHS                      (80, 90)
    SHARED_MEMORY_LIMIT        {arch: bytes a block may use (opt-in maximum)}
    AOTCase                    one kernel specialisation to build (kernel, signature, constexprs, ...)
    AOTCase.from_example(kernel, args, num_warps=, num_stages=, label=, archs=)
                               specialise from example argument values the way the JIT does at launch
    BuildInfo                  what one build produced (registers, spills, shared memory, MMA kind, ...)
    compile_kernel(kernel, signature, constexprs, arch, ...) -> BuildInfo
    compile_cases(cases, archs=ARCHS, jobs=None) -> list[BuildInfo]   (case-major, then arch; jobs defaults
                               to env AWM_AOT_JOBS, else 1 worker)

Convention for op modules (kernels/masked_linear.py, kernels/masked_conv2d.py): each exposes

    def aot_cases(full: bool = True) -> list[AOTCase]

one case per kernel x autotune config x representative dtype combination, specialised like a real launch
(contiguous tensors of a large, 16-divisible shape). `full=False` returns a representative subset for CI
(every kernel, each arch's MMA path, the largest tiles). benchmarks/triton_build_report.py and the AOT tests
call `compile_cases(module.aot_cases())` and check every BuildInfo.ok.

Under TRITON_INTERPRET=1 (the test suite), `@triton.jit` returns interpreter wrappers that cannot be
compiled, and the setting is read when a kernel is decorated. So when a case's kernel is not a real
`triton.runtime.JITFunction`, the builds run in one child process started without TRITON_INTERPRET: it
imports the kernel's module afresh (same `sys.path`, or the module's file) and compiles there. Rebuilding a
JITFunction from the wrapper's `.fn` in-process is not enough: helper `@triton.jit` functions the kernel
calls are still interpreter wrappers in its globals, and the interpreter patches `triton.language` while it
runs. Kernels compiled for the report must therefore be importable module-level names.

This file imports nothing from awm_fast, so the child can run it by path: `python aot.py --worker IN OUT`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

ARCHS: tuple[int, ...] = (80, 90)

# Largest shared memory one block may use (the opt-in maximum, cudaDevAttrMaxSharedMemoryPerBlockOptin):
# A100 (sm_80) 163 KiB, H100 (sm_90) 227 KiB. Triton checks its `shared` metadata against the same numbers.
SHARED_MEMORY_LIMIT: dict[int, int] = {80: 166_912, 90: 232_448}

# Registers per thread the hardware allows; more means the launch fails (ptxas caps at this and spills).
MAX_REGISTERS_PER_THREAD = 255

_MMA_PATTERN = re.compile(r"\b(wgmma\.mma_async\.[\w.]+|mma\.sync\.aligned\.[\w.]+)")
_RESOURCE_PATTERN = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")
_SPILL_SASS_PATTERN = re.compile(r"\b(STL|LDL)(\.[\w.]+)?\b")


@dataclasses.dataclass(frozen=True)
class AOTCase:
    """One kernel specialisation to build.

    kernel         the @triton.jit kernel (a JITFunction, or the interpreter's wrapper under TRITON_INTERPRET=1).
    signature      every argument that stays a runtime argument -> Triton type: "*bf16", "*fp32", "i32", "i64".
    constexprs     every tl.constexpr parameter -> value, plus integer arguments the JIT folds to constants
                   (a launch with value 1, e.g. a unit stride, compiles with that argument as constexpr 1).
    divisible_by_16  runtime arguments the JIT marks `tt.divisibility = 16` (16-byte-aligned pointers, sizes
                   and strides that are multiples of 16): what enables vectorised and async copies.
    num_warps, num_stages  the launch options of the autotune config.
    label          free text carried into BuildInfo (config, dtypes, pass).
    archs          build only for these arches (None: every arch compile_cases is asked for), e.g. when the
                   op's shared-memory pruning drops this config on a smaller target.
    """

    kernel: Any
    signature: Mapping[str, str]
    constexprs: Mapping[str, Any]
    divisible_by_16: tuple[str, ...] = ()
    num_warps: int = 4
    num_stages: int = 3
    label: str = ""
    archs: tuple[int, ...] | None = None

    @classmethod
    def from_example(cls, kernel: Any, args: Mapping[str, Any], *, num_warps: int = 4, num_stages: int = 3,
                     label: str = "", archs: Sequence[int] | None = None) -> AOTCase:
        """Specialise `kernel` for example argument values, as the JIT would at launch.

        `args` maps every parameter name to: a pointer type string ("*bf16"), a torch dtype or a tensor (a
        16-byte aligned pointer to that dtype; meta-device tensors are fine); a Python int (1 -> constexpr,
        else i32/i64, divisible if a multiple of 16); a float ("fp32"); or, for tl.constexpr parameters, the
        constexpr value.
        """
        names = kernel_arg_names(kernel)
        missing = [n for n in names if n not in args]
        extra = [n for n in args if n not in names]
        if missing or extra:
            raise ValueError(f"{kernel_name(kernel)}: missing arguments {missing}, unknown arguments {extra}")
        constexpr_names = kernel_constexpr_names(kernel)
        signature: dict[str, str] = {}
        constexprs: dict[str, Any] = {}
        divisible: list[str] = []
        for name in names:
            value = args[name]
            if name in constexpr_names:
                constexprs[name] = value
            elif isinstance(value, str):
                signature[name] = value
                if value.startswith("*"):
                    divisible.append(name)
            elif _is_torch_dtype(value):
                signature[name] = "*" + _torch_dtype_to_triton(value)
                divisible.append(name)
            elif hasattr(value, "data_ptr") and hasattr(value, "dtype"):  # a tensor (e.g. on the meta device)
                signature[name] = "*" + _torch_dtype_to_triton(value.dtype)
                divisible.append(name)
            elif isinstance(value, bool):
                signature[name] = "i1"
            elif isinstance(value, int):
                if value == 1:
                    constexprs[name] = 1
                    continue
                signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
                if value % 16 == 0:
                    divisible.append(name)
            elif isinstance(value, float):
                signature[name] = "fp32"
            else:
                raise TypeError(f"{kernel_name(kernel)}: cannot specialise argument {name}={value!r}")
        return cls(kernel, signature, constexprs, tuple(divisible), num_warps, num_stages, label,
                   None if archs is None else tuple(archs))


@dataclasses.dataclass(frozen=True)
class BuildInfo:
    """Resources of one compiled kernel for one target.

    registers          registers per thread (cuobjdump REG).
    spill_bytes        per-thread stack + local memory (cuobjdump STACK + LOCAL); non-zero means spills.
    spill_instructions local-memory stores/loads in the SASS (STL/LDL), the spill traffic itself.
    shared_bytes       Triton's dynamic shared memory plus the cubin's static shared memory, per block.
    shared_limit       SHARED_MEMORY_LIMIT[arch].
    mma_kind           "wgmma" | "mma" | None: the tensor-core instruction family in the PTX.
    mma_instructions   the distinct MMA instructions (shape and operand types), e.g.
                       "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16".
    """

    kernel: str
    label: str
    arch: int
    num_warps: int
    num_stages: int
    registers: int
    spill_bytes: int
    spill_instructions: int
    shared_bytes: int
    shared_limit: int
    mma_kind: str | None
    mma_instructions: tuple[str, ...]
    compile_seconds: float

    @property
    def spills(self) -> bool:
        return self.spill_bytes > 0 or self.spill_instructions > 0

    @property
    def fits_shared(self) -> bool:
        return self.shared_bytes <= self.shared_limit

    @property
    def ok(self) -> bool:
        """Compiles to tensor-core MMA, spills nothing, fits the target's shared memory and register file."""
        return (self.mma_kind is not None and not self.spills and self.fits_shared
                and self.registers <= MAX_REGISTERS_PER_THREAD)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildInfo:
        data = dict(data)
        data["mma_instructions"] = tuple(data["mma_instructions"])
        return cls(**data)


# --------------------------------------------------------------------------------------------------------------
# Kernel introspection (works for JITFunction and the interpreter's wrapper)
# --------------------------------------------------------------------------------------------------------------


def _python_fn(kernel: Any):
    """The undecorated Python function behind a @triton.jit kernel (or an autotuner around one)."""
    fn = kernel
    while hasattr(fn, "fn"):
        fn = fn.fn
    return fn


def kernel_name(kernel: Any) -> str:
    return _python_fn(kernel).__name__


def kernel_arg_names(kernel: Any) -> list[str]:
    return list(inspect.signature(_python_fn(kernel)).parameters)


def kernel_constexpr_names(kernel: Any) -> set[str]:
    params = inspect.signature(_python_fn(kernel)).parameters
    return {name for name, p in params.items() if "constexpr" in str(p.annotation)}


def _is_torch_dtype(value: Any) -> bool:
    return type(value).__module__ == "torch" and type(value).__name__ == "dtype"


def _torch_dtype_to_triton(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.")
    table = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int32": "i32",
             "int64": "i64", "int8": "i8", "uint8": "u8", "int16": "i16", "bool": "i1"}
    if name not in table:
        raise TypeError(f"no Triton pointer type for torch dtype {dtype}")
    return table[name]


def _is_real_jit(kernel: Any) -> bool:
    from triton.runtime.jit import JITFunction

    return isinstance(kernel, JITFunction)


# --------------------------------------------------------------------------------------------------------------
# Building and reading one cubin
# --------------------------------------------------------------------------------------------------------------


def _cuobjdump() -> str:
    import triton.backends.nvidia

    return os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "cuobjdump")


def _read_cubin(cubin: bytes) -> tuple[dict[str, int], int]:
    """(resource usage {REG, STACK, SHARED, LOCAL}, number of STL/LDL instructions) of a cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(cubin)
        path = handle.name
    try:
        usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", path], check=True, capture_output=True,
                               text=True).stdout
        sass = subprocess.run([_cuobjdump(), "-sass", path], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    resources = {key: 0 for key in ("REG", "STACK", "SHARED", "LOCAL")}
    for line in usage.splitlines():
        if "REG:" in line:  # the kernel's line; the "Common" section has only GLOBAL
            for key, value in _RESOURCE_PATTERN.findall(line):
                resources[key] = max(resources[key], int(value))
    spill_instructions = sum(1 for line in sass.splitlines() if _SPILL_SASS_PATTERN.search(line))
    return resources, spill_instructions


def _mma_instructions(ptx: str) -> tuple[str | None, tuple[str, ...]]:
    found = sorted(set(_MMA_PATTERN.findall(ptx)))
    if any(f.startswith("wgmma") for f in found):
        return "wgmma", tuple(found)
    if found:
        return "mma", tuple(found)
    return None, ()


def _compile_in_process(case: AOTCase, arch: int) -> BuildInfo:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = case.kernel
    names = kernel_arg_names(kernel)
    constexpr_names = kernel_constexpr_names(kernel)
    signature: dict[str, str] = {}
    for name in names:
        if name in case.constexprs:
            signature[name] = "constexpr"
        elif name in case.signature:
            signature[name] = case.signature[name]
        else:
            raise ValueError(f"{kernel_name(kernel)}: argument {name!r} is in neither signature nor constexprs")
    unknown = set(case.constexprs) - set(names)
    if unknown:
        raise ValueError(f"{kernel_name(kernel)}: unknown constexprs {sorted(unknown)}")
    missing_meta = [n for n in constexpr_names if n not in case.constexprs]
    if missing_meta:
        raise ValueError(f"{kernel_name(kernel)}: constexpr parameters without a value: {missing_meta}")
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in case.divisible_by_16}
    start = time.perf_counter()
    compiled = triton.compile(ASTSource(kernel, signature, dict(case.constexprs), attrs),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": case.num_warps, "num_stages": case.num_stages})
    seconds = time.perf_counter() - start
    resources, spill_instructions = _read_cubin(compiled.asm["cubin"])
    mma_kind, mma = _mma_instructions(compiled.asm["ptx"])
    return BuildInfo(
        kernel=kernel_name(kernel),
        label=case.label,
        arch=arch,
        num_warps=case.num_warps,
        num_stages=case.num_stages,
        registers=resources["REG"],
        spill_bytes=resources["STACK"] + resources["LOCAL"],
        spill_instructions=spill_instructions,
        shared_bytes=int(compiled.metadata.shared) + resources["SHARED"],
        shared_limit=SHARED_MEMORY_LIMIT.get(arch, SHARED_MEMORY_LIMIT[80]),
        mma_kind=mma_kind,
        mma_instructions=mma,
        compile_seconds=round(seconds, 3),
    )


def compile_kernel(kernel: Any, signature: Mapping[str, str], constexprs: Mapping[str, Any], arch: int, *,
                   divisible_by_16: Sequence[str] = (), num_warps: int = 4, num_stages: int = 3,
                   label: str = "") -> BuildInfo:
    """Compile one specialisation of `kernel` for sm_`arch` and read back its resources (see AOTCase)."""
    case = AOTCase(kernel, dict(signature), dict(constexprs), tuple(divisible_by_16), num_warps, num_stages, label)
    return compile_cases([case], archs=(arch,))[0]


def compile_cases(cases: Sequence[AOTCase], archs: Sequence[int] = ARCHS, jobs: int | None = None) -> list[BuildInfo]:
    """Build every case for every arch (restricted by case.archs); results are ordered case-major, then arch.

    Real JITFunctions compile in this process; interpreter wrappers (TRITON_INTERPRET=1) in one child process
    per call. `jobs` > 1 spreads builds over worker processes (default: env AWM_AOT_JOBS, else 1).
    """
    if jobs is None:
        jobs = int(os.environ.get("AWM_AOT_JOBS", "1"))
    cases = list(cases)
    pairs = [(case, arch) for case in cases for arch in archs if case.archs is None or arch in case.archs]
    if all(_is_real_jit(case.kernel) for case, _ in pairs) and jobs <= 1:
        return [_compile_in_process(case, arch) for case, arch in pairs]
    return _compile_in_child(pairs, jobs)


# --------------------------------------------------------------------------------------------------------------
# Child process: rebuild the kernels without the interpreter
# --------------------------------------------------------------------------------------------------------------


def _encode_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    from triton import language as tl

    if isinstance(value, tl.dtype):
        return {"tl_dtype": value.name}
    if isinstance(value, tl.constexpr):
        return _encode_value(value.value)
    raise TypeError(f"cannot send constexpr value {value!r} to the compile worker")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "tl_dtype" in value:
        from triton import language as tl

        return tl.str_to_ty(value["tl_dtype"], None)
    return value


def _locate(kernel: Any) -> dict[str, str]:
    fn = _python_fn(kernel)
    return {"module": fn.__module__, "file": inspect.getsourcefile(fn) or "", "name": fn.__name__}


def _load_kernel(location: Mapping[str, str]) -> Any:
    module = None
    try:
        module = importlib.import_module(location["module"])
    except ImportError:
        spec = importlib.util.spec_from_file_location(location["module"], location["file"])
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        sys.modules[location["module"]] = module
        spec.loader.exec_module(module)
    kernel = getattr(module, location["name"])
    if not _is_real_jit(kernel):
        raise TypeError(f"{location['module']}.{location['name']} is not a module-level @triton.jit kernel")
    return kernel


def _worker_build(job: Mapping[str, Any]) -> dict[str, Any]:
    kernel = _load_kernel(job["location"])
    case = AOTCase(kernel, job["signature"], {k: _decode_value(v) for k, v in job["constexprs"].items()},
                   tuple(job["divisible_by_16"]), job["num_warps"], job["num_stages"], job["label"])
    try:
        return {"ok": True, "info": _compile_in_process(case, job["arch"]).to_dict()}
    except Exception as exc:  # noqa: BLE001 - reported to the parent with the case that failed
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _worker_main(in_path: str, out_path: str) -> None:
    with open(in_path) as handle:
        request = json.load(handle)
    jobs = request["jobs"]
    if request["workers"] > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=request["workers"]) as pool:
            results = list(pool.map(_worker_build, jobs))
    else:
        results = [_worker_build(job) for job in jobs]
    with open(out_path, "w") as handle:
        json.dump(results, handle)


def _compile_in_child(pairs: Sequence[tuple[AOTCase, int]], jobs: int) -> list[BuildInfo]:
    request_jobs = []
    for case, arch in pairs:
        request_jobs.append({
            "location": _locate(case.kernel),
            "signature": dict(case.signature),
            "constexprs": {k: _encode_value(v) for k, v in case.constexprs.items()},
            "divisible_by_16": list(case.divisible_by_16),
            "num_warps": case.num_warps,
            "num_stages": case.num_stages,
            "label": case.label,
            "arch": arch,
        })
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    with tempfile.TemporaryDirectory(prefix="awm_aot_") as tmp:
        in_path, out_path = os.path.join(tmp, "request.json"), os.path.join(tmp, "result.json")
        with open(in_path, "w") as handle:
            json.dump({"jobs": request_jobs, "workers": max(1, jobs)}, handle)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", in_path, out_path], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out_path):
            raise RuntimeError(f"AOT compile worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with open(out_path) as handle:
            results = json.load(handle)
    infos = []
    for job, result in zip(request_jobs, results, strict=True):
        if not result["ok"]:
            where = f"{job['location']['name']} [{job['label']}] sm_{job['arch']}"
            raise RuntimeError(f"AOT compile of {where} failed: {result['error']}")
        infos.append(BuildInfo.from_dict(result["info"]))
    return infos


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: aot.py --worker REQUEST.json RESULT.json (internal; use compile_cases() instead)")
