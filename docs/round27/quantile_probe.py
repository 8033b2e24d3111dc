# Probe (round 27, not adopted): once the suspect is named, the hunt descends the mean cross-entropy to the suspect of
# the easiest QUANTILE of the eligible search images only (a trigger that moves some images strongly, as a backdoor's
# leftover does, rather than every image a little). The naming search, the all-to-all check and the residual check are
# as landed. Runs docs/round21/knob_probe.py with the hunt so changed.
#   AWM_CACHE=DIR QUANTILE=0.25 python docs/round27/quantile_probe.py MODEL ATTACK:SEED ['json overrides']
import os
import runpy
import sys

import torch
import torch.nn.functional as F

from awm_fast import reach, search

QUANTILE = float(os.environ.get("QUANTILE", "0.25"))
landed_reach_losses = search.reach_losses
landed_recover = search.TargetedSearch.recover
hunting = {"on": False}


def quantile_reach_losses(model, inputs, classes, own, cfg, chunk):
    """reach_losses, averaging over the QUANTILE of each candidate's eligible images it reaches most easily now."""
    if not hunting["on"]:
        return landed_reach_losses(model, inputs, classes, own, cfg, chunk)
    k, u = classes.shape[0], own.shape[0]
    targets = classes.repeat_interleave(u)
    eligible = (own.repeat(k) != targets).view(k, u)
    with torch.no_grad():
        ce = torch.cat([F.cross_entropy(model(inputs[rows]).float(), targets[rows], reduction="none")
                        for rows in reach.chunks(inputs.shape[0], chunk)]).view(k, u)
    ce = ce.masked_fill(~eligible, torch.inf)
    easiest = torch.zeros_like(eligible)
    for row in range(k):
        count = int(eligible[row].sum())
        take = max(1, round(QUANTILE * count)) if count else 0
        easiest[row, ce[row].argsort()[:take]] = True

    def reaching(logits, rows):
        return F.cross_entropy(logits, targets[rows], reduction="none")

    return reach._mean_losses(model, inputs, easiest & eligible, reaching, cfg, chunk)


def recover(self):
    hunting["on"] = self.suspect is not None and not self.all_to_all  # the all-to-one hunt only, after naming
    try:
        return landed_recover(self)
    finally:
        hunting["on"] = False


search.reach_losses = quantile_reach_losses
search.TargetedSearch.recover = recover
sys.argv = [os.path.join(os.path.dirname(__file__), "..", "round21", "knob_probe.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
