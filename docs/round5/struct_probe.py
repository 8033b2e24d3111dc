# Where does the soft masks' ASR reduction live: one layer at a time, and per-output-channel means.
# python struct_probe.py STEPS attack:seed,...
import sys, awm_fast
from cases import load_case, masked_copy, percent
steps = int(sys.argv[1]); cases = sys.argv[2].split(",")
for case in cases:
    attack_name, seed = case.rsplit(":", 1); seed = int(seed)
    m, att, (x, y), (xe, ye) = load_case(attack_name, seed)
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, mode="paper", steps=steps)
    f = lambda masks: percent(masked_copy(m, masks), xe, ye, att)  # noqa: E731
    out = ["soft " + f(r.masks)]
    for name in r.masks:
        out.append(f"only {name} " + f({name: r.masks[name]}))
    chan = {n: mk.mean(dim=tuple(range(1, mk.dim())), keepdim=True).expand_as(mk) for n, mk in r.masks.items()}
    out.append("chanmean " + f(chan))
    out.append("within-chan " + f({n: mk / chan[n] for n, mk in r.masks.items()}))
    stats = [f"{n}: mean {mk.mean():.3f} chanmean-min {chan[n].min():.3f}" for n, mk in r.masks.items()]
    print(attack_name, seed, " | ".join(out), "\n   ", "; ".join(stats), flush=True)
