# The residual check on never-poisoned models: purify (the default) a model trained without poisoning, and print the
# suspect it names, the check's ratio (history[-1]["suspect_standout"]: the runner-up's cross-entropy over the
# suspect's at twice the hunt's radius) and whether purify warned. A backdoor-free model's easiest class is named too,
# so this is where the check could cry wolf.
#   AWM_CACHE=DIR python clean_standout_probe.py MODEL SEED [SEED ...]
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import CACHE, _split

import awm_fast
from awm_fast import study
from awm_fast.data import few_shot_subset

model_name, *seeds = sys.argv[1:]
split = _split("fashion-mnist")
epochs = 10 if model_name == "small-resnet" else 3
settings = study.StudySettings(cache=CACHE, train_limit=12000, train_epochs=epochs)
for seed in map(int, seeds):
    model = study._clean_model(settings, split, "fashion-mnist", model_name, seed)
    x, y, _ = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = awm_fast.purify(model, (x, y), seed=seed)
    print(json.dumps({"model": model_name, "seed": seed, "suspect": result.history[0]["suspect_class"],
                      "standout": round(result.history[-1].get("suspect_standout", float("nan")), 3),
                      "warnings": [str(w.message)[:90] for w in caught]}), flush=True)
