# The ASR a model that was never poisoned already has: python floor.py MODEL [SEED ...]
# Trains MODEL on the same 12,000 Fashion-MNIST images as the backdoored ones (same epochs, same seeds) with no
# poisoned image (rate 0), then measures every attack's success rate on the tables' 2,000 evaluation images with the
# study's metric (the share of images not of the target class that the trigger sends there; all-to-all: to the next
# class). What a purified model keeps can be measured against this.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import cases

from awm_fast import study
from awm_fast.data import few_shot_subset, without_indices

model_name, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]] or [0, 1, 2]
split = cases._split("fashion-mnist")
epochs = 3 if model_name == "small-cnn" else 10
settings = study.StudySettings(cache=cases.CACHE, train_limit=12000, train_epochs=epochs)
for seed in seeds:
    model = study._clean_model(settings, split, "fashion-mnist", model_name, seed)  # the study's clean reference
    _, _, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    x_eval, y_eval = without_indices(split.x_test, split.y_test, used)
    x_eval, y_eval = x_eval[:2000], y_eval[:2000]
    cells = []
    for name in cases.ATTACKS:
        attack = study.build_attack(name, split.x_train.shape[-1], split.num_classes)
        cells.append(f"{name} {100 * study._metrics(model, x_eval, y_eval, attack)['asr']:.1f}")
    acc = study._metrics(model, x_eval, y_eval, attack)["acc"]
    print(f"FLOOR {model_name} seed {seed} ACC {100 * acc:.1f} ASR " + " ".join(cells), flush=True)
