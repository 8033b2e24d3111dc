# Where the hunted trigger's mass sits: python trigger_probe.py MODEL ATTACK:SEED ['json overrides']
# Prints ACC/ASR after, and the share of the last hunted trigger's L1 norm inside the bottom-right k x k
# corner (k = 3, 6, 10) next to the corner's share of the image.
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent

import awm_fast

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
result = awm_fast.purify(model, few, seed=seed, **overrides)
trigger = result.trigger.abs().sum(0)  # [H, W]
total = float(trigger.sum())
side = trigger.shape[-1]
shares = {k: round(float(trigger[-k:, -k:].sum()) / total, 3) for k in (3, 6, 10)}
rows = trigger.sum(1)
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "after": percent(result.model, x_eval, y_eval, attack), "l1": round(total, 2),
                  "corner_share": shares, "area_share": {k: round(k * k / side ** 2, 3) for k in (3, 6, 10)}}))
