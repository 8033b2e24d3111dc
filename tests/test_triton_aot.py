"""Static proof for real GPUs: the masked-Linear kernels compiled ahead of time for sm_80 and sm_90.

No GPU is needed: triton.compile(..., target=GPUTarget("cuda", arch, 32)) builds PTX and a cubin, and the
bundled cuobjdump reads registers, stack/local memory (spills) and shared memory back (awm_fast.kernels.aot).
This test session runs with TRITON_INTERPRET=1, so the kernels here are interpreter wrappers: compile_cases
rebuilds them in one child process started without the interpreter (see kernels/aot.py for why in-process
rebuilding is not enough).

Default run: every autotune config of every pass in bf16, plus the first config of each pass for fp16, fp32
activations under bf16 autocast and fp32 (TF32), for both targets. The full matrix (every config x every dtype
combination) is marked slow:  python -m pytest -m slow tests/test_triton_aot.py
The conv2d kernels have their own AOT test file; benchmarks/triton_build_report.py writes the table.
"""

from __future__ import annotations

import os

import pytest
import torch
import triton
from awm_fast.kernels import masked_linear as ml
from awm_fast.kernels.aot import ARCHS, SHARED_MEMORY_LIMIT, AOTCase, BuildInfo, compile_cases, compile_kernel
from awm_fast.kernels.utils import config_name, shared_memory_bytes

pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")),
    reason="Triton's bundled NVIDIA toolchain (ptxas, cuobjdump) is missing",
)

# A config known to spill (bf16 dmask, 128 x 256 accumulator tile, BLOCK_M 64): the checks must catch it.
SPILLING_DMASK = triton.Config({"BLOCK_N": 128, "BLOCK_K": 256, "BLOCK_M": 64, "GROUP_N": 8}, num_warps=8,
                               num_stages=3)
OPERAND_TYPES = {"bf16": "bf16", "fp16": "f16", "fp32": "tf32"}


def _dmask_case(config: triton.Config) -> AOTCase:
    meta = {"device": "meta", "dtype": torch.bfloat16}
    x, dy = torch.empty(4096, 4096, **meta), torch.empty(4096, 4096, **meta)
    weight, grad_mask = torch.empty(4096, 4096, **meta), torch.empty(4096, 4096, device="meta")
    args = ml._dmask_args(dy, x, weight, grad_mask, torch.bfloat16)
    args["DOT_IN_FP32"] = False
    return AOTCase.from_example(ml._masked_linear_bwd_dmask_kernel, {**args, **config.kwargs},
                                num_warps=config.num_warps, num_stages=config.num_stages,
                                label=f"bwd_dmask {config_name(config)} spill probe")


@pytest.fixture(scope="module")
def ci_builds() -> tuple[list[AOTCase], list[BuildInfo], list[BuildInfo]]:
    """All default-run builds in one child process: (cases, their builds, the spill probe's builds)."""
    cases = ml.aot_cases(full=False)
    builds = compile_cases([*cases, _dmask_case(SPILLING_DMASK)], archs=ARCHS,
                           jobs=int(os.environ.get("AWM_AOT_JOBS", min(2, os.cpu_count() or 1))))
    return cases, builds[:-len(ARCHS)], builds[-len(ARCHS):]


def _check_builds(cases: list[AOTCase], builds: list[BuildInfo]) -> None:
    expected = [(case.label, arch) for case in cases for arch in ARCHS if case.archs is None or arch in case.archs]
    assert [(b.label, b.arch) for b in builds] == expected
    problems = []
    for b in builds:
        operand = b.label.split("compute=")[1]
        if b.mma_kind is None or not all(OPERAND_TYPES[operand] in mma for mma in b.mma_instructions):
            problems.append(f"{b.label} sm_{b.arch}: no {operand} tensor-core MMA ({b.mma_instructions})")
        if b.arch == 80 and b.mma_kind != "mma":
            problems.append(f"{b.label} sm_80: expected mma.sync, got {b.mma_kind}")
        if b.spills:
            problems.append(f"{b.label} sm_{b.arch}: spills {b.spill_bytes} B ({b.spill_instructions} STL/LDL)")
        if not b.fits_shared:
            problems.append(f"{b.label} sm_{b.arch}: {b.shared_bytes} B shared > {b.shared_limit}")
        assert b.ok == (b.mma_kind is not None and not b.spills and b.fits_shared and b.registers <= 255)
    assert not problems, "\n".join(problems)


def test_every_config_compiles_with_tensor_cores_no_spills_within_shared_memory(ci_builds):
    cases, builds, _ = ci_builds
    assert {case.label.split()[0] for case in cases} == {"fwd", "bwd_dx", "bwd_dmask"}
    # Every bf16 config of every pass is in the default run.
    for name, configs in (("fwd", ml.fwd_configs), ("bwd_dx", ml.bwd_dx_configs),
                          ("bwd_dmask", ml.bwd_dmask_configs)):
        labels = {c.label for c in cases
                  if c.label.startswith(name + " ") and c.label.endswith("x=bf16 w=bf16 compute=bf16")}
        assert len(labels) == len(configs(torch.bfloat16))
    _check_builds(cases, builds)


def test_wgmma_on_sm90_for_warpgroup_sized_tiles(ci_builds):
    # Hopper's warpgroup MMA needs 64-row tiles per warpgroup; smaller BLOCK_M / BLOCK_N tiles use mma.sync.
    _, builds, _ = ci_builds
    sm90 = [b for b in builds if b.arch == 90]
    assert sum(b.mma_kind == "wgmma" for b in sm90) >= len(sm90) // 2
    for b in sm90:
        if b.label.startswith(("fwd M64_N64_K32", "bwd_dx M64_K64_N32", "bwd_dmask N64_K64_M32")):
            assert b.mma_kind == "wgmma", b


def test_shared_memory_estimate_tracks_the_build(ci_builds):
    # The launcher pre-filters configs with utils.shared_memory_bytes (Triton's autotuner also skips a config
    # that fails with OutOfResources, so the estimate only has to be close): it must stay within ±40% of what
    # the compiler allocates. That every kept config fits is checked on the builds themselves above.
    cases, builds, _ = ci_builds
    tuned = {"fwd": ml._FWD, "bwd_dx": ml._BWD_DX, "bwd_dmask": ml._BWD_DMASK}
    by_label = {case.label: case for case in cases}
    torch_dtypes = {"*bf16": torch.bfloat16, "*fp16": torch.float16, "*fp32": torch.float32}
    for b in builds:
        case = by_label[b.label]
        config = triton.Config({k: v for k, v in case.constexprs.items() if k.startswith(("BLOCK_", "GROUP_"))},
                               num_warps=case.num_warps, num_stages=case.num_stages)
        args = {name: torch.empty(0, dtype=torch_dtypes[ty], device="meta")
                for name, ty in case.signature.items() if ty.startswith("*")}
        estimate = shared_memory_bytes(config, tuned[b.label.split()[0]].operand_tiles({**args, **case.constexprs}))
        assert 0.6 <= b.shared_bytes / estimate <= 1.4, (b.label, b.arch, estimate, b.shared_bytes)


def test_the_checks_have_teeth(ci_builds):
    # A 128 x 256 fp32 accumulator with a 64-deep bf16 reduction spills on both targets: the build must say so.
    _, _, probe = ci_builds
    assert [b.arch for b in probe] == list(ARCHS)
    assert all(b.spills and not b.ok for b in probe), probe


def test_from_example_specialises_like_the_jit():
    meta = {"device": "meta"}
    x = torch.empty(33, 48, dtype=torch.float16, **meta)
    weight, mask = torch.empty(17, 48, dtype=torch.float16, **meta), torch.empty(17, 48, **meta)
    y = torch.empty(33, 17, dtype=torch.float16, **meta)
    args = ml._fwd_args(x, weight, mask, None, y, torch.float16)
    config = ml.fwd_configs(torch.float16)[0]
    case = AOTCase.from_example(ml._masked_linear_fwd_kernel, {**args, **config.kwargs})
    # Unit strides fold into constexpr 1, like the JIT does; multiples of 16 are marked divisible.
    assert case.constexprs["stride_xk"] == 1 and case.constexprs["stride_wk"] == 1 and "stride_xk" not in case.signature
    assert case.signature["x_ptr"] == "*fp16" and case.signature["m_ptr"] == "*fp32"
    assert "stride_xm" in case.divisible_by_16 and "N" not in case.divisible_by_16  # 48 yes, 17 no
    assert case.constexprs["BLOCK_M"] == config.kwargs["BLOCK_M"] and case.constexprs["HAS_BIAS"] is False
    with pytest.raises(ValueError, match="missing"):
        AOTCase.from_example(ml._masked_linear_fwd_kernel, args)  # no meta-parameters


def test_compile_kernel_single_build_api():
    case = ml.aot_cases(full=False)[0]
    info = compile_kernel(case.kernel, case.signature, case.constexprs, 90, divisible_by_16=case.divisible_by_16,
                          num_warps=case.num_warps, num_stages=case.num_stages, label="api")
    assert info.kernel == "_masked_linear_fwd_kernel" and info.arch == 90 and info.label == "api"
    assert info.shared_limit == SHARED_MEMORY_LIMIT[90] and info.registers > 0 and info.ok
    assert BuildInfo.from_dict(info.to_dict()) == info


@pytest.mark.slow
def test_full_build_matrix():
    cases = ml.aot_cases(full=True)
    _check_builds(cases, compile_cases(cases, jobs=int(os.environ.get("AWM_AOT_JOBS", os.cpu_count() or 1))))
