# What the all-to-all check's searches do: python joint_stats.py MODEL ATTACK:SEED,...
# Runs one outer epoch of purify and prints, for each of the check's searches, the staying classes, how many of the
# images it may move it moved, exp(entropy) of their destinations, exp(mutual information) of source and destination
# (the check's statistic), and the source -> destination:count table. Instruments TargetedSearch._labels.
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import fashion_case

import awm_fast
from awm_fast import search

labels_of = search.TargetedSearch._labels


def reporting_labels(self, trigger=None):
    out = labels_of(self, trigger)
    if trigger is not None:
        own = labels_of(self)
        classes = self._num_classes()
        stays = torch.tensor(self.staying)
        away = ~torch.isin(own, stays) & (out != own) & ~torch.isin(out, stays)
        joint = torch.bincount(own[away] * classes + out[away], minlength=classes ** 2).view(classes, -1)
        share = joint.sum(0)[joint.sum(0) > 0].double() / joint.sum()
        spread = math.exp(float(-(share * share.log()).sum()))
        table = " ".join(f"{s}->" + ",".join(f"{d}:{int(joint[s, d])}" for d in range(classes) if joint[s, d])
                         for s in range(classes) if joint[s].sum())
        print(f"  staying {self.staying} moved {int(away.sum())}/{int((~torch.isin(own, stays)).sum())} "
              f"exp(H) {spread:.1f} exp(MI) {search._channels(own[away], out[away], classes):.1f} | {table}",
              flush=True)
    return out


search.TargetedSearch._labels = reporting_labels
model_name = sys.argv[1]
for case in sys.argv[2].split(","):
    _, seed, model, _, few, _ = fashion_case(model_name, case)
    record = awm_fast.purify(model, few, seed=seed, outer=1).history[0]
    print(f"{model_name} {case}: suspect {record['suspect_class']:.0f} all_to_all {record['all_to_all']:.0f}",
          flush=True)
