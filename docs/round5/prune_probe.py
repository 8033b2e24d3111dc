# Oracle probe: does a sparse, hard version of AWM's masks (prune the most-moved weights, restore the rest) beat soft masks?
import sys, copy, torch, awm_fast
from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset, without_indices
torch.set_num_threads(1)
s = study.StudySettings(cache="/tmp/r2/cache")
split = load_dataset("digits", None)
steps = int(sys.argv[1]); cases = sys.argv[2].split(",")
for case in cases:
    attack_name, seed = case.rsplit(":", 1); seed = int(seed)
    att = study.build_attack(attack_name, 8, 10)
    m, _ = study._cached_model(s, split, "digits", "small-cnn", attack_name, att, seed)
    x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    xe, ye = without_indices(split.x_test, split.y_test, used)
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, mode="paper", steps=steps)
    soft = study._metrics(r.model, xe, ye, att)
    dev = torch.cat([(1 - mk).flatten() for mk in r.masks.values()])
    out = [f"soft {100*soft['acc']:.1f}/{100*soft['asr']:.1f}"]
    for q in (0.005, 0.01, 0.02, 0.05, 0.1):
        k = max(1, int(q * dev.numel()))
        thr = dev.topk(k).values[-1]
        pm = copy.deepcopy(m)
        params = dict(pm.named_parameters())
        with torch.no_grad():
            for name, mk in r.masks.items():
                params[name].mul_((1 - mk < thr).float())
        met = study._metrics(pm, xe, ye, att)
        out.append(f"q{q}: {100*met['acc']:.1f}/{100*met['asr']:.1f}")
    print(attack_name, seed, " | ".join(out), flush=True)
