# On which models does purify's warp check name a suspect (the models warp_mask_pull acts on)?
#   python warp_check_probe.py MODEL ATTACK:SEED [...]
# Prints one JSON line per case: the class warp_suspect names on the one-shot images (null: none), and the target.
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case

from awm_fast import AWMConfig
from awm_fast.search import warp_suspect

for case in sys.argv[2:]:
    name, seed, model, attack, (x, y), _ = fashion_case(sys.argv[1], case)
    cfg = AWMConfig().resolve(x[0].numel(), len(x), x.shape[1])
    suspect = warp_suspect(model.eval(), x, cfg, torch.Generator().manual_seed(seed))
    print(json.dumps({"model": sys.argv[1], "case": case, "warp_suspect": suspect, "target": attack.target}),
          flush=True)
