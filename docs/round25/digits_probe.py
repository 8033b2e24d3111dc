# The same on a cached 8x8 digits SmallCNN: AWM_CACHE=DIR python digits_probe.py ATTACK:SEED ['json overrides']
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case, percent

import awm_fast

name, seed = sys.argv[1].rsplit(":", 1)
overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
model, attack, few, (x_eval, y_eval) = load_case(name, int(seed), "digits", "small-cnn")
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    result = awm_fast.purify(model, few, seed=int(seed), **overrides)
history = result.history
print(json.dumps({"model": "digits", "case": sys.argv[1], "overrides": overrides,
                  "before": percent(model, x_eval, y_eval, attack),
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "epochs": len(history), "a2a": history[0].get("all_to_all"), "fd": history[0].get("feature_distill"),
                  "released": history[0].get("feature_released"), "bn_drift": history[0].get("bn_drift"),
                  "seconds": round(time.perf_counter() - start)}),
      flush=True)
