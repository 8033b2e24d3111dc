# Does the all-to-all check separate better at a smaller radius? python radius_probe.py DATASET MODEL CASES
# One outer epoch of purify per cached model with TargetedSearch._check_all_to_all replaced by a copy of its
# measurements (awm_fast/search.py at e8adf85) run at several fractions of the suspect's radius; prints them and
# never fires. The real check fires at >= half moved and channels >= a third of the classes that may receive them.
# CASES: ATTACK:SEED,... ; no line under a case: the warp check named the suspect first (no check runs).
# FRACTIONS (env, default 0.25,0.5,0.75,1): the radii, as fractions of the suspect's. SHOTS (env, default 1): clean
# images per class.
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import _split, load_case

import awm_fast
from awm_fast import search
from awm_fast.data import few_shot_subset

FRACTIONS = [float(f) for f in os.environ.get("FRACTIONS", "0.25,0.5,0.75,1").split(",")]
SHOTS = int(os.environ.get("SHOTS", "1"))


def measure(self, staying, generator):
    """One universal search off the images' own labels: (moved, eligible, received, channels, loss)."""
    own, num_classes = self._labels(), self._num_classes()
    candidates = self._random_candidates(search.ALL_TO_ALL_RESTARTS, generator)
    candidates[0] = 0.0
    candidates, losses = self._descend(candidates, None, search.ALL_TO_ALL_STEPS, generator, staying)
    best = int(losses.argmin())
    moved = self._labels(candidates[best])
    stays = torch.tensor(staying)
    eligible = ~torch.isin(own, stays)
    away = eligible & (moved != own) & ~torch.isin(moved, stays)
    received = torch.bincount(moved[away], minlength=num_classes).float()
    total = float(received.sum())
    channels = search._channels(own[away], moved[away], num_classes) if total else 0.0
    return total, int(eligible.sum()), received, channels, float(losses[best])


def print_check(self):
    radius = self.radius
    for fraction in FRACTIONS:
        self.radius = radius * fraction
        generator = torch.Generator().manual_seed(self.generator.initial_seed() + 1)
        staying = [self.suspect]
        for attempt in range(search.ALL_TO_ALL_SEARCHES):
            total, eligible, received, channels, loss = measure(self, staying, generator)
            sink = total and float(received.max()) > search.SINK_SHARE * total
            fires = (not sink and total >= search.ALL_TO_ALL_MOVED * eligible
                     and channels >= search.ALL_TO_ALL_CHANNELS * (self._num_classes() - len(staying)))
            print(f"  r {self.radius:5.1f} search {attempt}: eligible {eligible} moved {total:3.0f} received "
                  f"{received.int().tolist()} channels {channels:.2f} staying {staying} loss {loss:.2f}"
                  f"{' FIRES' if fires else ''}", flush=True)
            if not sink:
                break
            staying = [*staying, int(received.argmax())]
    self.radius = radius
    return None


def main():
    dataset, model_name = sys.argv[1], sys.argv[2]
    for case in sys.argv[3].split(","):
        name, seed = case.rsplit(":", 1)
        epochs = None if dataset == "digits" else (3 if model_name == "small-cnn" else 10)
        model, attack, few, _ = load_case(name, int(seed), dataset, model_name, epochs)
        if SHOTS > 1:
            split = _split(dataset)
            few = few_shot_subset(split.x_test, split.y_test, SHOTS, seed=int(seed))[:2]
        print(f"{dataset} {model_name} {case}" + (f" shots {SHOTS}" if SHOTS > 1 else ""), flush=True)
        awm_fast.purify(model, few, seed=int(seed), outer=1, verbose=False)


search.TargetedSearch._check_all_to_all = print_check
if __name__ == "__main__":
    main()
