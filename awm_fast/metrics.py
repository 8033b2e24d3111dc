"""Clean accuracy (ACC) and attack success rate (ASR), as defined in ALGORITHM.md's evaluation protocol.

- ACC: fraction of clean images classified as their label.
- ASR: fraction of triggered images classified as ``attack.target_labels(y)``, EXCLUDING images whose true
  label already equals their target (all-to-one: the target class is left out; all-to-all: nothing is).

Both run without gradients with the model in eval mode (BatchNorm running statistics, no dropout), and
restore the model's previous training flag afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from awm_fast.attacks import Attack

__all__ = ["attack_success_rate", "clean_accuracy", "evaluate", "predict"]


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def predict(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    attack: Attack | None = None,
) -> torch.Tensor:
    """Predicted classes, int64 [N], for x float [N, C, H, W] (triggered batch-by-batch when ``attack`` is set).

    Runs in eval mode without gradients; returns the predictions on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _resolve_device(model, device)
    predictions = []
    with _eval_mode(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(device)
            if attack is not None:
                batch = attack.apply(batch)
            predictions.append(model(batch).argmax(dim=1).cpu())
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)


def clean_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, device: torch.device | str | None = None
) -> float:
    """ACC in [0, 1]. x: float [N, C, H, W]; y: int64 [N]; N must be > 0."""
    if x.shape[0] == 0:
        raise ValueError("clean_accuracy needs at least one sample")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    predictions = predict(model, x, batch_size=batch_size, device=device)
    return (predictions == y.cpu()).double().mean().item()


def attack_success_rate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> float:
    """ASR in [0, 1]. x: clean float [N, C, H, W] (the trigger is applied here); y: int64 [N] true labels.

    Raises ValueError when no sample is left after excluding those whose label equals their target.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    targets = attack.target_labels(y).cpu()
    keep = targets != y.cpu()
    if not bool(keep.any()):
        raise ValueError("attack_success_rate: no sample left after excluding those whose label is the target")
    predictions = predict(model, x[keep.to(x.device)], batch_size=batch_size, device=device, attack=attack)
    return (predictions == targets[keep]).double().mean().item()


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> dict[str, float | None]:
    """``{"acc": ACC, "asr": ASR}``; ``"asr"`` is None when no attack is given."""
    acc = clean_accuracy(model, x, y, batch_size=batch_size, device=device)
    asr = None if attack is None else attack_success_rate(model, x, y, attack, batch_size=batch_size, device=device)
    return {"acc": acc, "asr": asr}
