"""Fused Triton kernels for masked Linear and Conv2d (installed as `awm_fast.kernels`).

One file per op: its @triton.jit kernels, host launchers and one autograd Function. Shared helpers
(interpreter detection, dtype tables, config pruning) live in `awm_fast.kernels.utils`.
"""
