# Does a mask step that moves the masks in proportion to their gradient keep more accuracy than Adam's per-element
# pace? Purify with Adam's second moment shared over each mask tensor (the step is lr * m_hat / sqrt(mean v_hat),
# so an element with ten times the layer's typical gradient moves ten times as far and a quiet one hardly moves),
# everything else the default:  python layer_scale_probe.py MODEL ATTACK:SEED ['json overrides']
# Prints one JSON line: ACC/ASR after, the share of masks below 0.9 and 0.5, the last hunt's loss.
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent

import awm_fast
from awm_fast.loop import AWMLoop


class LayerScaledAdam(torch.optim.Optimizer):
    """Adam (β 0.9, 0.999, bias-corrected) whose second moment is one number per tensor: the mean of g²."""

    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr, betas=(0.9, 0.999), eps=1e-8))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros((), device=p.device)
                state["t"] += 1
                state["m"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["v"].mul_(beta2).add_(p.grad.pow(2).mean(), alpha=1 - beta2)
                m_hat = state["m"] / (1 - beta1 ** state["t"])
                v_hat = state["v"] / (1 - beta2 ** state["t"])
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))


AWMLoop._adam = lambda self, lr: LayerScaledAdam(self.masks, lr)

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
result = awm_fast.purify(model, few, seed=seed, **overrides)
all_masks = torch.cat([m.flatten() for m in result.masks.values()])
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides, "optimizer": "layer-scaled",
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "below_0.9": round(float((all_masks < 0.9).float().mean()), 4),
                  "below_0.5": round(float((all_masks < 0.5).float().mean()), 4),
                  "last_hunt": round(result.history[-1]["ascent_loss"], 3),
                  "epochs": len(result.history)}), flush=True)
