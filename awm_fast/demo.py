"""The main job: backdoor a small CNN, purify it with one clean image per class, report ACC/ASR.

    python -m awm_fast demo                          # scikit-learn digits, embedded, ~1 minute
    python -m awm_fast demo --dataset fashion-mnist  # Debian's dataset-fashion-mnist
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

import awm_fast
from awm_fast.attacks import BadNets, train_backdoored
from awm_fast.data import few_shot_subset, load_dataset, without_indices
from awm_fast.metrics import attack_success_rate, clean_accuracy
from awm_fast.models import SmallCNN


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    dataset: str = "digits"
    mode: str = "improved"
    backend: str = "auto"
    per_class: int = 1
    seed: int = 0
    train_epochs: int | None = None  # None: 30 on digits (1,257 images), 3 on Fashion-MNIST
    outer: int = 20


def run_demo(settings: DemoSettings, out=sys.stdout) -> dict[str, float]:
    """Run the demo end to end; returns the figures it prints (fractions in [0, 1], seconds)."""
    start = time.perf_counter()
    split = load_dataset(settings.dataset)
    image_size = split.x_train.shape[-1]
    # BadNets: a white square 1 px from the bottom-right corner, target class 0 (3x3; 2x2 on 8x8 digits).
    attack = BadNets(size=2 if image_size <= 8 else 3, offset=1, color=1.0, target=0)
    torch.manual_seed(settings.seed)
    model = SmallCNN(in_channels=split.x_train.shape[1], num_classes=split.num_classes, image_size=image_size)
    epochs = settings.train_epochs or (30 if settings.dataset == "digits" else 3)
    print(f"[demo] training a BadNets-backdoored SmallCNN on {settings.dataset} ({len(split.x_train)} images, "
          f"10% poisoned, {epochs} epochs)", file=out, flush=True)
    train_backdoored(model, split.x_train, split.y_train, attack, rate=0.1, epochs=epochs, seed=settings.seed)

    # The authors' protocol: the clean images used for purification come from the test split and are
    # excluded from the evaluation.
    x_few, y_few, used = few_shot_subset(split.x_test, split.y_test, settings.per_class, seed=settings.seed)
    x_eval, y_eval = without_indices(split.x_test, split.y_test, used)
    before = {"acc": clean_accuracy(model, x_eval, y_eval), "asr": attack_success_rate(model, x_eval, y_eval, attack)}
    print(f"[demo] before: ACC {100 * before['acc']:.1f}%  ASR {100 * before['asr']:.1f}%", file=out, flush=True)

    print(f"[demo] purifying with {len(x_few)} clean images ({settings.per_class} per class), mode={settings.mode}",
          file=out, flush=True)
    purify_start = time.perf_counter()
    result = awm_fast.purify(model, (x_few, y_few), mode=settings.mode, backend=settings.backend,
                             outer=settings.outer, seed=settings.seed)
    purify_seconds = time.perf_counter() - purify_start
    after = {"acc": clean_accuracy(result.model, x_eval, y_eval),
             "asr": attack_success_rate(result.model, x_eval, y_eval, attack)}
    total = time.perf_counter() - start
    print(f"[demo] after:  ACC {100 * after['acc']:.1f}%  ASR {100 * after['asr']:.1f}%", file=out)
    print(f"[demo] purify took {purify_seconds:.1f}s; the whole demo {total:.1f}s", file=out, flush=True)
    return {"acc_before": before["acc"], "asr_before": before["asr"], "acc_after": after["acc"],
            "asr_after": after["asr"], "purify_seconds": purify_seconds, "total_seconds": total}
