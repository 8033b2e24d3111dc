"""Shared by the round-5 scripts: a cached backdoored model with its one-shot and evaluation data."""
import copy
import functools
import os

import torch

from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset, without_indices

# the round-2 model cache (`awm-fast study --cache DIR` rebuilds it); AWM_CACHE names another (round 17's)
CACHE = os.environ.get("AWM_CACHE", "/tmp/r2/cache")
ATTACKS = ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet")
torch.set_num_threads(1)  # one thread per process: two scripts share the 2-core machine


@functools.lru_cache
def _split(dataset):
    return load_dataset(dataset, None)


def load_case(attack_name, seed, dataset="digits", model_name="small-cnn", train_epochs=None, eval_images=2000):
    """(backdoored model, attack, (x, y) one image per class, (x_eval, y_eval) the rest of the test split).

    Fashion-MNIST models are the 12,000-image ones, evaluated on `eval_images` images (2,000 in the tables).
    train_epochs: None = the study's default (30 on digits, 3 elsewhere).
    """
    split = _split(dataset)
    settings = study.StudySettings(cache=CACHE, train_limit=None if dataset == "digits" else 12000,
                                   train_epochs=train_epochs)
    attack = study.build_attack(attack_name, split.x_train.shape[-1], split.num_classes)
    model, _ = study._cached_model(settings, split, dataset, model_name, attack_name, attack, seed)
    x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    x_eval, y_eval = without_indices(split.x_test, split.y_test, used)
    if dataset != "digits":
        x_eval, y_eval = x_eval[:eval_images], y_eval[:eval_images]
    return model, attack, (x, y), (x_eval, y_eval)


def masked_copy(model, masks):
    """A copy of `model` with each weight named in `masks` multiplied by its mask."""
    masked = copy.deepcopy(model)
    params = dict(masked.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    return masked


def percent(model, x_eval, y_eval, attack):
    """'ACC/ASR' in % of `model` on the evaluation data."""
    metrics = study._metrics(model, x_eval, y_eval, attack)
    return f"{100 * metrics['acc']:.1f}/{100 * metrics['asr']:.1f}"


def fashion_case(model_name, case):
    """MODEL (small-cnn, lenet: the 3-epoch Fashion-MNIST models, small-resnet: the 10-epoch ones) and 'ATTACK:SEED' ->
    (attack_name, seed, model, attack, few, (x_eval, y_eval)) as load_case gives them."""
    name, seed = case.rsplit(":", 1)
    epochs = 10 if model_name == "small-resnet" else 3  # the study's default elsewhere (round 17's lenet)
    return (name, int(seed), *load_case(name, int(seed), "fashion-mnist", model_name, epochs))


def case_from_argv(argv):
    """The scripts' `MODEL ATTACK:SEED ['json overrides']` -> (model_name, attack_name, seed, overrides, model,
    attack, few, (x_eval, y_eval)) (fashion_case)."""
    import json

    overrides = json.loads(argv[3]) if len(argv) > 3 else {}
    name, seed, *loaded = fashion_case(argv[1], argv[2])
    return (argv[1], name, seed, overrides, *loaded)
