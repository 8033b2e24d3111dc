"""Fused Triton kernels for masked Linear and Conv2d (installed as `awm_fast.kernels`).

One file per op: its @triton.jit kernels, host launchers and one autograd Function. Shared helpers
(interpreter detection, dtype tables, config pruning, the pinned-config / autotuned launcher TunedKernel)
live in `awm_fast.kernels.utils`; ahead-of-time builds for sm_80 / sm_90 without a GPU (registers, spills,
shared memory, MMA instructions) in `awm_fast.kernels.aot`. Each op module also exposes `aot_cases(full)`,
the kernel x config x dtype specialisations the AOT tests and benchmarks/triton_build_report.py compile.
"""
