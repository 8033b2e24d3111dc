# Where the ASR left after purify lives: python residual.py MODEL ATTACK:SEED ['json overrides']
# Per source class of the held-out images (2,000, the tables' evaluation set): the attack's success, the shift of the
# target logit that the real trigger causes (triggered minus clean), the clean error, and how many of the successes
# are images the model already gets wrong without the trigger; then where clean images of classes 2, 3 and 6 go.
# Before and after purify (defaults unless overridden). All-to-one attacks only.
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
case = f"{name}:{seed}"
result = awm_fast.purify(model, few, seed=seed, verbose=False, **overrides)


@torch.no_grad()
def report(network, label):
    network.eval()
    targets = attack.target_labels(y_eval)
    keep = targets != y_eval
    labels, target = y_eval[keep], targets[keep]
    triggered, clean = network(attack.apply(x_eval[keep])), network(x_eval[keep])
    hit = triggered.argmax(1) == target
    wrong = clean.argmax(1) != labels
    shift = (triggered.gather(1, target[:, None]) - clean.gather(1, target[:, None])).squeeze(1)
    print(f"{label}: ASR {100 * hit.float().mean():.1f}, clean error {100 * wrong.float().mean():.1f}, "
          f"target-logit shift mean {shift.mean():.2f}; successes on clean-wrong images {int((hit & wrong).sum())} "
          f"of {int(hit.sum())}")
    for c in range(int(y_eval.max()) + 1):
        rows = labels == c
        if rows.any():
            print(f"  class {c}: n {int(rows.sum())} ASR {100 * hit[rows].float().mean():.1f} shift "
                  f"{shift[rows].mean():.2f} clean error {100 * wrong[rows].float().mean():.1f} successes on "
                  f"clean-wrong {int((hit[rows] & wrong[rows]).sum())}")
    predicted = clean.argmax(1)
    for c in (2, 3, 6):
        print(f"  clean class {c} predicted as", torch.bincount(predicted[labels == c], minlength=10).tolist())


print(f"{model_name} {case} {json.dumps(overrides)}")
report(model, "before")
report(result.model, "after")
