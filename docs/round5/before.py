import torch
from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset, without_indices
torch.set_num_threads(1)
s = study.StudySettings(cache="/tmp/r2/cache", train_limit=12000); split = load_dataset("fashion-mnist", None)
for a in ("badnets", "blend"):
    for seed in (0, 1, 2):
        att = study.build_attack(a, 28, 10)
        m, _ = study._cached_model(s, split, "fashion-mnist", "small-cnn", a, att, seed)
        x, y, used = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
        xe, ye = without_indices(split.x_test, split.y_test, used)
        met = study._metrics(m, xe[:2000], ye[:2000], att)
        print(a, seed, f"ACC {100*met['acc']:.1f} ASR {100*met['asr']:.1f}")
