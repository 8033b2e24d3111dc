# Hypothesis test: a mask on the INPUT FEATURES of the first Linear layer (one value per channel x position of
# the last feature map, shared by all output units) erases a backdoor that lives in that layer's position-specific
# weights. Emulated without new code: an identity Linear(F, F) is inserted before the first Linear and masked
# elementwise (its off-diagonal weights are 0, so its mask acts as one value per input feature).
#   python feature_mask_probe.py MODEL ATTACK:SEED ['json overrides']
# overrides may say "layers": "conv+features" (default) or "features" (the identity layer alone).
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent

import awm_fast

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
layers = overrides.pop("layers", "conv+features")
flatten_at = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Flatten)][0]
first = model.classifier[flatten_at + 1]
identity = nn.Linear(first.in_features, first.in_features, bias=False)
with torch.no_grad():
    identity.weight.copy_(torch.eye(first.in_features))
modules = list(model.classifier)
model.classifier = nn.Sequential(*modules[:flatten_at + 1], identity, *modules[flatten_at + 1:])
feature_layer = f"classifier.{flatten_at + 1}"
channels = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
mask_layers = {"conv+features": convs + [feature_layer], "features": [feature_layer]}[layers]
before = percent(model, x_eval, y_eval, attack)
result = awm_fast.purify(model, few, seed=seed, mask_layers=mask_layers, **overrides)
mask = result.masks[f"{feature_layer}.weight"].diagonal()
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "layers": layers, "overrides": overrides,
                  "before": before, "after": percent(result.model, x_eval, y_eval, attack),
                  "feature_mask_mean": round(float(mask.mean()), 3),
                  "feature_mask_below_half": int((mask < 0.5).sum()), "features": int(mask.numel()),
                  "last_hunt": round(result.history[-1]["ascent_loss"], 3),
                  # the last map's bottom-right cell, one feature per channel (a BadNets patch's corner)
                  "corner_cell_masks": [round(float(v), 2) for v in mask.view(channels, -1)[:, -1]]}), flush=True)
