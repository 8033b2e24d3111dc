# After targeted + filter purification: can a fresh search still find a trigger that works on the purified
# model, and how does the true trigger compare? python probe.py attack:seed,...
import json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import torch, torch.nn.functional as F, awm_fast
from awm_fast import study, ops
from cases import load_case


def fresh_search(model, x, target, radius, restarts=8, steps=100, seed=0):
    """Best of `restarts` clamped triggers of L1 radius `radius` descending CE to `target`: (trigger, CE)."""
    g = torch.Generator().manual_seed(seed)
    keep = model(x).argmax(1) != target
    xs = x[keep]
    cands = torch.rand((restarts, *x.shape[1:]), generator=g) * 2 - 1
    cands = cands * (0.5 * radius / cands.flatten(1).abs().sum(1)).view(-1, 1, 1, 1)
    cands[0] = 0
    for _ in range(steps):
        cands.requires_grad_(True)
        pert = (xs[None] + cands[:, None]).clamp(0, 1).flatten(0, 1)
        loss = F.cross_entropy(model(pert), torch.full((len(pert),), target), reduction="none").view(restarts, -1).mean(1)
        (grad,) = torch.autograd.grad(loss.sum(), cands)
        cands = cands.detach()
        d = -grad / grad.flatten(1).abs().sum(1).clamp(min=1e-30).view(-1, 1, 1, 1)
        cands = ops.project_l1_ball((cands + 0.5 * radius * d).flatten(1), radius, "exact").view_as(cands)
    best = int(loss.argmin())
    return cands[best], float(loss[best])


def reach(model, x, trigger, target):
    with torch.no_grad():
        return 100 * float((model((x + trigger).clamp(0, 1)).argmax(1) == target).float().mean())


for case in sys.argv[1].split(","):
    name, seed = case.rsplit(":", 1); seed = int(seed)
    model, attack, (x, y), (xe, ye) = load_case(name, seed, "fashion-mnist")
    target = attack.target if hasattr(attack, "target") else None
    true = study.true_trigger(attack, xe[:500])
    t = time.time()
    r = awm_fast.purify(model, (x, y), backend="torch", seed=seed, mode="paper", trigger_search="targeted",
                        one_shot_filter=True)
    m = r.model
    met = study._metrics(m, xe, ye, attack)
    print(f"{case}: after ACC {100*met['acc']:.1f} ASR {100*met['asr']:.1f} ({time.time()-t:.0f}s) true L1 {float(true.abs().sum()):.1f} "
          f"rec L1 {float(r.trigger.abs().sum()):.1f} target {target} suspect {r.history[-1]['suspect_class']}")
    xo = xe[ye != target][:300]
    print(f"  reach on eval: true-mean {reach(m, xo, true, target):.1f} recovered {reach(m, xo, r.trigger[0], target):.1f}"
          f"  (before purify: true {reach(model, xo, true, target):.1f} recovered {reach(model, xo, r.trigger[0], target):.1f})")
    for radius in (10, 20, 40):
        trig, ce = fresh_search(m, x, target, radius, seed=seed)
        print(f"  fresh search r={radius}: CE {ce:.2f} reach eval {reach(m, xo, trig, target):.1f} "
              f"mass on true-support {float(trig.abs()[true.abs() > 0.05].sum() / trig.abs().sum()):.2f}", flush=True)
