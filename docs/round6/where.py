# Where does a targeted universal trigger (class = the backdoor target, exact L1 projection, clamped, 100 steps
# on the 9 one-shot images of other classes) put its mass: share inside the true trigger's support, and its
# success on the evaluation images. python where.py badnets,trojan-square
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import torch, torch.nn.functional as F
from awm_fast import ops
from cases import load_case
for attack_name in sys.argv[1].split(","):
    for seed in (0, 1, 2):
        model, attack, (x, y), (x_eval, y_eval) = load_case(attack_name, seed, "fashion-mnist")
        model.requires_grad_(False)
        target, others = attack.target, y != attack.target
        support = (attack.apply(x_eval[:200]) - x_eval[:200]).abs().mean(0)[0] > 1e-3  # [H, W]
        for tau in (5.0, 10.0, 20.0):
            delta = torch.zeros(1, *x.shape[1:])
            for _ in range(100):
                delta.requires_grad_(True)
                loss = F.cross_entropy(model((x[others] + delta).clamp(0, 1)), torch.full((int(others.sum()),), target))
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    delta = delta - 0.5 * tau * grad / grad.abs().sum()
                    delta = ops.project_l1_ball(delta.view(1, -1), tau, "exact").view_as(delta)
            with torch.no_grad():
                predicted = model((x_eval + delta).clamp(0, 1)).argmax(1)
            inside = float(delta[0, 0][support].abs().sum() / delta.abs().sum())
            success = float((predicted[y_eval != target] == target).float().mean())
            print(attack_name, seed, "tau", tau, "success", f"{success:.2f}", "mass in true support", f"{inside:.2f}",
                  "support share", f"{float(support.float().mean()):.3f}", flush=True)
