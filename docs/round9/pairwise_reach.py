# Can a per-source search name an all-to-all backdoor's mapping? python pairwise_reach.py RADIUS ATTACK:SEED,...
# For every source class s and target t != s, trigger_restarts candidates descend the cross-entropy to t of the
# images of class s only (the one-shot image and its kept copies, as purify builds them): TargetedSearch's own
# descent, run on one source's images at a time. Prints per source the easiest target, its cross-entropy, and
# the cross-entropy to s + 1 (the all-to-all attack's target). Cached Fashion-MNIST SmallCNNs of
# docs/round5/cases.py.
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

from awm_fast import search
from awm_fast.config import make_config
from awm_fast.inputs import augment_one_shot_consistent, copies_per_image

radius = float(sys.argv[1])
for case in sys.argv[2].split(","):
    name, seed = case.rsplit(":", 1)
    model, attack, (x, y), _ = load_case(name, int(seed), "fashion-mnist")
    model.eval().requires_grad_(False)
    cfg = make_config(None, {"seed": int(seed)})
    generator = torch.Generator().manual_seed(int(seed))
    copies = copies_per_image(y, cfg.one_shot_augment)
    suspect = search.warp_suspect(model, x, cfg, generator)
    x, y = augment_one_shot_consistent(model, x, y, copies, generator, suspect=suspect)
    resolved = cfg.resolve(x[0].numel(), len(x)).replace(targeted_norm=radius)
    classes, restarts = int(y.max()) + 1, cfg.trigger_restarts
    reach = torch.full((classes, classes), float("inf"))  # reach[s, t]: best cross-entropy from s to t
    for source in range(classes):
        per_source = search.TargetedSearch(model, x[y == source], resolved, generator)
        others = torch.tensor([t for t in range(classes) if t != source])
        candidate_targets = others.repeat_interleave(restarts)
        candidates = per_source._random_candidates(len(candidate_targets))
        candidates[::restarts] = 0.0
        _, losses = per_source._descend(candidates, candidate_targets)
        reach[source, others] = losses.view(classes - 1, restarts).min(1).values
    easiest = reach.min(1)
    to_next = [float(reach[s, (s + 1) % classes]) for s in range(classes)]
    print(f"{case} radius {radius}: easiest target per source {easiest.indices.tolist()}")
    print(f"  its cross-entropy {[round(v, 2) for v in easiest.values.tolist()]}")
    print(f"  cross-entropy to s + 1 {[round(v, 2) for v in to_next]}", flush=True)
