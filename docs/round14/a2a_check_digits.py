# Why the all-to-all check rarely fires on 8x8 digits: python a2a_check_digits.py. One outer epoch of purify per
# digits all-to-all model (seeds 0-4) with TargetedSearch._check_all_to_all replaced by a copy of its measurements
# that prints them (images moved off their labels, where they land, the effective number of source-to-destination
# channels) and never fires; the real check fires at >= half moved and channels >= a third of the classes that may
# receive them. No line under a model: the check did not run (the warp check named the suspect first).
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

import awm_fast
from awm_fast import search


def print_check(self):
    """search.TargetedSearch._check_all_to_all's searches and measurements (d19a5c4), printed; returns None."""
    generator = torch.Generator().manual_seed(self.generator.initial_seed() + 1)
    own, num_classes = self._labels(), self._num_classes()
    staying = [self.suspect]
    for attempt in range(search.ALL_TO_ALL_SEARCHES):
        candidates = self._random_candidates(search.ALL_TO_ALL_RESTARTS, generator)
        candidates[0] = 0.0
        candidates, losses = self._descend(candidates, None, search.ALL_TO_ALL_STEPS, generator, staying)
        best = int(losses.argmin())
        moved = self._labels(candidates[best])
        eligible = ~torch.isin(own, torch.tensor(staying))
        away = eligible & (moved != own) & ~torch.isin(moved, torch.tensor(staying))
        received = torch.bincount(moved[away], minlength=num_classes).float()
        total = float(received.sum())
        channels = search._channels(own[away], moved[away], num_classes) if total else 0.0
        print(f"  search {attempt}: images {len(own)} eligible {int(eligible.sum())} moved {total:.0f} received "
              f"{received.int().tolist()} channels {channels:.2f} staying {staying} loss {float(losses[best]):.2f}")
        if not (total and float(received.max()) > search.SINK_SHARE * total):
            break
        staying = [*staying, int(received.argmax())]  # a sink: the real check searches again
    return None


search.TargetedSearch._check_all_to_all = print_check
for seed in range(5):
    model, attack, few, _ = load_case("all-to-all", seed, "digits")
    print(f"digits all-to-all s{seed}", flush=True)
    awm_fast.purify(model, few, seed=seed, outer=1, verbose=False)
