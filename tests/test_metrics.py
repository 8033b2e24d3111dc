"""ACC and ASR on hand-built models whose every prediction is known by construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from awm_fast.attacks import AllToAll, BadNets
from awm_fast.metrics import attack_success_rate, clean_accuracy, evaluate, predict

NUM_CLASSES = 10


def encode_labels(y: torch.Tensor) -> torch.Tensor:
    """Images [N, 1, 8, 8] that carry their label in pixel (0, 0) as y / 10 and are 0 elsewhere."""
    x = torch.zeros(y.shape[0], 1, 8, 8)
    x[:, 0, 0, 0] = y.float() / NUM_CLASSES
    return x


class PixelOracle(nn.Module):
    """Reads the label from pixel (0, 0). When the BadNets patch (pixel (5, 5) == 1) is present it answers
    ``backdoor_class(label)`` instead, but only for labels in ``backdoored_labels``.

    Records the mode and grad state it was called in, to check the metrics' calling conventions.
    """

    def __init__(self, backdoor_class, backdoored_labels=range(NUM_CLASSES)) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # one parameter, so that device inference has something to read
        self.backdoor_class = backdoor_class
        self.backdoored_labels = torch.tensor(list(backdoored_labels))
        self.seen_training_flags: list[bool] = []
        self.seen_grad_enabled: list[bool] = []
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training_flags.append(self.training)
        self.seen_grad_enabled.append(torch.is_grad_enabled())
        self.batch_sizes.append(x.shape[0])
        label = (x[:, 0, 0, 0] * NUM_CLASSES).round().long()
        triggered = (x[:, 0, 5, 5] == 1.0) & torch.isin(label, self.backdoored_labels)
        predicted = torch.where(triggered, self.backdoor_class(label), label)
        return nn.functional.one_hot(predicted, NUM_CLASSES).float() * self.scale


class ConstantClass(nn.Module):
    """Always predicts ``label``; has no parameters (device falls back to the CPU)."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], NUM_CLASSES)
        logits[:, self.label] = 1.0
        return logits


# 20 samples: labels 0..9 twice
LABELS = torch.arange(20) % NUM_CLASSES
BADNETS_TO_0 = BadNets(size=3, offset=1, target=0)  # covers rows/cols 4..6 of an 8x8 image, so pixel (5, 5)


def test_clean_accuracy_exact_values():
    x = encode_labels(LABELS)
    assert clean_accuracy(PixelOracle(lambda y: y), x, LABELS) == 1.0
    # a constant predictor of class 3 is right on exactly the 2 samples labelled 3
    assert clean_accuracy(ConstantClass(3), x, LABELS) == pytest.approx(2 / 20)
    wrong_labels = LABELS.clone()
    wrong_labels[:5] = (wrong_labels[:5] + 1) % NUM_CLASSES
    assert clean_accuracy(PixelOracle(lambda y: y), x, wrong_labels, batch_size=3) == pytest.approx(15 / 20)


def test_asr_all_to_one_excludes_the_target_class():
    x = encode_labels(LABELS)
    always_target = PixelOracle(lambda y: torch.zeros_like(y))
    assert attack_success_rate(always_target, x, LABELS, BADNETS_TO_0) == 1.0
    # the forward pass saw only the 18 non-target samples
    assert sum(always_target.batch_sizes) == 18
    # backdoor fires only for labels {1, 2, 3}: 6 of the 18 non-target samples -> 1/3
    partial = PixelOracle(lambda y: torch.zeros_like(y), backdoored_labels=[1, 2, 3])
    assert attack_success_rate(partial, x, LABELS, BADNETS_TO_0) == pytest.approx(6 / 18)
    # backdoor fires only on the target class itself: excluded, so ASR is 0 (not 2/20)
    only_target = PixelOracle(lambda y: torch.zeros_like(y), backdoored_labels=[0])
    assert attack_success_rate(only_target, x, LABELS, BADNETS_TO_0) == 0.0
    # a clean model keeps predicting the true label under the trigger
    assert attack_success_rate(PixelOracle(lambda y: y), x, LABELS, BADNETS_TO_0) == 0.0


def test_asr_all_to_all_excludes_nothing():
    x = encode_labels(LABELS)
    attack = AllToAll(BADNETS_TO_0, num_classes=NUM_CLASSES)
    shift_by_one = PixelOracle(lambda y: (y + 1) % NUM_CLASSES)
    assert attack_success_rate(shift_by_one, x, LABELS, attack) == 1.0
    assert sum(shift_by_one.batch_sizes) == 20
    # an all-to-one backdoor (everything -> 0) only hits the samples whose all-to-all target is 0: label 9
    to_zero = PixelOracle(lambda y: torch.zeros_like(y))
    assert attack_success_rate(to_zero, x, LABELS, attack) == pytest.approx(2 / 20)
    # shift_by_one fires only on even labels: 10 of 20
    even_only = PixelOracle(lambda y: (y + 1) % NUM_CLASSES, backdoored_labels=[0, 2, 4, 6, 8])
    assert attack_success_rate(even_only, x, LABELS, attack, batch_size=7) == pytest.approx(10 / 20)


def test_asr_with_nothing_left_after_exclusion_raises():
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="no sample left"):
        attack_success_rate(ConstantClass(0), encode_labels(y), y, BADNETS_TO_0)
    with pytest.raises(ValueError, match="at least one"):
        clean_accuracy(ConstantClass(0), torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))


@pytest.mark.parametrize("start_training", [True, False])
def test_metrics_run_in_eval_mode_without_grad_and_restore_the_flag(start_training):
    model = PixelOracle(lambda y: torch.zeros_like(y))
    model.train(start_training)
    x = encode_labels(LABELS)
    clean_accuracy(model, x, LABELS, batch_size=8)
    attack_success_rate(model, x, LABELS, BADNETS_TO_0, batch_size=8)
    assert model.training is start_training
    assert model.seen_training_flags and not any(model.seen_training_flags)
    assert not any(model.seen_grad_enabled)
    assert model.batch_sizes == [8, 8, 4, 8, 8, 2]  # 20 clean in batches of 8, then 18 triggered


def test_metrics_restore_the_flag_when_the_model_raises():
    class Exploding(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = Exploding().train()
    with pytest.raises(RuntimeError, match="boom"):
        clean_accuracy(model, torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64))
    assert model.training


def test_evaluate_and_predict():
    x = encode_labels(LABELS)
    model = PixelOracle(lambda y: torch.zeros_like(y), backdoored_labels=[1, 2, 3])
    assert evaluate(model, x, LABELS, BADNETS_TO_0) == {"acc": 1.0, "asr": pytest.approx(6 / 18)}
    assert evaluate(model, x, LABELS) == {"acc": 1.0, "asr": None}
    predictions = predict(model, x, batch_size=6, attack=BADNETS_TO_0)
    assert predictions.dtype == torch.int64
    expected = LABELS.clone()
    expected[torch.isin(LABELS, torch.tensor([1, 2, 3]))] = 0
    assert torch.equal(predictions, expected)
