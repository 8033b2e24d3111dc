# ACC/ASR after every outer epoch of one purify: python trajectory.py MODEL ATTACK:SEED ['json overrides']
# MODEL: small-cnn or small-resnet (case.py: cached Fashion-MNIST model, one clean image per class, 1,000
# held-out test images to evaluate).
import json
import sys

from case import load

import awm_fast
from awm_fast import study

model_name, (attack_name, seed) = sys.argv[1], sys.argv[2].rsplit(":", 1)
overrides = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
model, attack, (x, y), (x_eval, y_eval) = load(model_name, attack_name, int(seed))


def evaluate(model):
    metrics = study._metrics(model, x_eval, y_eval, attack)
    return {"acc": metrics["acc"], "asr": metrics["asr"]}


before = evaluate(model)
print(f"{sys.argv[2]} {model_name} {json.dumps(overrides)} before: ACC {100 * before['acc']:.1f} "
      f"ASR {100 * before['asr']:.1f}")
result = awm_fast.purify(model, (x, y), backend="torch", seed=int(seed), eval_fn=evaluate, **overrides)
for record in result.history:
    print(f"  epoch {record['epoch']:2d}  mask mean {record['mask_mean']:.4f}  ACC {100 * record['acc']:.1f}  "
          f"ASR {100 * record['asr']:.1f}", flush=True)
