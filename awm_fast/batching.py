"""How the fast paths batch work: forward chunks, distinct minibatch rows, the autocast context."""

from __future__ import annotations

import contextlib

import torch

from awm_fast.config import AWMConfig

CPU_FORWARD_CHUNK = 32  # default AWMConfig.forward_chunk on the CPU
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def forward_chunk(cfg: AWMConfig, device: torch.device) -> int:
    """Images per forward + backward of the fast paths. On the CPU, GEMM throughput is already flat at 32
    images of a ResNet-18 while activation memory keeps growing with the chunk (AWMConfig docstring)."""
    return cfg.forward_chunk or (cfg.batch_size if device.type == "cuda" else min(cfg.batch_size, CPU_FORWARD_CHUNK))


def autocast(cfg: AWMConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward's autocast context for cfg.precision (disabled for fp32)."""
    dtype = AUTOCAST_DTYPES[cfg.precision]
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def distinct(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of a minibatch and each one's weight multiplicity / batch size (they sum to 1)."""
    unique_rows, counts = torch.unique(rows, return_counts=True)
    return unique_rows, counts.to(torch.float32) / rows.numel()


def chunks(total: int, limit: int) -> list[slice]:
    """Split range(total) into the fewest near-equal slices of at most `limit` items."""
    count = -(-total // limit)
    size = -(-total // count)
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]
