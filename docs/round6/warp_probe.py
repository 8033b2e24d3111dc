# Can a targeted search over smooth warps name a warping backdoor's target? For every class c, a 4x4 flow
# field (tanh-bounded, upsampled bicubically, displacement at most BUDGET / H in normalised coordinates) is
# optimised (Adam, 60 steps) to send the one-shot images not predicted as c to c. Prints the three classes
# reached most easily (final cross-entropy) next to the attack's target. The flow family resembles WaNet's
# own construction, so this is a favourable first test. python warp_probe.py wanet,badnets 1,2
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import torch, torch.nn.functional as F
from cases import load_case


def warp(x, theta, budget):
    """x [N, C, H, W] resampled along the flow theta [1, 2, 4, 4] (tanh-bounded): [N, C, H, W]."""
    n, _, height, width = x.shape
    flow = F.interpolate(torch.tanh(theta), size=(height, width), mode="bicubic", align_corners=True)
    ys, xs = torch.linspace(-1, 1, height), torch.linspace(-1, 1, width)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((grid_x, grid_y), dim=-1)[None] + budget * flow.permute(0, 2, 3, 1) / height
    return F.grid_sample(x, grid.clamp(-1, 1).expand(n, -1, -1, -1), mode="bilinear", padding_mode="border",
                         align_corners=True)


for attack_name in sys.argv[1].split(","):
    for budget in [float(b) for b in sys.argv[2].split(",")]:
        for seed in (0, 1, 2):
            model, attack, (x, y), _ = load_case(attack_name, seed, "fashion-mnist")
            model.requires_grad_(False)
            own = model(x).argmax(1)
            losses = []
            for c in range(10):
                keep = own != c
                theta = torch.zeros(1, 2, 4, 4, requires_grad=True)
                optimizer = torch.optim.Adam([theta], lr=0.1)
                for _ in range(60):
                    loss = F.cross_entropy(model(warp(x[keep], theta, budget)), torch.full((int(keep.sum()),), c))
                    optimizer.zero_grad(); loss.backward(); optimizer.step()
                losses.append(float(loss))
            order = torch.tensor(losses).argsort()[:3].tolist()
            print(attack_name, seed, "budget", budget, "target", attack.target, "easiest",
                  [(c, round(losses[c], 2)) for c in order], flush=True)
