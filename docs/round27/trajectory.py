# One purify with ACC/ASR after every outer epoch and the warp check's reach of the suspect then: the mean
# cross-entropy to the suspect class that half-pixel smooth warps (awm_fast.warp, WARP_STEPS Adam steps) reach from
# the few-shot images on the masked model; low = the warping backdoor is there. Label-free, unlike ACC/ASR.
#   AWM_CACHE=DIR python docs/round27/trajectory.py MODEL ATTACK:SEED ['json overrides']  -> one JSON line
# With COPIES=runner-up the copies sent to the warp suspect are kept only where, the suspect aside, the model still
# ranks the copy's own label first (the probe of round 27, runner_up_consistent below). With WARP_COPIES=1 the images
# warped by the warp check's own flow field for the suspect (fitted once on the original model over the kept images,
# as the check fits it) that the model sends to the suspect are added with their own labels (warp.warped_copies).
import importlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv

import awm_fast
from awm_fast import inputs, metrics, warp

purify_module = importlib.import_module("awm_fast.purify")  # awm_fast.purify is the function


def runner_up_consistent(model, x, y, copies, generator=None, pool=inputs.CONSISTENT_POOL, suspect=None,
                         suspect_runner_up=True):
    """inputs.augment_one_shot_consistent with its runner-up rule on the copies sent to the suspect. The probe ran with
    its own copy of the rule, which became suspect_runner_up (the same candidates, the same test)."""
    return inputs.augment_one_shot_consistent(model, x, y, copies, generator, pool, suspect, suspect_runner_up=True)


def with_warped_copies(consistent):
    """consistent's kept images, plus those of them the suspect's fitted flow field warps to the suspect
    (warp.warped_copies, which the probe's own copy of this step became)."""
    def augment(model, x, y, copies, generator=None, pool=inputs.CONSISTENT_POOL, suspect=None,
                suspect_runner_up=False):
        kept_x, kept_y = consistent(model, x, y, copies, generator, pool, suspect)
        if suspect is None:
            return kept_x, kept_y
        resolved = awm_fast.AWMConfig().resolve(x[0].numel(), len(x))
        with_x, with_y = warp.warped_copies(model, kept_x, kept_y, suspect, resolved)
        print(f"[probe] added {len(with_x) - len(kept_x)} of {len(kept_x)} warped images sent to class {suspect}",
              file=sys.stderr)
        return with_x, with_y
    return augment


copies_rule = os.environ.get("COPIES", "landed")
if copies_rule == "runner-up":
    purify_module.augment_one_shot_consistent = runner_up_consistent
if os.environ.get("WARP_COPIES") == "1":
    copies_rule += " + warped"
    purify_module.augment_one_shot_consistent = with_warped_copies(purify_module.augment_one_shot_consistent)
model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
x_few, _ = few
cfg = awm_fast.AWMConfig().resolve(x_few[0].numel(), len(x_few))
suspect = warp.warp_suspect(model, x_few, cfg)
rows = []


def warp_reach(masked):
    with torch.no_grad():
        own = masked(x_few).argmax(dim=1)
    # The loop calls eval_fn under no_grad; the masks' .grad this leaves, the next mask step's zero_grad clears.
    with torch.enable_grad():
        return float(warp._warp_losses(masked, x_few, own, torch.tensor([suspect]), cfg, warp.WARP_STEPS)[0])


def eval_fn(masked):
    acc = metrics.clean_accuracy(masked, x_eval, y_eval)
    asr = metrics.attack_success_rate(masked, x_eval, y_eval, attack)
    rows.append([round(100 * acc, 1), round(100 * asr, 1), None if suspect is None else round(warp_reach(masked), 2)])
    return {}


start = time.perf_counter()
result = awm_fast.purify(model, few, seed=seed, eval_fn=eval_fn, **overrides)
print(json.dumps({"case": f"{model_name}/{name}:{seed}", "copies": copies_rule, "overrides": overrides,
                  "suspect": suspect, "rows": rows, "hunts": [round(r["ascent_loss"], 2) for r in result.history],
                  "seconds": round(time.perf_counter() - start)}), flush=True)
