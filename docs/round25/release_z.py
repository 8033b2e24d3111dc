# Which penultimate features a trigger drives beyond its destination classes' own (PenultimateFeatures.release, z > 2),
# for the attack's true trigger and for the first hunt's, on 1,000 eval images and on the ten one-shot images:
#   AWM_CACHE=DIR python release_z.py ATTACK:SEED ...
import contextlib
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case

import awm_fast
from awm_fast.feature_distill import PenultimateFeatures


def released(model, x, y, triggered):
    features = PenultimateFeatures(model, x, 256, contextlib.nullcontext, torch.ones(len(x)))  # every image trusted
    z = features.release(model, triggered, y, 2.0, 256, contextlib.nullcontext)
    features.close()
    return sorted((z > 2.0).nonzero().flatten().tolist())


def first_hunt(case):
    """(attack, one-shot images, eval images, the first hunt's trigger [C, H, W]) of a cached Fashion-MNIST SmallCNN."""
    name, seed, model, attack, few, (x_eval, y_eval) = fashion_case("small-cnn", case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = awm_fast.purify(model, few, seed=seed, outer=1, extra_outer=0, residual_outer=0, residual_check=False)
    return model, attack, few, (x_eval[:1000], y_eval[:1000]), first.trigger


if __name__ == "__main__":
    for case in sys.argv[1:]:
        model, attack, few, evaluation, trigger = first_hunt(case)
        for label, (x, y) in (("eval", evaluation), ("one-shot", few)):
            true = released(model, x, y, attack.apply(x))
            hunted = released(model, x, y, (x + trigger).clamp(0, 1))
            print(case, label, "true trigger:", true, "first hunt's:", hunted, flush=True)
