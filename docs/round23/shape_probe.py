# The first hunt's trigger on the unmasked model, and how compact it is: one purify epoch (no extra, residual or
# check epochs) on a cached Fashion-MNIST model, then the trigger's per-pixel magnitude a = sum_c |delta| and
#   window_share: the largest share of sum(a) inside one k x k window (k = side // 4: 7 px on 28x28),
#   pixels: the participation count (sum a)^2 / sum a^2 (how many pixels carry it),
#   hits: how often the epoch's hunt reached the suspect (history's ascent loss, cross-entropy to the suspect).
#   AWM_CACHE=DIR python shape_probe.py MODEL ATTACK:SEED ['json overrides']
# Prints one JSON line.
import json
import os
import sys
import time

import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast

model_name, name, seed, overrides, model, attack, few, _ = case_from_argv(sys.argv)
start = time.perf_counter()
settings = {"outer": 1, "extra_outer": 0, "residual_outer": 0, "residual_check": False, **overrides}
result = awm_fast.purify(model, few, seed=seed, **settings)
magnitude = result.trigger.abs().sum(0)  # [H, W]
side = min(magnitude.shape)
k = max(2, side // 4)
windows = F.avg_pool2d(magnitude[None, None], k, stride=1) * k * k
total = magnitude.sum()
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "suspect": result.history[0].get("suspect_class"),
                  "l1": round(total.item(), 2), "window": k,
                  "window_share": round((windows.max() / total).item(), 3),
                  "pixels": round((total**2 / (magnitude**2).sum()).item(), 1),
                  "ascent_loss": round(result.history[0]["ascent_loss"], 3),
                  "keys": sorted(result.history[0]),
                  "seconds": round(time.perf_counter() - start)}), flush=True)
