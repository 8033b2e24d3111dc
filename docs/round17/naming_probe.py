# The first outer epoch of today's default on cached Fashion-MNIST models: every class's reach (the mean
# cross-entropy of the naming search's best candidate for it), the suspect, and whether the all-to-all check fires.
# One JSON line per model:
#   AWM_CACHE=/tmp/r17/cache python naming_probe.py MODEL ATTACK_SPEC:SEED ['json overrides']
#   python naming_probe.py digits ATTACK_SPEC:SEED      (the 8x8 digits SmallCNNs)
# A spy on the naming search's descent records its losses; it changes nothing purify computes.
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, load_case

import awm_fast
from awm_fast import search

if sys.argv[1] == "digits":
    (name, seed), model_name, overrides = sys.argv[2].rsplit(":", 1), "digits", {}
    seed = int(seed)
    model, attack, few, _ = load_case(name, seed, "digits")
else:
    model_name, name, seed, overrides, model, attack, few, _ = case_from_argv(sys.argv)
calls = []
descend = search.TargetedSearch._descend


def spy(self, candidates, classes, steps, *args, **kwargs):
    out = descend(self, candidates, classes, steps, *args, **kwargs)
    if self.suspect is None and classes is not None and not calls:  # the naming search
        calls.append({"classes": classes.tolist(), "losses": out[1].tolist()})
    return out


search.TargetedSearch._descend = spy
result = awm_fast.purify(model, few, seed=seed, verbose=False, outer=1, **overrides)
first = result.history[0]
reach = {}
if calls:
    for cls, loss in zip(calls[0]["classes"], calls[0]["losses"], strict=True):
        reach[cls] = min(reach.get(cls, float("inf")), loss)
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "suspect": int(first["suspect_class"]),
                  "all_to_all": bool(first["all_to_all"]), "reach": reach}), flush=True)
