# ACC/ASR after every outer epoch of one purify: python trajectory.py MODEL ATTACK:SEED ['json overrides']
# MODEL: small-cnn or small-resnet; the cached Fashion-MNIST model of docs/round5/cases.py trained for EPOCHS
# (environment, default 3) epochs, one clean image per class, 1,000 held-out test images to evaluate.
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

import awm_fast
from awm_fast import study

model_name, (attack_name, seed) = sys.argv[1], sys.argv[2].rsplit(":", 1)
overrides = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
model, attack, (x, y), (x_eval, y_eval) = load_case(attack_name, int(seed), "fashion-mnist", model_name,
                                                    int(os.environ.get("EPOCHS", 3)), eval_images=1000)


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
