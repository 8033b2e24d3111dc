# Oracle probe: does a sparse, hard version of AWM's masks (prune the most-moved weights, restore the rest) beat soft masks?
# python prune_probe.py STEPS attack:seed,...
import sys, torch, awm_fast
from cases import load_case, masked_copy, percent
steps = int(sys.argv[1]); cases = sys.argv[2].split(",")
for case in cases:
    attack_name, seed = case.rsplit(":", 1); seed = int(seed)
    m, att, (x, y), (xe, ye) = load_case(attack_name, seed)
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, mode="paper", steps=steps)
    dev = torch.cat([(1 - mk).flatten() for mk in r.masks.values()])
    out = ["soft " + percent(r.model, xe, ye, att)]
    for q in (0.005, 0.01, 0.02, 0.05, 0.1):
        thr = dev.topk(max(1, int(q * dev.numel()))).values[-1]
        pruned = {name: (1 - mk < thr).float() for name, mk in r.masks.items()}
        out.append(f"q{q}: " + percent(masked_copy(m, pruned), xe, ye, att))
    print(attack_name, seed, " | ".join(out), flush=True)
