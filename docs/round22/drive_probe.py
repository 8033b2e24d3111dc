# Probe: let the residual check drive the masking instead of only warning. After purify's loop (and its extra
# epochs), while the suspect still stands out at twice the hunt's radius (runner-up CE / suspect CE above
# RESIDUAL_STANDOUT), run BLOCK more epochs at the undecayed lr_mask with the hunt at RADIUS_FACTOR times its radius,
# then check again; at most MAX_EPOCHS such epochs. Emulated by a subclass of AWMLoop swapped into purify.
#   AWM_CACHE=DIR python drive_probe.py MODEL ATTACK:SEED ['json probe settings and purify overrides']
# probe settings (popped from the JSON): block (5), max_epochs (20), radius_factor (2.0; 0 = leave the hunt's radius)
# Prints one JSON line. Run before awm_fast had residual_outer (round 22), which builds this rule; with it, this probe's
# loop runs after the library's own residual epochs (pass '{"residual_outer": 0}' to measure the rule alone).
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv
from swapped_loop import run_with_loop

from awm_fast.loop import AWMLoop
from awm_fast.search import RESIDUAL_RADIUS_FACTOR, RESIDUAL_STANDOUT

case = case_from_argv(sys.argv)
overrides = case[3]
block = overrides.pop("block", 5)
max_epochs = overrides.pop("max_epochs", 20)
radius_factor = overrides.pop("radius_factor", 2.0)
checks = []


class DrivenLoop(AWMLoop):
    def _run(self):
        trigger, history = super()._run()
        cfg, search = self.cfg, self.search
        if search is None or search.all_to_all:
            return trigger, history
        optimizer = self._adam(cfg.lr_mask)  # a fresh Adam at the undecayed rate
        ran = 0
        while ran < max_epochs:
            standout = search.suspect_standout(RESIDUAL_RADIUS_FACTOR * cfg.targeted_norm)
            checks.append(round(standout, 3))
            if not standout > RESIDUAL_STANDOUT:
                break
            if radius_factor:
                search.radius = radius_factor * cfg.targeted_norm
            for _ in range(block):
                triggers, _ = self._epoch(len(history), optimizer, history, None)
                ran += 1
            trigger = triggers[0] if cfg.num_triggers == 1 else triggers
        return trigger, history


run_with_loop(DrivenLoop, case, {"block": block, "max_epochs": max_epochs, "radius_factor": radius_factor,
                                 "checks": checks})
