# Probe: the feature pull (feature_distill_weight) minus the features the hunted trigger drives. After each epoch's
# hunt, every penultimate feature's excitation by the trigger is measured on the current masked model (mean over the
# clean images of |f_j(x + Δ) − f_j(x)|); the SPARE share of features it excites most get no pull that epoch, so the
# pull keeps what the clean images use and leaves the backdoor's features to the trigger term.
#   AWM_CACHE=DIR python spared_feature_probe.py MODEL ATTACK:SEED ['{"beta": 1.0, "spare": 0.1, ...overrides}']
# Prints one JSON line.
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv
from swapped_loop import run_with_loop

from awm_fast import ops
from awm_fast.loop import AWMLoop

case = case_from_argv(sys.argv)
overrides = case[3]
beta = overrides.pop("beta", 1.0)
spare = overrides.pop("spare", 0.1)
overrides["feature_distill_weight"] = beta  # the library builds the hook and the reference features
spared_counts = []


class SparedLoop(AWMLoop):
    def _recover_triggers(self):
        triggers, loss = super()._recover_triggers()
        lo, hi = self.cfg.input_bounds
        with torch.no_grad():
            self.model(self.x)
            clean = self.features._latest.float().flatten(1)
            self.model(ops.apply_triggers(self.x, triggers[:1], lo, hi)[0])
            moved = self.features._latest.float().flatten(1)
        excitation = (moved - clean).abs().mean(dim=0)  # [F]
        keep = torch.ones_like(excitation)
        count = int(spare * excitation.numel())
        if count:
            keep[excitation.topk(count).indices] = 0.0
        self.keep = keep
        spared_counts.append(count)
        return triggers, loss

    def _clean_loss(self, logits, rows, weights=None):
        loss = self._label_loss(logits, rows, weights)
        f = self.features
        features = f._latest[: len(rows)].float().flatten(1)
        gap = ((features - f.reference[rows]).pow(2) * self.keep).sum(dim=1) / f.scale * f.trust[rows]
        term = gap.mean() if weights is None else (gap * weights).sum()
        return loss + beta * term


run_with_loop(SparedLoop, case, {"beta": beta, "spare": spare, "spared": spared_counts})  # filled during the run
