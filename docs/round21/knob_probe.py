# One default purify with overrides on a cached Fashion-MNIST model, with what its history says: the suspect, the last
# hunts' cross-entropy to it (purify's extra epochs and warning use 1 as the bar), the masks' final mean, and the
# residual check's ratio (None where it did not run), and the feature pull's gate (round 23: the first hunt's
# trigger_window_share and the pull's weight in effect; None where there was none); since round 25 also whether the hunt
# took the all-to-all objective, its radius every third epoch and the features the pull's release let go; since round
# 29 the BatchNorm penalty's weight in effect (None where it was off).
#   AWM_CACHE=DIR python knob_probe.py MODEL ATTACK:SEED ['json overrides']
# Prints one JSON line.
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent

import awm_fast

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
start = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = awm_fast.purify(model, few, seed=seed, **overrides)
history = result.history
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "mask_layers": result.config.mask_layers, "before": percent(model, x_eval, y_eval, attack),
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "epochs": len(history), "suspect": history[0].get("suspect_class"),
                  "last_hunts": [round(record["ascent_loss"], 2) for record in history[-3:]],
                  "mask_mean": round(history[-1]["mask_mean"], 3), "warnings": len(caught),
                  "suspect_standout": history[-1].get("suspect_standout"),
                  "window_share": history[0].get("trigger_window_share"),
                  "feature_distill": history[0].get("feature_distill"),
                  "all_to_all": history[0].get("all_to_all"),
                  "radii": [record.get("search_radius") for record in history][::3],
                  "released": history[0].get("feature_released"),
                  "bn_drift": history[0].get("bn_drift"),
                  "seconds": round(time.perf_counter() - start)}), flush=True)
