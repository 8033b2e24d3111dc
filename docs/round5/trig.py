# What does the first recovered trigger (masks = 1) do to test images: share sent to each class.
import sys, torch, awm_fast
from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset, without_indices
torch.set_num_threads(1)
s = study.StudySettings(cache="/tmp/r2/cache"); split = load_dataset("digits", None)
extra = eval(sys.argv[1]) if len(sys.argv) > 1 else {}
for a in ("badnets","blend","trojan-watermark","wanet"):
  for seed in (0,):
    att = study.build_attack(a, 8, 10)
    m, _ = study._cached_model(s, split, "digits", "small-cnn", a, att, seed)
    x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    xe, ye = without_indices(split.x_test, split.y_test, used)
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, mode="paper", outer=1, lr_mask=1e-12, **extra)
    d = r.trigger
    with torch.no_grad(): p = m((xe + d).clamp(0, 1)).argmax(1)
    keep = ye != att.target
    print(a, "target", att.target, "L1", f"{d.abs().sum():.1f}", "Linf", f"{d.abs().max():.2f}", "to target", f"{(p[keep]==att.target).float().mean():.2f}", torch.bincount(p, minlength=10).tolist())
