# Does purify's warp check name a suspect on this model? (warp_copies acts only where it does.) Runs the check as
# purify does, on the one-shot images, and prints the suspect (None: no class is reached by half-pixel warps).
#   AWM_CACHE=DIR python docs/round28/warp_check_probe.py MODEL ATTACK:SEED [ATTACK:SEED ...]
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from loaded import load

from awm_fast import AWMConfig
from awm_fast.warp import warp_suspect

for case in sys.argv[2:]:
    model_name, name, seed, _, model, attack, (x, y), _ = load([None, sys.argv[1], case])
    cfg = AWMConfig(seed=seed).resolve(input_numel=x[0].numel(), num_samples=10 * len(x))
    suspect = warp_suspect(model.eval(), x, cfg, torch.Generator().manual_seed(seed))
    print(json.dumps({"model": model_name, "case": case, "warp_suspect": suspect}), flush=True)
