# Why warp_mask_pull=5 costs accuracy on 8x8 digits: the default and the pull on one digits model, with what the
# search named, how many extra epochs ran, the hunt's cross-entropy per epoch (ascent_loss) and the masks' final mean.
#   AWM_CACHE=DIR python pull_travel_probe.py ATTACK SEED        (the digits model cache of the study's --cache DIR)
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case, percent

import awm_fast

attack_name, seed = sys.argv[1], int(sys.argv[2])
model, attack, few, (x_eval, y_eval) = load_case(attack_name, seed, "digits")
for pull in (0.0, 5.0):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = awm_fast.purify(model, few, seed=seed, warp_mask_pull=pull)
    history = result.history
    print(json.dumps({"case": f"{attack_name}:{seed}", "warp_mask_pull": pull, "epochs": len(history),
                      "extra": sum(1 for record in history if record.get("extra") == 1.0),
                      "suspect_class": history[0]["suspect_class"], "all_to_all": history[0]["all_to_all"],
                      "ascent_loss": [round(record["ascent_loss"], 2) for record in history],
                      "mask_mean": round(history[-1]["mask_mean"], 4),
                      "acc_asr": percent(result.model, x_eval, y_eval, attack), "warnings": len(caught)}), flush=True)
