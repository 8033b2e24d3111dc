# Probe variants of the trigger search on one case: python probe.py MODEL ATTACK:SEED VARIANT ['json overrides']
# VARIANT: default |
#          grow:CE:FACTOR:CAP (after each hunting epoch whose best trigger's cross-entropy to the suspect exceeds CE,
#              the targeted radius is multiplied by FACTOR for the next epoch, up to CAP times its start) |
#          warp:STEPS (when the warp check names a suspect, the mask step is driven by a smooth flow field fitted to
#              send the images to the suspect, refitted for STEPS Adam steps against the current masks every epoch,
#              instead of an additive trigger) | both combined with "+" (grow:1:1.5:4+warp:30).
# Overrides are purify keywords. Environment as docs/round10/probe.py: EPOCHS (default 10; 3 for the SmallCNN),
# EVAL (default 1000), FINAL=1 prints one RESULT line instead of the per-epoch ACC/ASR.
import dataclasses
import json
import os
import sys
import time
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import importlib

from cases import load_case

import awm_fast
from awm_fast import loop, ops, search, study

purify_module = importlib.import_module("awm_fast.purify")  # the package's `purify` attribute is the function

model_name, (attack_name, seed) = sys.argv[1], sys.argv[2].rsplit(":", 1)
variant = sys.argv[3]
overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
parts = {part.split(":")[0]: part.split(":")[1:] for part in variant.split("+")}
log = {"radius": [], "warp_ce": []}

if "grow" in parts:
    grow_ce, grow_factor, grow_cap = map(float, parts["grow"])
    original_recover = search.TargetedSearch.recover

    def recover_growing(self):
        naming = self.suspect is None or self.best is None
        start = getattr(self, "start_radius", None) or self.cfg.targeted_norm
        self.start_radius = start
        trigger, loss, suspect = original_recover(self)
        if not naming and float(loss) > grow_ce:
            radius = min(self.cfg.targeted_norm * grow_factor, grow_cap * start)
            self.cfg = dataclasses.replace(self.cfg, targeted_norm=radius)
        log["radius"].append(self.cfg.targeted_norm)
        return trigger, loss, suspect

    search.TargetedSearch.recover = recover_growing

warp_state = {"suspect": None, "theta": None}
if "warp" in parts:
    warp_steps = int(parts["warp"][0])
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
        log["warp_ce"].append(float(losses[0]))
        self.suspect = warp_state["suspect"]
        return torch.zeros(1, *x.shape[1:], device=x.device), losses[0], self.suspect

    search.TargetedSearch.recover = recover_warp

    def apply_triggers(images, triggers, lo, hi):
        if warp_state["theta"] is None or warp_state["suspect"] is None:
            return ops.apply_triggers(images, triggers, lo, hi)
        return search._warp(images, warp_state["theta"])[None]

    loop.ops = types.SimpleNamespace(**{name: getattr(ops, name) for name in dir(ops) if not name.startswith("__")})
    loop.ops.apply_triggers = apply_triggers

model, attack, (x, y), (x_eval, y_eval) = load_case(attack_name, int(seed), "fashion-mnist", model_name,
                                                    int(os.environ.get("EPOCHS", 10)),
                                                    eval_images=int(os.environ.get("EVAL", 1000)))
final_only = os.environ.get("FINAL") == "1"


def evaluate(model):
    metrics = study._metrics(model, x_eval, y_eval, attack)
    return {"acc": metrics["acc"], "asr": metrics["asr"]}


before = evaluate(model)
print(f"{sys.argv[2]} {model_name} {variant} {json.dumps(overrides)} before: "
      f"ACC {100 * before['acc']:.1f} ASR {100 * before['asr']:.1f}", flush=True)
start = time.perf_counter()
result = awm_fast.purify(model, (x, y), backend="torch", seed=int(seed), eval_fn=None if final_only else evaluate,
                         **overrides)
seconds = time.perf_counter() - start
extra = "".join(f" {key} {[round(v, 2) for v in values]}" for key, values in log.items() if values)
if final_only:
    after = evaluate(result.model)
    print(f"RESULT {model_name} {attack_name} {seed} {variant} {json.dumps(overrides)} "
          f"ACC {100 * before['acc']:.1f} -> {100 * after['acc']:.1f} "
          f"ASR {100 * before['asr']:.1f} -> {100 * after['asr']:.1f} {seconds:.0f} s{extra}",
          flush=True)
for record in [] if final_only else result.history:
    print(f"  epoch {record['epoch']:2d}  mask mean {record['mask_mean']:.4f}  ACC {100 * record['acc']:.1f}  "
          f"ASR {100 * record['asr']:.1f}  search CE {record['ascent_loss']:.3f}  "
          f"next radius {record.get('search_radius', float('nan')):.1f}", flush=True)
print(extra, flush=True)
