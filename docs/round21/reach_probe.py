# Is the backdoor's class still special after purify? On the purified model (the default's), every class gets the
# naming search's per-class trigger search (trigger_restarts candidates, TARGETED_STEPS steps; more steps with --steps)
# at several radii; a class's reach is the mean cross-entropy of its best candidate. If the suspect is still reached
# far more easily than every other class, what is left of the backdoor is still there for a larger hunt to find; if
# not, a larger trigger is only an adversarial one. Prints one JSON line per model: the ASR after, and per radius
# the suspect's reach and the runner-up's over the suspect's (the round-17 "stands out" ratio). Same for the
# original model (before purify) for scale.
#   AWM_CACHE=DIR python reach_probe.py MODEL ATTACK:SEED [RADIUS ...]       (default radii 20 40 80)
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case, percent

import awm_fast
from awm_fast.config import AWMConfig
from awm_fast.inputs import augment_one_shot_consistent
from awm_fast.search import TARGETED_STEPS, TargetedSearch

model_name, case, *radii = sys.argv[1:]
radii = [float(r) for r in radii] or [20.0, 40.0, 80.0]
name, seed, model, attack, (x, y), (x_eval, y_eval) = fashion_case(model_name, case)
result = awm_fast.purify(model, (x, y), seed=seed)
suspect = int(result.history[0]["suspect_class"])
search_x, _ = augment_one_shot_consistent(model, x, y, 9, torch.Generator().manual_seed(seed))


def reach(net, radius):
    """[classes] the best candidate's mean cross-entropy per class, at this L1 radius (per channel)."""
    cfg = AWMConfig(targeted_norm=radius, all_to_all_check=False).resolve(x[0].numel(), len(search_x))
    search = TargetedSearch(net, search_x, cfg, torch.Generator().manual_seed(seed))
    classes = torch.arange(int(y.max()) + 1)
    restarts = cfg.trigger_restarts
    candidates = search._random_candidates(len(classes) * restarts)
    candidates[::restarts] = 0.0
    _, losses = search._descend(candidates, classes.repeat_interleave(restarts), TARGETED_STEPS)
    return losses.view(len(classes), restarts).min(dim=1).values


row = {"model": model_name, "case": case, "suspect": suspect, "target": attack.target,
       "before": percent(model, x_eval, y_eval, attack), "after": percent(result.model, x_eval, y_eval, attack)}
for label, net in (("original", model), ("purified", result.model)):
    for radius in radii:
        losses = reach(net.eval().requires_grad_(False), radius)
        others = torch.cat([losses[:suspect], losses[suspect + 1:]])
        row[f"{label}_r{radius:g}"] = {"suspect_ce": round(float(losses[suspect]), 3),
                                       "ratio": round(float(others.min() / losses[suspect]), 2),
                                       "easiest": int(losses.argmin())}
print(json.dumps(row), flush=True)
