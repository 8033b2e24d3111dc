# Does averaging the masks of several purify runs (different `seed`: other augmented copies, other trigger starts)
# keep more accuracy than one run? A shrink the backdoor forces should recur in every run; one that a run's own
# copies and trigger noise cause should not, and averaging dilutes it:
#   python ensemble_probe.py MODEL ATTACK:SEED [RUNS] ['json overrides']
# Prints one JSON line: ACC/ASR of each run alone, of the mean, of the geometric mean and of the element-wise max
# of the masks (max keeps only the shrink every run agrees on, median the shrink most runs agree on); saves the
# runs' masks to $MASKS_DIR (default /tmp).
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case, masked_copy, percent

import awm_fast

model_name, case = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
name, seed, model, attack, few, (x_eval, y_eval) = fashion_case(model_name, case)
row = {"model": model_name, "case": case, "runs": runs, "overrides": overrides,
       "before": percent(model, x_eval, y_eval, attack)}
all_masks = []
for run in range(runs):
    result = awm_fast.purify(model, few, seed=seed + 1000 * run, **overrides)
    all_masks.append(result.masks)
    row[f"run_{run}"] = percent(result.model, x_eval, y_eval, attack)
    print(json.dumps(row), file=sys.stderr, flush=True)
torch.save(all_masks, os.path.join(os.environ.get("MASKS_DIR", "/tmp"), f"masks_{model_name}_{case}_{runs}.pt"))
combine = {"mean": lambda s: s.mean(0), "geomean": lambda s: s.clamp_min(1e-6).log().mean(0).exp(),
           "median": lambda s: s.median(0).values, "max": lambda s: s.max(0).values}
for label, reduce in combine.items():
    masks = {k: reduce(torch.stack([m[k] for m in all_masks])) for k in all_masks[0]}
    row[label] = percent(masked_copy(model, masks), x_eval, y_eval, attack)
print(json.dumps(row), flush=True)
