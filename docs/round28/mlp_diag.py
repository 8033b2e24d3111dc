# Where an MLP's one-shot hunt and masks act against a patch backdoor: the hunted trigger's L1 share on the patch's
# pixels (first and last epoch), the first Linear layer's mean mask on the columns that read the patch against the
# rest, and the real trigger's mean cross-entropy to the target on the search images before/after.
#   AWM_CACHE=DIR python docs/round28/mlp_diag.py ATTACK:SEED ['json overrides']
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent

import awm_fast

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(["", "mlp", *sys.argv[1:]])
x, y = few
probe = torch.zeros(1, *x.shape[1:])
region = (attack.apply(probe) != probe)[0]  # [C, H, W] the pixels the trigger writes (on a black image)
first = awm_fast.purify(model, few, seed=seed, **{**overrides, "outer": 1, "residual_check": False, "extra_outer": 0})
result = awm_fast.purify(model, few, seed=seed, **overrides)


def share(trigger):
    mass = trigger.abs()
    return round(float(mass[region].sum() / mass.sum()), 3)


def target_ce(net):
    with torch.no_grad():
        logits = net(attack.apply(x_eval[:500]))
    return round(float(F.cross_entropy(logits, torch.zeros(500, dtype=torch.long))), 2)


def hunted_asr(net, trigger):
    keep = y_eval[:500] != 0
    with torch.no_grad():
        sent = net((x_eval[:500][keep] + trigger).clamp(0, 1)).argmax(1)
    return round(float((sent == 0).float().mean()), 3)


first_layer = next(name for name in result.masks if name.endswith("weight"))
mask = result.masks[first_layer]  # [256, 784]
columns = region.reshape(-1)
print(json.dumps({"case": f"{name}:{seed}", "overrides": overrides,
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "trigger_share_first": share(first.trigger), "trigger_share_last": share(result.trigger),
                  "trigger_l1_last": round(float(result.trigger.abs().sum()), 1),
                  "patch_pixels": int(columns.sum()),
                  "mask_patch_cols": round(float(mask[:, columns].mean()), 3),
                  "mask_other_cols": round(float(mask[:, ~columns].mean()), 3),
                  "real_ce_before": target_ce(model), "real_ce_after": target_ce(result.model),
                  "hunted_asr_last": hunted_asr(result.model, result.trigger), "epochs": len(result.history)}))
