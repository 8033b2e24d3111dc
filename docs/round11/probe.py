# The warp-driven mask step of round 11 on one case: python probe.py MODEL ATTACK:SEED warp:STEPS ['json overrides']
# When the warp check names a suspect, the mask step is driven by a smooth flow field (search._warp) fitted to send
# the search images to the suspect, refitted for STEPS Adam steps against the current masks every epoch, instead of
# an additive trigger. Any other VARIANT runs the tree. The run itself (model, data, evaluation, the RESULT line) is
# docs/round10/probe.py's, with its environment: EPOCHS (default 10; 3 for the SmallCNN), EVAL, FINAL=1.
# The round's grow:1:1.5:4 screen (screen_runs.txt) was a monkeypatch of the hunt in this script, since built as
# purify's targeted_norm_max with the same rule: `python docs/round10/probe.py small-resnet blend:1 default
# '{"targeted_norm_max": 80}'` runs it.
import importlib
import os
import runpy
import sys
import types

import torch

from awm_fast import loop, ops, search

purify_module = importlib.import_module("awm_fast.purify")  # the package's `purify` attribute is the function
variant = sys.argv[3]
warp_ce = []  # the fitted warp's cross-entropy to the suspect, per epoch

warp_state = {"suspect": None, "theta": None}
if variant.startswith("warp:"):
    warp_steps = int(variant.split(":")[1])
    original_suspect = purify_module.warp_suspect

    def remember_suspect(model, x, cfg, generator=None):
        warp_state["suspect"] = original_suspect(model, x, cfg, generator)
        return warp_state["suspect"]

    purify_module.warp_suspect = remember_suspect
    original_recover_w = search.TargetedSearch.recover

    def recover_warp(self):
        if warp_state["suspect"] is None:
            return original_recover_w(self)
        x = self.x if self.x.shape[0] <= search.WARP_MAX_IMAGES else self.x[:search.WARP_MAX_IMAGES]
        classes = torch.tensor([warp_state["suspect"]], device=x.device)
        with torch.no_grad():
            own = self.model(x).argmax(dim=1)
        if warp_state["theta"] is None:
            warp_state["theta"] = torch.zeros(1, 2, search.WARP_GRID, search.WARP_GRID, device=x.device)
        theta = warp_state["theta"].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([theta], lr=search.WARP_LR)
        for _ in range(warp_steps):
            optimizer.zero_grad()
            warped = search._warp(x, theta).detach()
            grad, losses = search._reach_losses(self.model, warped, classes, own, self.cfg, self.chunk)
            search._warp(x, theta).backward(grad)
            optimizer.step()
        warp_state["theta"] = theta.detach()
        warp_ce.append(float(losses[0]))
        self.suspect = warp_state["suspect"]
        return torch.zeros(1, *x.shape[1:], device=x.device), losses[0], self.suspect

    search.TargetedSearch.recover = recover_warp

    def apply_triggers(images, triggers, lo, hi):
        if warp_state["theta"] is None or warp_state["suspect"] is None:
            return ops.apply_triggers(images, triggers, lo, hi)
        return search._warp(images, warp_state["theta"])[None]

    loop.ops = types.SimpleNamespace(**{name: getattr(ops, name) for name in dir(ops) if not name.startswith("__")})
    loop.ops.apply_triggers = apply_triggers

runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "round10", "probe.py"), run_name="__main__")
if warp_ce:
    print(f"warp_ce {[round(value, 2) for value in warp_ce]}", flush=True)
