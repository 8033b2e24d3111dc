"""Build and install awm_fast.

`kernels/` installs as the subpackage `awm_fast.kernels` (never as a top-level `kernels` module: a PyPI
package of that name exists). Install without build isolation so the build uses the torch already
installed instead of pulling a second one: `pip install --no-build-isolation -e .`

The C++ extension `awm_fast._C` (csrc/: the batched trigger step, torch.ops.awm_fast.*) is built with
torch.utils.cpp_extension and ninja: the CPU implementation always, the CUDA kernels (csrc/cuda/*.cu) whenever a
CUDA toolkit with nvcc is found, whether or not a GPU is present. Environment switches:
  AWM_FAST_CPU_ONLY=1        build the CPU implementation only, even where nvcc exists
  AWM_FAST_NO_EXTENSION=1    build no extension at all (awm_fast then runs its pure-PyTorch fallback)
  CUDA_HOME / CUDA_PATH      the CUDA toolkit to use (default: /usr/local/cuda, then nvcc on PATH)
  TORCH_CUDA_ARCH_LIST       GPU architectures to compile for (default "8.0;9.0": A100 and H100/H200)
  MAX_JOBS                   parallel compile jobs (ninja)
"""

import glob
import os
import shutil
import sys

from setuptools import setup

PACKAGES = ["awm_fast", "awm_fast.ops", "awm_fast.kernels"]
PACKAGE_DIR = {"awm_fast": "awm_fast", "awm_fast.ops": "awm_fast/ops", "awm_fast.kernels": "kernels"}

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0"


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _is_cuda_toolkit(path):
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isdir(
        os.path.join(path, "include")
    )


def find_cuda_home():
    """The CUDA toolkit root (holding bin/nvcc and include/), or None.

    torch.utils.cpp_extension guesses CUDA_HOME as the parent of the first `nvcc` on PATH, which is wrong when
    that nvcc is a wrapper script (e.g. /usr/local/bin/nvcc -> "/usr/local"); so look at the usual places first
    and resolve symlinks of the PATH candidate.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for candidate in candidates:
        if _is_cuda_toolkit(candidate):
            return candidate
    return None


def extension_build():
    """(ext_modules, cmdclass) for awm_fast._C, or ([], {}) when torch is missing or the build is switched off."""
    if _env_flag("AWM_FAST_NO_EXTENSION"):
        return [], {}
    try:
        import torch  # noqa: F401  (the build needs the torch it will run against)
    except ImportError:
        print("awm_fast: torch is not importable; building without the C++ extension (pure-PyTorch fallback)",
              file=sys.stderr)
        return [], {}

    cuda_home = None if _env_flag("AWM_FAST_CPU_ONLY") else find_cuda_home()
    if cuda_home is not None:
        # cpp_extension reads CUDA_HOME when imported and keeps it in a module global: set both.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
    from torch.utils import cpp_extension

    if cuda_home is not None:
        cpp_extension.CUDA_HOME = cuda_home

    sources = [os.path.join(CSRC, "awm_fast_ops.cpp")]
    # -fopenmp: at::parallel_for is an inline `#pragma omp parallel`; without it the CPU ops run on one thread.
    # The OpenMP runtime resolves to the libgomp torch already loaded (same soname).
    cxx_flags = ["-O3", "-fopenmp"]
    kwargs = {"include_dirs": [CSRC], "extra_link_args": ["-fopenmp"]}
    if cuda_home is not None:
        # cuda/*.cu: the kernels (nvcc, once per architecture, no ATen headers); cuda/*.cpp: their host wrappers and
        # the CUDA dispatch registration (host compiler only).
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cpp")))
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        extension = cpp_extension.CUDAExtension(
            "awm_fast._C", sources, extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, **kwargs
        )
        print(f"awm_fast: building awm_fast._C with CUDA kernels (CUDA_HOME={cuda_home}, "
              f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})", file=sys.stderr)
    else:
        extension = cpp_extension.CppExtension(
            "awm_fast._C", sources, extra_compile_args={"cxx": cxx_flags}, **kwargs
        )
        print("awm_fast: building awm_fast._C, CPU only", file=sys.stderr)
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [extension], {"build_ext": build_ext}


EXT_MODULES, CMDCLASS = extension_build()

setup(
    name="awm_fast",
    version="0.1.0",
    description="Fast Adversarial Weight Masking: one-shot backdoor erasing for PyTorch models",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    install_requires=["torch<=2.14.1", "numpy"],
    entry_points={"console_scripts": ["awm-fast=awm_fast.cli:main"]},
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
)
