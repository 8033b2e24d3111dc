# Targeted universal triggers per class: does the backdoor target stand out (higher success at a small L1 budget)?
import sys, torch, torch.nn.functional as F
from awm_fast import ops
from cases import load_case
# python targeted.py STEPS CLAMP(0|1)
steps = int(sys.argv[1]); clamp = sys.argv[2] == "1"
for a in ("badnets","blend","trojan-square","trojan-watermark","wanet"):
  for seed in (0,1):
    m, att, (x, y), (xe, ye) = load_case(a, seed)
    m.requires_grad_(False)
    out = []
    for tau in (2.0, 5.0, 10.0):
        rates = []
        for t in range(10):
            d = torch.zeros(1, 1, 8, 8, requires_grad=True)
            for _ in range(steps):
                inp = (x + d).clamp(0, 1) if clamp else x + d
                loss = F.cross_entropy(m(inp), torch.full((len(x),), t))
                g, = torch.autograd.grad(loss, d)
                with torch.no_grad():
                    d -= 10 * g
                    d.copy_(ops.project_l1_ball(d.view(1, -1), tau, "rescale").view_as(d))
            with torch.no_grad():
                p = m((xe + d).clamp(0, 1)).argmax(1)
            keep = ye != t
            rates.append((p[keep] == t).float().mean().item())
        r = torch.tensor(rates)
        top = r.argsort(descending=True)[:3].tolist()
        out.append(f"tau{tau}: top {top} rates {[round(rates[i],2) for i in top]}")
    print(a, seed, "target", att.target, " | ".join(out), flush=True)
