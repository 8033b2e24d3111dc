# The class the targeted search suspects after its first epoch (model unmasked) and the warp check's suspect
# (None: no class reachable by half-pixel warps), against the attack's target.
# python suspects.py badnets,wanet
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import torch
from awm_fast import AWMConfig
from awm_fast.search import TargetedSearch, warp_suspect
from cases import load_case
for attack_name in sys.argv[1].split(","):
    for seed in (0, 1, 2):
        model, attack, (x, y), _ = load_case(attack_name, seed, "fashion-mnist")
        model.requires_grad_(False)
        cfg = AWMConfig(trigger_search="targeted").resolve(x[0].numel(), 100)
        _, loss, suspect = TargetedSearch(model, x, cfg, torch.Generator().manual_seed(seed)).recover()
        print(attack_name, seed, "target", attack.target, "suspect", suspect, f"cross-entropy {float(loss):.2f}",
              "warp suspect", warp_suspect(model, x, cfg), flush=True)
