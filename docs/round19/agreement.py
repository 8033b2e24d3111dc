# How much of the masks' shrink do independent purify runs share? Reads the masks ensemble_probe.py saved
# (a list of {name: mask} dicts, one per run) and prints, over all masked weights: the mean pairwise correlation of
# the runs' shrink 1 - m, and the share of the mean shrink that every run makes (the shrink of the element-wise max)
# and that most runs make (the median's):  python agreement.py MASKS.pt [...]
import itertools
import json
import sys

import torch

for path in sys.argv[1:]:
    runs = torch.load(path)
    shrink = torch.stack([torch.cat([1 - m.flatten() for m in run.values()]) for run in runs])  # [R, P]
    pairs = [float(torch.corrcoef(shrink[[i, j]])[0, 1]) for i, j in itertools.combinations(range(len(runs)), 2)]
    mean_shrink = float(shrink.mean())
    print(json.dumps({"masks": path, "runs": len(runs), "mean_shrink": round(mean_shrink, 4),
                      "pairwise_corr": round(sum(pairs) / len(pairs), 3),
                      "shared_by_all": round(float(shrink.min(0).values.mean()) / mean_shrink, 3),
                      "shared_by_median": round(float(shrink.median(0).values.mean()) / mean_shrink, 3)}))
