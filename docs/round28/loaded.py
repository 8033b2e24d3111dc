"""The round-28 probes' `MODEL ATTACK:SEED|clean:SEED ['json overrides']`: round 5's cases, plus
never-poisoned models (clean:SEED, the study's clean reference, evaluated with the BadNets trigger); MODEL "digits":
the 8x8 digits SmallCNN."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import CACHE, _split, case_from_argv, load_case

from awm_fast import study
from awm_fast.data import few_shot_subset, without_indices


def load(argv):
    """-> (model_name, attack_name, seed, overrides, model, attack, few, (x_eval, y_eval)) as case_from_argv."""
    if argv[1] == "digits":
        name, seed = argv[2].rsplit(":", 1)
        overrides = json.loads(argv[3]) if len(argv) > 3 else {}
        return ("digits", name, int(seed), overrides, *load_case(name, int(seed), "digits", "small-cnn"))
    if not argv[2].startswith("clean:"):
        return case_from_argv(argv)
    model_name, seed = argv[1], int(argv[2].split(":")[1])
    overrides = json.loads(argv[3]) if len(argv) > 3 else {}
    split = _split("fashion-mnist")
    epochs = 10 if model_name == "small-resnet" else 3
    settings = study.StudySettings(cache=CACHE, train_limit=12000, train_epochs=epochs)
    model = study._clean_model(settings, split, "fashion-mnist", model_name, seed)
    x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    x_eval, y_eval = [t[:2000] for t in without_indices(split.x_test, split.y_test, used)]
    return model_name, "clean", seed, overrides, model, study.build_attack("badnets", 28, 10), (x, y), (x_eval, y_eval)
