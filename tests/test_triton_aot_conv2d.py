"""Static proof for real GPUs: every masked-conv2d kernel and autotune config builds for sm_80 and sm_90.

triton.compile runs the whole pipeline without a GPU (kernels/aot.py builds in a child process without
TRITON_INTERPRET, since this test session runs the interpreter); each build must use tensor-core MMA
(mma.sync / wgmma), spill no registers and fit the target's shared memory.

CI builds aot_cases(full=False): every 16-bit config of every pass for bf16 NCHW, plus fp32 (TF32) channels_last
and fp32 weights under bf16 compute for the first config of each pass. The full matrix (every config, the fp32
lists included, x every dtype combination, TF32 and 3xTF32, x NCHW / channels_last, and a stride-2 geometry)
is marked slow:
    python -m pytest -m slow tests/test_triton_aot_conv2d.py
"""

from __future__ import annotations

import os

import pytest
import torch
from awm_fast.kernels import masked_conv2d
from awm_fast.kernels.aot import ARCHS, compile_cases

KERNELS = {"fwd": "_masked_conv2d_fwd_kernel", "dx": "_masked_conv2d_bwd_dx_kernel",
           "dmask": "_masked_conv2d_bwd_dmask_kernel"}
CONFIGS = {"fwd": masked_conv2d.fwd_configs, "dx": masked_conv2d.dx_configs, "dmask": masked_conv2d.dmask_configs}
EXPECTED_MMA = {80: ("mma",), 90: ("mma", "wgmma")}  # Hopper may also pick mma.sync for small tiles


def _build(full: bool):
    jobs = int(os.environ.get("AWM_AOT_JOBS", "2"))
    return compile_cases(masked_conv2d.aot_cases(full=full), archs=ARCHS, jobs=jobs)


@pytest.fixture(scope="module")
def ci_builds():
    return _build(full=False)


def _describe(info) -> str:
    return (f"{info.kernel} [{info.label}] sm_{info.arch}: regs={info.registers} spills={info.spill_bytes}B/"
            f"{info.spill_instructions} insts smem={info.shared_bytes}/{info.shared_limit} mma={info.mma_kind}")


def _check(builds) -> None:
    bad = [_describe(i) for i in builds if not i.ok or i.mma_kind not in EXPECTED_MMA[i.arch]]
    assert not bad, "builds that spill, overflow shared memory or miss tensor cores:\n" + "\n".join(bad)


def test_every_config_builds_with_mma_no_spills_within_shared_memory(ci_builds):
    _check(ci_builds)


def test_ci_subset_covers_every_kernel_config_and_arch(ci_builds):
    from awm_fast.kernels.utils import config_name

    built = {(i.kernel, i.label.split()[1], i.arch) for i in ci_builds}
    for kernel_pass, configs in CONFIGS.items():
        for config in configs(torch.bfloat16):
            for arch in ARCHS:
                assert (KERNELS[kernel_pass], config_name(config), arch) in built, (kernel_pass, config, arch)
    # The TF32 path and the mixed-precision (fp32 weights, bf16 compute) path are in the CI subset too.
    assert any("fp32 channels_last" in i.label for i in ci_builds)
    assert any("bf16_fp32w" in i.label for i in ci_builds)


def test_sm90_uses_wgmma_for_large_tiles(ci_builds):
    """On Hopper the 128-row, 8-warp tiles must reach the asynchronous warpgroup MMA, not only mma.sync."""
    large = [i for i in ci_builds if i.arch == 90 and "_w8_" in i.label]
    assert large and all(i.mma_kind == "wgmma" for i in large), [_describe(i) for i in large]


@pytest.mark.slow
def test_full_matrix_builds_with_mma_no_spills_within_shared_memory():
    _check(_build(full=True))
