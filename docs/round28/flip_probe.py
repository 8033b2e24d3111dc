# Per epoch, the share of the search images (those the masked model does not already put in the suspect class) that
# the hunt's trigger sends to the suspect: a label-free reading of how much of the hunted backdoor still works, beside
# the mean cross-entropy that purify's extra epochs read. Prints one JSON line per run with the final ACC/ASR.
#   AWM_CACHE=DIR python docs/round28/flip_probe.py MODEL ATTACK:SEED|clean:SEED ['json overrides']
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import CACHE, _split, case_from_argv, percent

import awm_fast
from awm_fast import search as search_module
from awm_fast import study
from awm_fast.data import few_shot_subset, without_indices

shares = []
recover = search_module.TargetedSearch.recover


def recording_recover(self):
    trigger, loss, suspect = recover(self)
    own, sent = self._labels(), self._labels(trigger[0])
    eligible = own != suspect
    shares.append(round(float((sent[eligible] == suspect).float().mean()), 3) if bool(eligible.any()) else None)
    return trigger, loss, suspect


search_module.TargetedSearch.recover = recording_recover

if sys.argv[2].startswith("clean:"):
    model_name, seed = sys.argv[1], int(sys.argv[2].split(":")[1])
    overrides = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    split = _split("fashion-mnist")
    epochs = 10 if model_name == "small-resnet" else 3
    settings = study.StudySettings(cache=CACHE, train_limit=12000, train_epochs=epochs)
    model = study._clean_model(settings, split, "fashion-mnist", model_name, seed)
    x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    x_eval, y_eval = [t[:2000] for t in without_indices(split.x_test, split.y_test, used)]
    name, attack, few = "clean", study.build_attack("badnets", 28, 10), (x, y)
else:
    model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
start = time.perf_counter()
result = awm_fast.purify(model, few, seed=seed, **overrides)
history = result.history
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "before": percent(model, x_eval, y_eval, attack),
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "epochs": len(history), "suspect": history[0].get("suspect_class"),
                  "flip_shares": shares, "hunt_ce": [round(r["ascent_loss"], 2) for r in history],
                  "standout": history[-1].get("suspect_standout"),
                  "seconds": round(time.perf_counter() - start)}), flush=True)
