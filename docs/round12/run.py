# One purify of a cached Fashion-MNIST model: python run.py MODEL ATTACK:SEED ['json overrides']
# Prints ACC/ASR before and after on 2,000 held-out images, seconds, whether the all-to-all check fired, and the
# ACC/ASR per outer epoch (every 5th). MODEL: small-cnn (3-epoch models) or small-resnet (10-epoch models).
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
                         eval_fn=lambda m: study._metrics(m, x_eval[:500], y_eval[:500], attack), **overrides)
seconds = time.time() - start
after = study._metrics(result.model, x_eval, y_eval, attack)
trace = " ".join(f"{100 * r['acc']:.0f}/{100 * r['asr']:.0f}" for r in result.history[::5])
print(f"RESULT {model_name} {name} {seed} {json.dumps(overrides)} ACC {100 * before['acc']:.1f} -> "
      f"{100 * after['acc']:.1f} ASR {100 * before['asr']:.1f} -> {100 * after['asr']:.1f} {seconds:.0f} s "
      f"all_to_all {result.history[0].get('all_to_all')} suspect {result.history[0].get('suspect_class')} "
      f"[{trace}]", flush=True)
