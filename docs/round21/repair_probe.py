# Does the clean term's own push on the masks cost the accuracy? AWM's mask step descends α·clean + (1−α)·trigger.
# The trigger term shrinks the weights the hunted trigger uses; the clean term repairs what that costs, but it can
# also push masks down by itself, to fit the ten images and their copies (round 5: "fitting the copies' labels is
# a form of fine-tuning that forgets"). This probe splits the two gradients and lets the clean term only raise
# masks ("repair"), or push one down only where the trigger term pushes it down too ("gated"):
#   repair: g = g_trigger + min(g_clean, 0)
#   gated:  g = g_trigger + g_clean · [g_clean < 0 or g_trigger > 0]
# Everything else is the default. It prints one JSON line per variant: ACC/ASR after, the share of masks below
# 0.9, the epochs run, seconds, and (split variants) the share of the summed downward push that came from each term.
#   python repair_probe.py MODEL ATTACK:SEED VARIANT [VARIANT ...] ['json overrides']  (VARIANT: default, repair, gated)
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case, percent

import awm_fast
from awm_fast.loop import AWMLoop

ORIGINAL = AWMLoop._mask_backward_batched
PUSH = {"clean": 0.0, "trigger": 0.0}  # summed positive (mask-lowering) gradient of each term, over all steps


def split_backward(variant):
    """A _mask_backward_batched that computes the clean and the trigger gradients apart and combines them."""

    def backward(self, rows, triggers, alpha):
        clean_term, _ = ORIGINAL(self, rows, triggers, 1.0)  # gradient of the clean term alone
        g_clean = [alpha * m.grad.clone() for m in self.masks]
        for m in self.masks:
            m.grad.zero_()
        _, trigger_term = ORIGINAL(self, rows, triggers, 0.0)  # gradient of the trigger term alone
        for m, gc in zip(self.masks, g_clean, strict=True):
            gt = (1 - alpha) * m.grad
            PUSH["clean"] += float(gc.clamp_min(0).sum())
            PUSH["trigger"] += float(gt.clamp_min(0).sum())
            keep = gc < 0 if variant == "repair" else (gc < 0) | (gt > 0)
            m.grad.copy_(gt + gc * keep)
        return clean_term, trigger_term

    return backward


model_name, case, *variants = sys.argv[1:]
overrides = json.loads(variants.pop()) if variants[-1].startswith("{") else {}
name, seed, model, attack, few, (x_eval, y_eval) = fashion_case(model_name, case)
for variant in variants:
    AWMLoop._mask_backward_batched = ORIGINAL if variant == "default" else split_backward(variant)
    PUSH.update(clean=0.0, trigger=0.0)
    start = time.perf_counter()
    result = awm_fast.purify(model, few, seed=seed, **overrides)
    seconds = time.perf_counter() - start
    all_masks = torch.cat([m.flatten() for m in result.masks.values()])
    total = PUSH["clean"] + PUSH["trigger"]
    print(json.dumps({"model": model_name, "case": case, "variant": variant, "overrides": overrides,
                      "after": percent(result.model, x_eval, y_eval, attack),
                      "below_0.9": round(float((all_masks < 0.9).float().mean()), 4),
                      "epochs": len(result.history), "seconds": round(seconds),
                      "clean_push_share": round(PUSH["clean"] / total, 3) if total else None}), flush=True)
