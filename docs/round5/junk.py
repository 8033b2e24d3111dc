# Where do the label-inconsistent augmented copies go? Share sent to the backdoor target.
import torch
from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset
from awm_fast.inputs import augment_one_shot
torch.set_num_threads(1)
s = study.StudySettings(cache="/tmp/r2/cache"); split = load_dataset("digits", None)
for a in ("badnets","blend","trojan-square","trojan-watermark","wanet"):
  for seed in (0,1):
    att = study.build_attack(a, 8, 10)
    m, _ = study._cached_model(s, split, "digits", "small-cnn", a, att, seed)
    x, y, _ = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
    xa, ya = augment_one_shot(x, y, 9, torch.Generator().manual_seed(seed))
    with torch.no_grad(): p = m(xa[10:]).argmax(1)
    bad = p != ya[10:]
    print(a, seed, "target", att.target, f"wrong {bad.float().mean():.2f}, of wrong -> target {(p[bad]==att.target).float().mean():.2f}", torch.bincount(p[bad], minlength=10).tolist())
