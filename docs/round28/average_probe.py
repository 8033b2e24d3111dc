# Averaged masks: one default purify that keeps every outer epoch's masks, then ACC / ASR of the model under the final
# masks (the landed result), the mean masks of the last k epochs (k = 3, 5, 10) and an exponential average (0.7 per
# epoch), all on the same run. Mask averaging smooths the stochastic minimax's last iterates (the few-shot minibatches,
# the hunt's restarts); ASR moves non-monotonically over the epochs (docs/EFFICACY.md, round 27's trajectories).
#   AWM_CACHE=DIR python docs/round28/average_probe.py MODEL ATTACK:SEED|clean:SEED ['json overrides']
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import masked_copy, percent
from loaded import load

import awm_fast
from awm_fast import loop

snapshots = []
epoch = loop.AWMLoop._epoch


def snapshotting_epoch(self, *args, **kwargs):
    out = epoch(self, *args, **kwargs)
    snapshots.append([m.detach().clone() for m in self.masks])
    return out


loop.AWMLoop._epoch = snapshotting_epoch

# WARMUP=W (probe): the first W mask steps run at lr_mask · k / W (k = 1..W). Adam's first steps move every mask with
# any gradient by about lr whatever the gradient's size (its second moment is one sample), so the first epoch's five
# steps can shift every mask by up to 5 · lr_mask at once.
WARMUP = int(os.environ.get("WARMUP", "0"))
mask_step, steps_taken = loop.AWMLoop._mask_step, [0]


def warming_mask_step(self, optimizer, rows, triggers):
    steps_taken[0] += 1
    if steps_taken[0] > WARMUP or triggers is None:
        return mask_step(self, optimizer, rows, triggers)
    saved = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * steps_taken[0] / WARMUP
    try:
        return mask_step(self, optimizer, rows, triggers)
    finally:
        for group, lr in zip(optimizer.param_groups, saved, strict=True):
            group["lr"] = lr


if WARMUP:
    loop.AWMLoop._mask_step = warming_mask_step
model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = load(sys.argv)
start = time.perf_counter()
result = awm_fast.purify(model, few, seed=seed, **overrides)
names = list(result.masks)


def scored(masks):
    return percent(masked_copy(model, dict(zip(names, masks, strict=True))), x_eval, y_eval, attack)


def mean_of(group):
    return [torch.stack(layer).mean(dim=0) for layer in zip(*group, strict=True)]


ema = snapshots[0]
for snap in snapshots[1:]:
    ema = [0.7 * a + 0.3 * b for a, b in zip(ema, snap, strict=True)]
row = {"model": model_name, "case": f"{name}:{seed}", "overrides": overrides, "warmup": WARMUP,
       "before": percent(model, x_eval, y_eval, attack), "after": percent(result.model, x_eval, y_eval, attack),
       "final_snapshot": scored(snapshots[-1]), "epochs": len(snapshots),
       **{f"last{k}": scored(mean_of(snapshots[-k:])) for k in (3, 5, 10)}, "ema0.7": scored(ema),
       "trajectory": [scored(s) for s in snapshots], "hunt_ce": [round(r["ascent_loss"], 2) for r in result.history],
       "seconds": round(time.perf_counter() - start)}
print(json.dumps(row), flush=True)
