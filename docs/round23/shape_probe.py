# The first hunt's trigger on the unmasked model, and how compact it is: one purify epoch (no extra, residual or
# check epochs) on a cached Fashion-MNIST model, then the trigger's per-pixel magnitude a = sum_c |delta| and
#   window_share: the largest share of sum(a) inside one k x k window (k = side // 4: 7 px on 28x28), as purify's
#     history records it (trigger_window_share; the first runs on record computed the same formula in the probe),
#   pixels: the participation count (sum a)^2 / sum a^2 (how many pixels carry it),
#   ascent_loss: the epoch's hunt, cross-entropy to the suspect.
#   AWM_CACHE=DIR python shape_probe.py MODEL ATTACK:SEED ['json overrides']
# Prints one JSON line.
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast

model_name, name, seed, overrides, model, attack, few, _ = case_from_argv(sys.argv)
start = time.perf_counter()
settings = {"outer": 1, "extra_outer": 0, "residual_outer": 0, "residual_check": False, **overrides}
result = awm_fast.purify(model, few, seed=seed, **settings)
magnitude = result.trigger.abs().sum(0)  # [H, W]
total = magnitude.sum()
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "suspect": result.history[0].get("suspect_class"),
                  "l1": round(total.item(), 2), "window": max(2, min(magnitude.shape) // 4),
                  "window_share": round(result.history[0]["trigger_window_share"], 3),
                  "pixels": round((total**2 / (magnitude**2).sum()).item(), 1),
                  "ascent_loss": round(result.history[0]["ascent_loss"], 3),
                  "seconds": round(time.perf_counter() - start)}), flush=True)
