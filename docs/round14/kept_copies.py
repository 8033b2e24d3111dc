# How many label-consistent copies each class keeps at one shot: python kept_copies.py MODEL ATTACK:SEED ...
# augment_one_shot_consistent as purify calls it (9 wanted per image), without the warp check's suspect; prints the
# copies kept per class and whether the original model labels each class's one image right.
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case

from awm_fast.inputs import augment_one_shot_consistent

for case in sys.argv[2:]:
    name, seed, model, attack, (x, y), _ = fashion_case(sys.argv[1], case)
    kept_x, kept_y = augment_one_shot_consistent(model.eval(), x, y, 9, torch.Generator().manual_seed(seed))
    copies = torch.bincount(kept_y, minlength=10) - 1  # each class's own image is kept too
    with torch.no_grad():
        right = (model(x).argmax(dim=1) == y).int()
    print(case, "kept per class", copies.tolist(), "orig right", right.tolist(), flush=True)
