# Does the class screen (cfg.class_shortlist, round 15) keep the suspect? python screen_probe.py DATASET CASES
# On 10-class models the screen never runs at the default shortlist (10); here one outer epoch of purify runs with
# class_shortlist=None (every class searched in full) and with class_shortlist=SHORTLIST (env, default 3), and prints
# per model: the suspect of each, the screen's order of the classes (targeted: the naming search's screen; warp: the
# warp check's), where the full search's suspect stands in it, and whether the all-to-all check fired.
# CASES: ATTACK:SEED,...
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

import awm_fast
from awm_fast import search

SHORTLIST = int(os.environ.get("SHORTLIST", "3"))
orders: dict[str, list[int]] = {}
screen, warp_losses = search.TargetedSearch._screen, search._warp_losses


def recorded_screen(self, num_classes):
    losses = screen(self, num_classes)
    orders["targeted"] = losses.argsort().tolist()
    return losses


def recorded_warp_losses(model, x, own, classes, cfg, steps):
    losses = warp_losses(model, x, own, classes, cfg, steps)
    if steps == search.WARP_SCREEN_STEPS:
        orders.setdefault("warp", []).extend(classes[losses.argsort()].tolist())
    return losses


search.TargetedSearch._screen = recorded_screen
search._warp_losses = recorded_warp_losses


def main():
    dataset = sys.argv[1]
    for case in sys.argv[2].split(","):
        name, seed = case.rsplit(":", 1)
        epochs = None if dataset == "digits" else 3
        model, _, few, _ = load_case(name, int(seed), dataset, "small-cnn", epochs)
        full = awm_fast.purify(model, few, seed=int(seed), outer=1, class_shortlist=None).history[0]
        orders.clear()
        short = awm_fast.purify(model, few, seed=int(seed), outer=1, class_shortlist=SHORTLIST).history[0]
        suspect = int(full["suspect_class"])
        kind = "targeted" if "targeted" in orders else "warp"
        rank = orders[kind].index(suspect) + 1 if suspect in orders[kind] else None
        print(f"{dataset} {case}: suspect full {suspect} shortlist-{SHORTLIST} {int(short['suspect_class'])} "
              f"screen ({kind}) {orders[kind]} full suspect's rank {rank} "
              f"all-to-all full {int(full['all_to_all'])} shortlist {int(short['all_to_all'])}"
              f"{'' if int(short['suspect_class']) == suspect else '  DIFFERENT'}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
