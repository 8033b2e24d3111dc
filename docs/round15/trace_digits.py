# One digits purify, epoch by epoch: python trace_digits.py ATTACK:SEED ['json overrides'] (round 13's trace.py on the
# 8x8 digits SmallCNNs). Per outer epoch: the hunt's loss, the mask step's triggered and clean terms, the hunt's
# radius, the mean mask, and ACC/ASR on every test image not used for purify; then ACC/ASR after.
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

import awm_fast
from awm_fast import study

name, seed = sys.argv[1].rsplit(":", 1)
overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
model, attack, few, (x_eval, y_eval) = load_case(name, int(seed))
start = time.time()
result = awm_fast.purify(model, few, seed=int(seed), verbose=False,
                         eval_fn=lambda m: study._metrics(m, x_eval, y_eval, attack), **overrides)
after = study._metrics(result.model, x_eval, y_eval, attack)
for r in result.history:
    print(f"epoch {r['epoch']:2d} hunt {r['ascent_loss']:.3f} triggered {r['trigger_loss']:.3f} clean "
          f"{r['clean_loss']:.3f} radius {r.get('search_radius', 0):.0f} all-to-all {r.get('all_to_all', 0):.0f} "
          f"mask mean {r['mask_mean']:.3f} ACC {100 * r['acc']:.1f} ASR {100 * r['asr']:.1f}")
print(f"RESULT digits {name}:{seed} {json.dumps(overrides)} ACC {100 * after['acc']:.1f} ASR {100 * after['asr']:.1f} "
      f"{time.time() - start:.0f} s", flush=True)
