"""awm_fast.ops: the building blocks, usable on their own.

masked_linear / masked_conv2d: y = op(x, W⊙m) with backend dispatch (reference | torch | triton).
apply_triggers / trigger_step / project_l1_ball: the batched trigger step (C++/CUDA extension, with a
pure-PyTorch fallback).
"""

from awm_fast.ops.masked import BACKENDS, masked_conv2d, masked_linear, resolve_backend
from awm_fast.ops.trigger import apply_triggers, extension_available, project_l1_ball, trigger_step

__all__ = [
    "BACKENDS",
    "apply_triggers",
    "extension_available",
    "masked_conv2d",
    "masked_linear",
    "project_l1_ball",
    "resolve_backend",
    "trigger_step",
]
