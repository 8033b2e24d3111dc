# Can a per-source search name an all-to-all backdoor's mapping? python pairwise_reach.py RADIUS ATTACK:SEED,...
# For every source class s and target t != s, trigger_restarts candidates descend the cross-entropy to t of the
# images of class s only (the one-shot image and its kept copies, as purify builds them), as TargetedSearch does
# for all images; prints per source the easiest target, its cross-entropy, and the cross-entropy to s + 1
# (the all-to-all attack's target). Cached Fashion-MNIST SmallCNNs of docs/round5/cases.py.
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

from awm_fast import ops, search
from awm_fast.config import make_config
from awm_fast.inputs import augment_one_shot_consistent, copies_per_image


def descend(model, x, targets, candidates, radius):
    """search.TARGETED_STEPS L1-normalised descent steps of candidates [K, C, H, W] towards targets [K, M]
    (-1: image ignored); returns each candidate's final mean cross-entropy [K]."""
    weights = (targets >= 0).float()
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1)
    for _ in range(search.TARGETED_STEPS):
        candidates.requires_grad_(True)
        perturbed = ops.apply_triggers(x, candidates, 0.0, 1.0)
        logits = model(perturbed.flatten(0, 1)).float()
        losses = (F.cross_entropy(logits, targets.clamp(min=0).flatten(), reduction="none").view_as(targets)
                  * weights).sum(1)
        (grad,) = torch.autograd.grad(losses.sum(), candidates)
        candidates = candidates.detach()
        norms = grad.flatten(1).abs().sum(1).clamp(min=1e-30).view(-1, 1, 1, 1)
        ops.trigger_step(candidates, -grad / norms, search.TARGETED_STEP_SIZE * radius, radius, "plain", "exact")
    return losses.detach()


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
    with torch.no_grad():
        own = model(x).argmax(1)
    classes, restarts = int(y.max()) + 1, cfg.trigger_restarts
    reach = torch.full((classes, classes), float("inf"))  # reach[s, t]: best cross-entropy from s to t
    for source in range(classes):
        rows = y == source
        others = torch.tensor([t for t in range(classes) if t != source])
        candidate_targets = others.repeat_interleave(restarts)
        noise = torch.rand((len(candidate_targets), *x.shape[1:]), generator=generator) * 2 - 1
        candidates = noise * (0.5 * radius / noise.flatten(1).abs().sum(1).view(-1, 1, 1, 1))
        candidates[::restarts] = 0.0
        targets = candidate_targets[:, None].expand(-1, int(rows.sum())).clone()
        targets[targets == own[rows][None]] = -1  # images already predicted as the target have nothing to reach
        losses = descend(model, x[rows], targets, candidates, radius)
        reach[source, others] = losses.view(classes - 1, restarts).min(1).values
    easiest = reach.min(1)
    to_next = [float(reach[s, (s + 1) % classes]) for s in range(classes)]
    print(f"{case} radius {radius}: easiest target per source {easiest.indices.tolist()}")
    print(f"  its cross-entropy {[round(v, 2) for v in easiest.values.tolist()]}")
    print(f"  cross-entropy to s + 1 {[round(v, 2) for v in to_next]}", flush=True)
