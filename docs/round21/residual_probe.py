# Where BadNets' last points of ASR sit: after the default purify, per source class, how often the triggered image
# goes to the target (the ASR's share) and how often the CLEAN image already does (a shift of the class boundary
# toward the target, which counts toward ASR without any backdoor). Same for the original and, where cached, the
# never-poisoned model of the same seed.
#   python residual_probe.py MODEL ATTACK:SEED
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case

import awm_fast


@torch.no_grad()
def to_target(model, x, y, attack):
    """Per source class (not the target): (share of clean images predicted as the target, share of triggered ones)."""
    target = attack.target
    keep = y != target
    x, y = x[keep], y[keep]
    clean = model(x).argmax(1) == target
    triggered = model(attack.apply(x)).argmax(1) == target
    def shares(rows):
        return round(100 * float(clean[rows].float().mean()), 1), round(100 * float(triggered[rows].float().mean()), 1)

    per_class = {c: shares(y == c) for c in y.unique().tolist()}
    return {**per_class, "all": shares(torch.ones_like(y, dtype=torch.bool))}


name, seed, model, attack, few, (x_eval, y_eval) = fashion_case(sys.argv[1], sys.argv[2])
result = awm_fast.purify(model, few, seed=seed)
print(json.dumps({"case": sys.argv[2], "target": attack.target,
                  "original": to_target(model, x_eval, y_eval, attack),
                  "purified": to_target(result.model, x_eval, y_eval, attack)}), flush=True)
