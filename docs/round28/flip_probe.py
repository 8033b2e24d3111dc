# Per epoch, the share of the search images (those the masked model does not already put in the suspect class) that
# the hunt's trigger sends to the suspect: a label-free reading of how much of the hunted backdoor still works, beside
# the mean cross-entropy that purify's extra epochs read. Prints one JSON line per run with the final ACC/ASR.
#   AWM_CACHE=DIR python docs/round28/flip_probe.py MODEL ATTACK:SEED|clean:SEED ['json overrides']
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import percent
from loaded import load

import awm_fast
from awm_fast import search as search_module

shares = []
recover = search_module.TargetedSearch.recover


def recording_recover(self):
    trigger, loss, suspect = recover(self)
    own, sent = self._labels(), self._labels(trigger[0])
    eligible = own != suspect
    shares.append(round(float((sent[eligible] == suspect).float().mean()), 3) if bool(eligible.any()) else None)
    return trigger, loss, suspect


search_module.TargetedSearch.recover = recording_recover

model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = load(sys.argv)
start = time.perf_counter()
result = awm_fast.purify(model, few, seed=seed, **overrides)
history = result.history
print(json.dumps({"model": model_name, "case": f"{name}:{seed}", "overrides": overrides,
                  "before": percent(model, x_eval, y_eval, attack),
                  "after": percent(result.model, x_eval, y_eval, attack),
                  "epochs": len(history), "suspect": history[0].get("suspect_class"),
                  "flip_shares": shares, "hunt_ce": [round(r["ascent_loss"], 2) for r in history],
                  "standout": history[-1].get("suspect_standout"),
                  "seconds": round(time.perf_counter() - start)}), flush=True)
