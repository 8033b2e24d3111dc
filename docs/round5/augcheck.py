# How many of the authors' one-shot copies does the original model label as their source image?
import torch
import torch.nn.functional as F
from awm_fast.inputs import augment_one_shot
from cases import load_case
for ds in ("digits", "fashion-mnist"):
    for a, seed in [("badnets", 0), ("blend", 0)] + ([("trojan-square", 1), ("all-to-all", 2)] if ds == "digits" else []):
        m, _, (x, y), _ = load_case(a, seed, ds)
        xa, ya = augment_one_shot(x, y, 9, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            p = m(xa).softmax(1)
        ok = p.argmax(1) == ya
        print(ds, a, seed, f"orig correct {ok[:10].float().mean():.2f}, aug correct {ok[10:].float().mean():.2f}, "
              f"CE orig {F.cross_entropy(p[:10].log(), ya[:10]):.3f} aug {F.cross_entropy(p[10:].log(), ya[10:]):.3f}")
