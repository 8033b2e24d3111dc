"""Shared by the round-9 scripts: a cached Fashion-MNIST model (either architecture) with its one-shot data."""
import os

import torch

from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset, without_indices

CACHE = "/tmp/r2/cache"  # `awm-fast study --cache DIR` builds it (docs/round5/cases.py uses the same)
torch.set_num_threads(1)  # one thread per process: two scripts share the 2-core machine


def load(model_name, attack_name, seed, eval_images=1000):
    """(backdoored model, attack, (x, y) one test image per class, (x_eval, y_eval) the next eval_images test
    images). The model is trained on 12,000 images for EPOCHS (environment; default 3) epochs."""
    split = load_dataset("fashion-mnist", None)
    settings = study.StudySettings(cache=CACHE, train_limit=12000, train_epochs=int(os.environ.get("EPOCHS", 3)))
    attack = study.build_attack(attack_name, split.x_train.shape[-1], split.num_classes)
    model, _ = study._cached_model(settings, split, "fashion-mnist", model_name, attack_name, attack, seed)
    x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    x_eval, y_eval = without_indices(split.x_test, split.y_test, used)
    return model, attack, (x, y), (x_eval[:eval_images], y_eval[:eval_images])


def percent(model, x_eval, y_eval, attack):
    """'ACC a ASR b' in % of `model` on the evaluation data."""
    metrics = study._metrics(model, x_eval, y_eval, attack)
    return f"ACC {100 * metrics['acc']:.1f} ASR {100 * metrics['asr']:.1f}"
