# Is the accuracy a ResNet loses in purify a BatchNorm-statistics effect? python bn_recalibration.py ATTACK:SEED
# Purifies the cached 3-epoch small-resnet (docs/round5/cases.py) with the defaults, then re-estimates every
# BatchNorm's running statistics (a diagnostic only: it needs data purify does not have) on 2,000 unused training
# images and on the ten one-shot images, and prints ACC/ASR of each model on 1,000 held-out test images.
import copy
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import _split, load_case, percent

import awm_fast

attack_name, seed = sys.argv[1].rsplit(":", 1)
model, attack, (x, y), evaluation = load_case(attack_name, int(seed), "fashion-mnist", "small-resnet", eval_images=1000)
unused_train = _split("fashion-mnist").x_train[12000:14000]  # the models saw the first 12,000


def recalibrated(model, images):
    """A copy of `model` whose BatchNorm running statistics are the plain averages over `images`."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for chunk in images.split(250):
            model(chunk)
    return model.eval()


purified = awm_fast.purify(model, (x, y), backend="torch", seed=int(seed)).model
candidates = (("before", model), ("before, BN on 2,000 training images", recalibrated(model, unused_train)),
              ("after", purified), ("after, BN on 2,000 training images", recalibrated(purified, unused_train)),
              ("after, BN on the 10 one-shot images", recalibrated(purified, x)))
for name, candidate in candidates:
    print(f"{sys.argv[1]} {name}: {percent(candidate, *evaluation, attack)}", flush=True)
