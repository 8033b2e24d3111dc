# How far a trigger drives each penultimate feature beyond the suspect's (the target's) own images, in units of the
# feature's spread over all images: the top 8 z and their features, and how many pass 0.5, 1 and 2; for the true
# trigger and the first hunt's, on 1,000 eval images and on the ten one-shot images (all-to-one attacks):
#   AWM_CACHE=DIR python suspect_z.py ATTACK:SEED ...
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from release_z import first_hunt

from awm_fast.feature_distill import last_linear


def features(model, x):
    """The input of the model's last Linear layer on x: [N, F]."""
    latest = {}
    hook = last_linear(model).register_forward_hook(lambda module, inputs, output: latest.update(f=inputs[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    return latest["f"]


for case in sys.argv[1:]:
    model, attack, few, evaluation, trigger = first_hunt(case)
    for label, (x, y) in (("eval", evaluation), ("one-shot", few)):
        for kind, triggered in (("true", attack.apply(x)), ("hunted", (x + trigger).clamp(0, 1))):
            clean, moved = features(model, x), features(model, triggered)
            z = (moved[y != attack.target].mean(0) - clean[y == attack.target].mean(0)) / (clean.std(0) + 1e-6)
            top, index = z.sort(descending=True)
            print(case, label, kind, [round(v, 1) for v in top[:8].tolist()], index[:8].tolist(),
                  *(f"n>{bar}: {int((z > bar).sum())}" for bar in (0.5, 1, 2)), flush=True)
