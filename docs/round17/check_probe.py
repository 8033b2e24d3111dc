# What the all-to-all check sees on cached Fashion-MNIST models: for each radius at which its last universal search
# ends without a sink, the source -> destination classes of the images that trigger moves (the input of the rule's
# channel count), printed as one JSON line per model:
#   AWM_CACHE=/tmp/r17/cache python check_probe.py MODEL ATTACK_SPEC:SEED
# Runs purify's first outer epoch with today's default; the spy changes nothing it computes.
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast
from awm_fast import search

model_name, name, seed, overrides, model, attack, few, _ = case_from_argv(sys.argv)
seen = []
channels, at_radius = search._channels, search.TargetedSearch._check_all_to_all_at_radius


def spy_channels(source, destination, num_classes):
    value = channels(source, destination, num_classes)
    seen[-1]["pairs"] = [[int(s), int(d)] for s, d in zip(source.tolist(), destination.tolist(), strict=True)]
    seen[-1]["channels"] = value
    return value


def spy_radius(self):
    seen.append({"radius": self.radius, "images": int(self.x.shape[0]), "suspect": self.suspect})
    found = at_radius(self)
    seen[-1]["fired"] = found is not None
    seen[-1]["staying"] = list(self.staying) if found is not None else None
    return found


search._channels, search.TargetedSearch._check_all_to_all_at_radius = spy_channels, spy_radius
result = awm_fast.purify(model, few, seed=seed, verbose=False, outer=1, **overrides)
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "checks": seen}), flush=True)
