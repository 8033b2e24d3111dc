# One purify with today's default, epoch by epoch, on the tables' 2,000 evaluation images:
#   python trace.py MODEL ATTACK:SEED ['json overrides']
# Prints one JSON line per model: the history (hunt loss, its radius, whether the hunt is all-to-all, mean mask,
# ACC/ASR after each outer epoch on the SAME 2,000 images as the tables) and ACC/ASR before and after. Stopping
# after epoch e gives exactly the state the history records at e (no later draw reaches back), so stopping
# rules can be scored on these traces without rerunning purify (stop_rules.py).
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast
from awm_fast import study

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
before = study._metrics(model, x_eval, y_eval, attack)
start = time.time()
result = awm_fast.purify(model, few, seed=seed, verbose=False,
                         eval_fn=lambda m: study._metrics(m, x_eval, y_eval, attack), **overrides)
seconds = time.time() - start
after = study._metrics(result.model, x_eval, y_eval, attack)
keys = ("epoch", "ascent_loss", "trigger_loss", "clean_loss", "search_radius", "all_to_all", "suspect_class",
        "mask_mean", "acc", "asr")
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "before": before, "after": after, "seconds": seconds,
                  "history": [{key: r[key] for key in keys if key in r} for r in result.history]}), flush=True)
