# Does a pull of every mask back toward 1 keep accuracy? After each Adam step, m += lr * PULL * (1 - m) (decoupled,
# like AdamW's weight decay but toward 1, at the step's decayed lr): a mask whose gradient keeps pushing it settles
# where the push balances the pull, and one pushed only now and then drifts back. Everything else the default:
#   python pull_probe.py MODEL ATTACK:SEED PULL ['json overrides']
# Prints one JSON line: ACC/ASR after, the share of masks below 0.9 and 0.5, the last hunt's loss.
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent

import awm_fast
from awm_fast.loop import AWMLoop

PULL = float(sys.argv.pop(3))


class PulledAdam(torch.optim.Adam):
    """torch's Adam, then every parameter moved PULL * lr of the way back to 1."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(1 - p, alpha=group["lr"] * PULL)
        return loss


AWMLoop._adam = lambda self, lr: PulledAdam(self.masks, lr=lr)

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
result = awm_fast.purify(model, few, seed=seed, **overrides)
all_masks = torch.cat([m.flatten() for m in result.masks.values()])
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides, "pull": PULL,
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "below_0.9": round(float((all_masks < 0.9).float().mean()), 4),
                  "below_0.5": round(float((all_masks < 0.5).float().mean()), 4),
                  "last_hunt": round(result.history[-1]["ascent_loss"], 3),
                  "epochs": len(result.history)}), flush=True)
