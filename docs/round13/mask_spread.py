# How the masks spread after purify: python mask_spread.py MODEL ATTACK:SEED ['json overrides']
# ACC/ASR after (2,000 held-out images), then per masked layer the mean mask, its 1/10/50/90% quantiles, the share
# below 0.5 and the share left at exactly 1.
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast
from awm_fast import study

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
case = f"{name}:{seed}"
result = awm_fast.purify(model, few, seed=seed, verbose=False, **overrides)
after = study._metrics(result.model, x_eval, y_eval, attack)
print(f"RESULT {model_name} {case} {json.dumps(overrides)} ACC {100 * after['acc']:.1f} ASR {100 * after['asr']:.1f}")
for name, mask in result.masks.items():
    values = mask.flatten().float()
    quantiles = torch.quantile(values, torch.tensor([0.01, 0.1, 0.5, 0.9])).tolist()
    print(f"  {name} {tuple(mask.shape)} mean {values.mean():.3f} quantiles 1/10/50/90% "
          f"{' '.join(f'{q:.3f}' for q in quantiles)} below 0.5 {(values < 0.5).float().mean():.3f} "
          f"at 1 {(values == 1).float().mean():.3f}")
