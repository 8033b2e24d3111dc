# One purify, epoch by epoch: python trace.py MODEL ATTACK:SEED ['json overrides']
# Per outer epoch: the hunt's loss (cross-entropy to the suspect, or of leaving for all-to-all), the mask step's
# triggered and clean terms, the hunt's radius, the mean mask, and ACC/ASR on 1,000 held-out images; then ACC/ASR
# after on the tables' 2,000.
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast
from awm_fast import study

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
case = f"{name}:{seed}"
start = time.time()
result = awm_fast.purify(model, few, seed=seed, verbose=False,
                         eval_fn=lambda m: study._metrics(m, x_eval[:1000], y_eval[:1000], attack), **overrides)
after = study._metrics(result.model, x_eval, y_eval, attack)
for r in result.history:
    print(f"epoch {r['epoch']:2d} hunt {r['ascent_loss']:.3f} triggered {r['trigger_loss']:.3f} clean "
          f"{r['clean_loss']:.3f} radius {r.get('search_radius', 0):.0f} mask mean {r['mask_mean']:.3f} "
          f"ACC {100 * r['acc']:.1f} ASR {100 * r['asr']:.1f}")
print(f"RESULT {model_name} {case} {json.dumps(overrides)} ACC {100 * after['acc']:.1f} ASR {100 * after['asr']:.1f} "
      f"{time.time() - start:.0f} s")
