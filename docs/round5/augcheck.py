import torch, awm_fast
from awm_fast import study
from awm_fast.data import few_shot_subset, load_dataset
from awm_fast.inputs import augment_one_shot
torch.set_num_threads(1)
for ds in ("digits", "fashion-mnist"):
    s = study.StudySettings(cache="/tmp/r2/cache", train_limit=None if ds == "digits" else 12000); split = load_dataset(ds, None)
    for a, seed in [("badnets", 0), ("blend", 0)] + ([("trojan-square", 1), ("all-to-all", 2)] if ds == "digits" else []):
        att = study.build_attack(a, split.x_train.shape[-1], 10)
        m, _ = study._cached_model(s, split, ds, "small-cnn", a, att, seed)
        x, y, _ = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)
        xa, ya = augment_one_shot(x, y, 9, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            p = m(xa).softmax(1)
        ok = p.argmax(1) == ya
        print(ds, a, seed, f"orig correct {ok[:10].float().mean():.2f}, aug correct {ok[10:].float().mean():.2f}, "
              f"CE orig {torch.nn.functional.cross_entropy(p[:10].log(), ya[:10]):.3f} aug {torch.nn.functional.cross_entropy(p[10:].log(), ya[10:]):.3f}")
