# Where does the soft masks' ASR reduction live: one layer at a time, and per-output-channel means.
import sys, copy, torch, awm_fast
from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset, without_indices
torch.set_num_threads(1)
s = study.StudySettings(cache="/tmp/r2/cache")
split = load_dataset("digits", None)
steps = int(sys.argv[1]); cases = sys.argv[2].split(",")
def apply(m, masks):
    pm = copy.deepcopy(m); params = dict(pm.named_parameters())
    with torch.no_grad():
        for name, mk in masks.items(): params[name].mul_(mk)
    return pm
for case in cases:
    attack_name, seed = case.rsplit(":", 1); seed = int(seed)
    att = study.build_attack(attack_name, 8, 10)
    m, _ = study._cached_model(s, split, "digits", "small-cnn", attack_name, att, seed)
    x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    xe, ye = without_indices(split.x_test, split.y_test, used)
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, mode="paper", steps=steps)
    f = lambda masks: "{:.1f}/{:.1f}".format(*[100*v for v in study._metrics(apply(m, masks), xe, ye, att).values()])
    out = ["soft " + f(r.masks)]
    for name in r.masks:
        out.append(f"only {name} " + f({name: r.masks[name]}))
    chan = {n: mk.mean(dim=tuple(range(1, mk.dim())), keepdim=True).expand_as(mk) for n, mk in r.masks.items()}
    out.append("chanmean " + f(chan))
    resid = {n: mk / chan[n] for n, mk in r.masks.items()}
    out.append("within-chan " + f(resid))
    stats = [f"{n}: mean {mk.mean():.3f} chanmean-min {chan[n].min():.3f}" for n, mk in r.masks.items()]
    print(attack_name, seed, " | ".join(out), "\n   ", "; ".join(stats), flush=True)
