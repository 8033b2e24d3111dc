# The residual check's search (every class at twice the hunt's radius, on the purified model) read two ways: the
# landed ratio of cross-entropies (runner-up's over the suspect's) and the share of the search images each class's
# best trigger sends to that class (suspect's share over the runner-up's). Prints one JSON line per run.
#   AWM_CACHE=DIR python docs/round28/share_standout_probe.py MODEL ATTACK:SEED|clean:SEED ['json overrides']
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import percent
from loaded import load

from awm_fast import search as search_module

readings = []
standout = search_module.TargetedSearch.suspect_standout


def reading_standout(self, radius):
    ratio = standout(self, radius)
    saved = self.radius, self.generator
    self.radius = radius
    self.generator = torch.Generator().manual_seed(saved[1].initial_seed() + 2)
    restarts = self.cfg.trigger_restarts
    try:
        classes = self._classes_to_name(minimum=2)
        candidates, losses = self._descend(self._starting_candidates(classes.shape[0]),
                                           classes.repeat_interleave(restarts), search_module.TARGETED_STEPS)
    finally:
        self.radius, self.generator = saved
    best = losses.view(-1, restarts).argmin(dim=1)
    own = self._labels()
    shares = []
    for index, target in enumerate(classes.tolist()):
        trigger = candidates[index * restarts + int(best[index])]
        sent = self._labels(trigger)
        eligible = own != target
        shares.append(float((sent[eligible] == target).float().mean()))
    shares = torch.tensor(shares)
    suspect = classes.cpu() == self.suspect
    readings.append({"radius": radius, "ce_standout": round(ratio, 3),
                     "shares": [round(s, 3) for s in shares.tolist()],
                     "share_standout": round(float(shares[suspect].max() / shares[~suspect].max().clamp(min=1e-3)), 3)})
    return ratio


search_module.TargetedSearch.suspect_standout = reading_standout
if os.environ.get("RADIUS_FACTOR"):  # the check's radius over the hunt's (the landed 2)
    from awm_fast import loop
    loop.RESIDUAL_RADIUS_FACTOR = float(os.environ["RADIUS_FACTOR"])
model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = load(sys.argv)
import awm_fast  # noqa: E402

result = awm_fast.purify(model, few, seed=seed, **overrides)
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "before": percent(model, x_eval, y_eval, attack),
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "epochs": len(result.history), "suspect": result.history[0].get("suspect_class"),
                  "checks": readings}), flush=True)
