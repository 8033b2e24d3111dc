# Where do the label-inconsistent augmented copies go? Share sent to the backdoor target.
import torch
from awm_fast.inputs import augment_one_shot
from cases import load_case
for a in ("badnets", "blend", "trojan-square", "trojan-watermark", "wanet"):
    for seed in (0, 1):
        m, att, (x, y), _ = load_case(a, seed)
        xa, ya = augment_one_shot(x, y, 9, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            p = m(xa[10:]).argmax(1)
        bad = p != ya[10:]
        print(a, seed, "target", att.target, f"wrong {bad.float().mean():.2f}, of wrong -> target "
              f"{(p[bad] == att.target).float().mean():.2f}", torch.bincount(p[bad], minlength=10).tolist())
