# Do the masks that barely moved cost accuracy? Purify with the default, then restore every mask at or above a
# threshold t to 1 (the weights the mask step hardly touched come back whole; the ones it cut keep their cut) and
# measure again:  python snap_probe.py MODEL ATTACK:SEED ['json overrides']
# Prints one JSON line: ACC/ASR of the default's masks, of each snapped variant, and the share of masks below t.
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, masked_copy, percent

import awm_fast

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
before = percent(model, x_eval, y_eval, attack)
result = awm_fast.purify(model, few, seed=seed, **overrides)
masks = result.masks
all_masks = torch.cat([m.flatten() for m in masks.values()])
row = {"model": model_name, "case": f"{name}:{seed}", "overrides": overrides, "before": before,
       "after": percent(result.model, x_eval, y_eval, attack),
       "refolded": percent(masked_copy(model, masks), x_eval, y_eval, attack),  # must equal "after"
       "last_hunt": round(result.history[-1]["ascent_loss"], 3)}
for t in THRESHOLDS:
    snapped = {k: torch.where(m >= t, torch.ones_like(m), m) for k, m in masks.items()}
    row[f"snap_{t}"] = percent(masked_copy(model, snapped), x_eval, y_eval, attack)
    row[f"below_{t}"] = round(float((all_masks < t).float().mean()), 4)
print(json.dumps(row), flush=True)
