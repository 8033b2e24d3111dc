# Does a universal trigger that only has to move each image OFF its label find an all-to-all backdoor?
# python flip_probe.py RADIUS LOSS ATTACK:SEED,... [exclude | reach]   LOSS: ce | flip | margin
# Environment: STEPS (default 60), RESTARTS (8), PEELS (4: searches at most in exclude mode).
# exclude: name the suspect first (TargetedSearch's first epoch, as purify does) and count going to it as staying
# (the flip loss is then -log(1 - p_own - p_suspect) over the images not predicted as the suspect); while the
# found trigger sends most of the images it moves to one class (a sink), exclude that class too and search again.
# reach: exclude instead every class the naming search reaches from all images (cross-entropy < 1), then search once.
# One universal Δ over purify's search images (the one-shot images and their kept copies), restarts from zero
# and random points, L1-normalised descent steps with exact projection onto RADIUS (TargetedSearch's step), on:
#   ce:     -CE(own label), the paper's untargeted objective (unbounded: pushing a flipped image further pays);
#   flip:   -log(1 - p_own), which saturates once an image has left its label (the ascent turns to those left);
#   margin: max(z_own - max_{c != own} z_c, -1), a clipped margin (the same idea on logits).
# Prints, for the best candidate, what it does to 2,000 held-out images: share sent off their label, share sent
# to the all-to-all mapping's class (y + 1), share sent to the most common class, and the share of |Δ| that lies
# in the true trigger's pixels; then the same for the true trigger. Cached Fashion-MNIST SmallCNNs (round 5).
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

from awm_fast import ops, search
from awm_fast.config import make_config
from awm_fast.inputs import augment_one_shot_consistent, copies_per_image

STEPS, RESTARTS = int(os.environ.get("STEPS", 60)), int(os.environ.get("RESTARTS", 8))
# exclude mode: up to PEELS searches, each excluding the last one's dominant destination (its sink)
PEELS, SINK_SHARE = int(os.environ.get("PEELS", 4)), 0.5


def objective(logits, own, loss, excluded=()):
    """Per-image loss to DEScend, [U] fp32."""
    if loss == "ce":
        return -F.cross_entropy(logits, own, reduction="none")
    if loss == "flip":
        log_p = logits.log_softmax(1)
        p_own = log_p.gather(1, own[:, None]).squeeze(1).exp()
        for cls in excluded:
            p_own = p_own + log_p[:, cls].exp()
        return -torch.log1p(-p_own.clamp(max=1 - 1e-6))
    own_logit = logits.gather(1, own[:, None]).squeeze(1)
    other = logits.scatter(1, own[:, None], float("-inf")).max(1).values
    return (own_logit - other).clamp(min=-1.0)


def universal(model, x, own, radius, loss, generator, excluded=()):
    candidates = search.random_l1_points(RESTARTS, x.shape[1:], 0.5 * radius, generator)
    candidates[0] = 0.0
    for _ in range(STEPS):
        candidates.requires_grad_(True)
        perturbed = ops.apply_triggers(x, candidates, 0.0, 1.0)  # [K, U, C, H, W]
        logits = model(perturbed.flatten(0, 1)).float()
        per = objective(logits, own.repeat(RESTARTS), loss, excluded).view(RESTARTS, -1).mean(1)
        (grad,) = torch.autograd.grad(per.sum(), candidates)
        candidates = candidates.detach()
        norms = grad.flatten(1).abs().sum(1).clamp(min=1e-30).view(-1, 1, 1, 1)
        ops.trigger_step(candidates, -grad / norms, 0.5 * radius, radius, "plain", "exact")
    return candidates[int(per.argmin())], per.detach()


def effect(model, x_eval, y_eval, perturbed, classes):
    with torch.no_grad():
        pred = model(perturbed).argmax(1)
    off = (pred != y_eval).float().mean()
    to_next = (pred == (y_eval + 1) % classes).float().mean()
    top = torch.bincount(pred[pred != y_eval], minlength=classes).max() / len(pred)
    return f"off-label {100 * off:5.1f}  to y+1 {100 * to_next:5.1f}  to one class {100 * top:5.1f}"


radius, loss = float(sys.argv[1]), sys.argv[2]
exclude = len(sys.argv) > 4 and sys.argv[4] == "exclude"
reach_mode = len(sys.argv) > 4 and sys.argv[4] == "reach"
for case in sys.argv[3].split(","):
    name, seed = case.rsplit(":", 1)
    model, attack, (x, y), (x_eval, y_eval) = load_case(name, int(seed), "fashion-mnist")
    model.eval().requires_grad_(False)
    cfg = make_config(None, {"seed": int(seed)})
    generator = torch.Generator().manual_seed(int(seed))
    suspect = search.warp_suspect(model, x, cfg, generator)
    x, y = augment_one_shot_consistent(model, x, y, copies_per_image(y, cfg.one_shot_augment), generator,
                                       suspect=suspect)
    with torch.no_grad():
        own = model(x).argmax(1)
    classes = int(y.max()) + 1
    excluded = []
    if exclude:
        resolved = cfg.resolve(x[0].numel(), len(x), one_shot=True)
        excluded.append(search.TargetedSearch(model, x, resolved, generator).recover()[2])
    if reach_mode:  # exclude every class the naming search reaches from all images (cross-entropy < 1)
        resolved = cfg.resolve(x[0].numel(), len(x), one_shot=True)
        namer = search.TargetedSearch(model, x, resolved, generator)
        restarts = resolved.trigger_restarts
        candidates = namer._random_candidates(classes * restarts)
        candidates[::restarts] = 0.0
        _, losses = namer._descend(candidates, torch.arange(classes * restarts) // restarts)
        per_class = losses.view(classes, restarts).min(1).values
        excluded = [c for c in range(classes) if per_class[c] < search.TARGETED_REACH_CE]
        print(f"  naming cross-entropy per class {[round(v, 2) for v in per_class.tolist()]}")
    for _ in range(PEELS if exclude else 1):
        keep = torch.ones_like(own, dtype=torch.bool)
        for cls in excluded:
            keep &= own != cls
        delta, per = universal(model, x[keep], own[keep], radius, loss, generator, excluded)
        with torch.no_grad():
            moved = model((x[keep] + delta).clamp(0, 1)).argmax(1)
        away = moved != own[keep]
        for cls in excluded:
            away &= moved != cls
        dest = torch.bincount(moved[away], minlength=classes)
        largest = float(dest.max()) / max(1, int(away.sum()))
        print(f"  search images: excluded {excluded}, moved away {100 * float(away.float().mean()):5.1f}%, "
              f"largest destination {int(dest.argmax())}: {100 * largest:5.1f}% of those")
        sources = own[keep][away]
        modal = [torch.bincount(moved[away][sources == c], minlength=classes).max() / (sources == c).sum()
                 for c in sources.unique()]
        share = dest.float() / dest.sum().clamp(min=1)
        effective = float(torch.exp(-(share[share > 0] * share[share > 0].log()).sum()))
        modal_share = 100 * float(sum(modal)) / max(1, len(modal))
        print(f"    effective destinations {effective:4.1f}, per-source modal share {modal_share:5.1f}%"
              f" over {len(modal)} sources")
        if largest <= SINK_SHARE:
            break
        excluded.append(int(dest.argmax()))
    region = (attack.apply(torch.zeros_like(x_eval[:1])) != 0).float()[0]
    share = float((delta.abs() * region).sum() / delta.abs().sum().clamp(min=1e-12))
    print(f"{case} {loss} r={radius}: {len(x)} search images, losses {[round(v, 2) for v in per.tolist()]}")
    print(f"  found |Δ|₁ {float(delta.abs().sum()):5.1f} in-trigger {100 * share:5.1f}%  "
          + effect(model, x_eval, y_eval, (x_eval + delta).clamp(0, 1), classes))
    print("  true " + effect(model, x_eval, y_eval, attack.apply(x_eval), classes), flush=True)
