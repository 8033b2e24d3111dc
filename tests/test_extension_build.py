"""The compiled extension awm_fast._C: built by `pip install --no-build-isolation -e .`, loaded from the package
directory, kernels registered for every op on CPU and, wherever the build found nvcc, on CUDA; the CUDA binary
holds the requested architectures and spills nothing. No GPU is needed: these read the dispatcher and the cubins.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from awm_fast.ops import trigger as trigger_ops

ROOT = Path(__file__).resolve().parents[1]
NO_EXTENSION = os.environ.get("AWM_FAST_NO_EXTENSION", "").strip().lower() in ("1", "true", "yes", "on")
CPU_ONLY = os.environ.get("AWM_FAST_CPU_ONLY", "").strip().lower() in ("1", "true", "yes", "on")


def _nvcc() -> str | None:
    for candidate in (os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
                      "/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _cuobjdump() -> str | None:
    candidates = [os.path.join(os.path.dirname(_nvcc() or ""), "cuobjdump"), shutil.which("cuobjdump")]
    try:  # Triton bundles one
        import triton

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.path.isfile(c)), None)


needs_extension = pytest.mark.skipif(NO_EXTENSION, reason="AWM_FAST_NO_EXTENSION set: built without awm_fast._C")
needs_cuda_build = pytest.mark.skipif(
    _nvcc() is None or CPU_ONLY or NO_EXTENSION,
    reason="no nvcc here, or AWM_FAST_CPU_ONLY / AWM_FAST_NO_EXTENSION set: no CUDA kernels built",
)


@needs_extension
def test_extension_is_built_and_loaded_from_the_package():
    assert trigger_ops.extension_available(), (
        f"awm_fast._C did not load ({trigger_ops._EXTENSION_ERROR}); run `pip install --no-build-isolation -e .`"
    )
    import awm_fast._C as compiled

    # Editable installs build in place: the library sits beside the package sources being imported.
    assert Path(compiled.__file__).resolve().parent == Path(trigger_ops.__file__).resolve().parents[1]


@needs_extension
def test_cpu_kernels_registered_for_every_op():
    for op in trigger_ops.OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"awm_fast::{op}", "CPU"), op
    assert trigger_ops.extension_has_kernels("cpu")


@needs_cuda_build
def test_cuda_kernels_registered_for_every_op_where_nvcc_exists():
    for op in trigger_ops.OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"awm_fast::{op}", "CUDA"), (
            f"awm_fast::{op} has no CUDA kernel although nvcc exists at {_nvcc()}: setup.py built CPU only"
        )


@needs_cuda_build
def test_cuda_binary_has_the_requested_archs_and_no_spills():
    cuobjdump = _cuobjdump()
    if cuobjdump is None:
        pytest.skip("no cuobjdump (CUDA toolkit bin/ or Triton's bundle)")
    import awm_fast._C as compiled

    library = compiled.__file__
    elves = subprocess.run([cuobjdump, "--list-elf", library], capture_output=True, text=True, check=True).stdout
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    for arch in re.findall(r"(\d+)\.(\d+)", archs):
        assert f"sm_{''.join(arch)}" in elves, f"no sm_{''.join(arch)} cubin in {library}:\n{elves}"
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", library], capture_output=True, text=True,
                           check=True).stdout
    kernels = re.findall(r"Function ([^:\s]+):\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    names = {name for name, *_ in kernels}
    for expected in ("apply_triggers_fwd_kernel", "apply_triggers_bwd_triggers_kernel", "apply_triggers_bwd_x_kernel",
                     "trigger_step_kernel"):
        assert any(expected in name for name in names), f"{expected} missing from {library}"
    for name, _reg, stack, _shared, local in kernels:
        assert int(stack) == 0 and int(local) == 0, f"{name} spills (STACK {stack}, LOCAL {local})"


def _setup_function(name: str):
    """A function from setup.py, without running setup(): its source is exec'd alone."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    namespace = {"os": os, "shutil": shutil}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in (name, "_is_cuda_toolkit", "_env_flag"):
            exec(compile(ast.Module([node], []), "setup.py", "exec"), namespace)
    return namespace[name]


def test_setup_finds_the_toolkit_not_the_nvcc_wrapper(tmp_path, monkeypatch):
    find_cuda_home = _setup_function("find_cuda_home")
    # A wrapper script on PATH (like /usr/local/bin/nvcc here) must not make "<wrapper dir>/.." the CUDA home.
    wrapper_bin = tmp_path / "wrapper" / "bin"
    wrapper_bin.mkdir(parents=True)
    (wrapper_bin / "nvcc").write_text("#!/bin/sh\nexec /usr/local/cuda/bin/nvcc \"$@\"\n")
    (wrapper_bin / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    found = find_cuda_home()
    assert found != str(tmp_path / "wrapper")
    if os.path.isfile("/usr/local/cuda/bin/nvcc"):
        assert found == "/usr/local/cuda"
    # An explicit CUDA_HOME holding a toolkit wins.
    toolkit = tmp_path / "cuda-x"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    assert find_cuda_home() == str(toolkit)
