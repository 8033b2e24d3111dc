# What does the first recovered trigger (masks = 1) do to test images: share sent to each class.
# python trig.py ['{extra purify overrides}']
import sys, torch, awm_fast
from cases import load_case
extra = eval(sys.argv[1]) if len(sys.argv) > 1 else {}
for a in ("badnets", "blend", "trojan-watermark", "wanet"):
    seed = 0
    m, att, (x, y), (xe, ye) = load_case(a, seed)
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, mode="paper", outer=1, lr_mask=1e-12, **extra)
    d = r.trigger
    with torch.no_grad():
        p = m((xe + d).clamp(0, 1)).argmax(1)
    keep = ye != att.target
    print(a, "target", att.target, "L1", f"{d.abs().sum():.1f}", "Linf", f"{d.abs().max():.2f}", "to target",
          f"{(p[keep] == att.target).float().mean():.2f}", torch.bincount(p, minlength=10).tolist())
