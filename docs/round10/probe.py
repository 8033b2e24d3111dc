# Probe variants of the mask step on one case: python probe.py MODEL ATTACK:SEED VARIANT ['json overrides']
# VARIANT: default | normsgd:LR (masks step by LR * g / max|g| with momentum 0.9 instead of Adam) |
#          deep (masks on the last stage's convolutions only; "normsgd:LR+deep" combines both) |
#          bncomp (after every outer epoch, shift each BatchNorm's running mean by the change of its input's mean on
#          the one-shot images since the original model, and scale its running variance by the variance ratio) |
#          bncomp-mean (the same, running mean only) |
#          bnstat:BETA (the prototype of purify's bn_drift_weight=BETA, which the later runs pass as an override:
#          adds BETA x the drift of every BatchNorm's input statistics on the clean minibatch to the clean term:
#          mean over channels of ((mean - mean0)^2 + (std - std0)^2) / running_var, mean over BatchNorms,
#          mean0/std0 the original model's on the same rows, weighted by multiplicity; one forward per step).
#          Prints ACC/ASR per outer epoch.
# Overrides are purify keywords. Environment: EPOCHS training epochs of the cached Fashion-MNIST model (default 10;
# 3 for the SmallCNN models of rounds 5-8), EVAL held-out test images (default 1000), FINAL=1 evaluates only the
# purified model and prints one RESULT line with the seconds of purify.
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

import awm_fast
from awm_fast import loop, study


class NormalisedSGD(torch.optim.Optimizer):
    """SGD with momentum on the gradient divided by its largest magnitude over all masks."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        scale = max(float(p.grad.abs().max()) for p in params) or 1.0
        for p in params:
            state = self.state[p]
            buf = state.setdefault("momentum", torch.zeros_like(p))
            buf.mul_(0.9).add_(p.grad / scale)
            p.add_(buf, alpha=-self.param_groups[0]["lr"])


model_name, (attack_name, seed) = sys.argv[1], sys.argv[2].rsplit(":", 1)
variant = sys.argv[3]
overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
if variant.startswith("normsgd:"):
    lr = float(variant.split(":")[1].split("+")[0])
    loop.AWMLoop._adam = lambda self, _lr: NormalisedSGD(self.masks, lr * _lr / self.cfg.lr_mask)
if variant.endswith("deep"):
    overrides["mask_layers"] = lambda name, module: name.startswith("stages.2") or name.startswith("layer3")
if variant.startswith("bnstat:"):
    beta = float(variant.split(":")[1])
    overrides["forward_chunk"] = 100000  # the clean rows of a step in one forward, so their statistics are whole
    captured = {}
    init, clean_loss = loop.AWMLoop.__init__, loop.AWMLoop._clean_loss

    def capture(name):
        def hook(module, inputs):
            captured[name] = inputs[0]
        return hook

    def patched_init(self, model, *args, **kwargs):
        init(self, model, *args, **kwargs)
        self.batchnorms = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        for name, module in self.batchnorms.items():
            module.register_forward_pre_hook(capture(name))
        with torch.no_grad():  # the masks are all ones here: per-image moments of the original model [N, C]
            model(self.x)
            self.moments = {n: (a.mean((2, 3)), a.pow(2).mean((2, 3))) for n, a in captured.items()}

    def patched_clean_loss(self, logits, rows, weights=None):
        loss = clean_loss(self, logits, rows, weights)
        w = (torch.full((len(rows),), 1 / len(rows)) if weights is None else weights / weights.sum())[:, None]
        drift = []
        for name, module in self.batchnorms.items():
            a = captured[name][: len(rows)]
            mean, square = (w * a.mean((2, 3))).sum(0), (w * a.pow(2).mean((2, 3))).sum(0)
            mean0, square0 = (w * self.moments[name][0][rows]).sum(0), (w * self.moments[name][1][rows]).sum(0)
            std, std0 = (square - mean**2).clamp_min(1e-8).sqrt(), (square0 - mean0**2).clamp_min(1e-8).sqrt()
            drift.append((((mean - mean0) ** 2 + (std - std0) ** 2) / (module.running_var + module.eps)).mean())
        return loss + beta * torch.stack(drift).mean()

    loop.AWMLoop.__init__, loop.AWMLoop._clean_loss = patched_init, patched_clean_loss
model, attack, (x, y), (x_eval, y_eval) = load_case(attack_name, int(seed), "fashion-mnist", model_name,
                                                    int(os.environ.get("EPOCHS", 10)),
                                                    eval_images=int(os.environ.get("EVAL", 1000)))
final_only = os.environ.get("FINAL") == "1"  # evaluate the purified model only, not every outer epoch


def batchnorm_input_stats(model, images):
    """{BN name: (mean [C], var [C])} of every BatchNorm2d's input on `images`; with `compensate`, each BN's running
    statistics are first moved by the input's drift from `reference` (in forward order, so later layers see it)."""
    stats, handles = {}, []

    def make_hook(name):
        def hook(module, inputs):
            x = inputs[0].float()
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
            stats[name] = (mean, var)
            if name in compensate:
                rm, rv, m0, v0 = compensate[name]
                module.running_mean.copy_(rm + mean - m0)
                if variant == "bncomp":  # "bncomp-mean" leaves the running variance alone
                    module.running_var.copy_(rv * (var + 1e-5) / (v0 + 1e-5))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(make_hook(name)))
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return stats


compensate = {}
if variant.startswith("bncomp"):
    reference = batchnorm_input_stats(model, x)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            compensate[name] = (module.running_mean.clone(), module.running_var.clone(), *reference[name])


def evaluate(model):
    if compensate:
        batchnorm_input_stats(model, x)
    metrics = study._metrics(model, x_eval, y_eval, attack)
    return {"acc": metrics["acc"], "asr": metrics["asr"]}


before = evaluate(model)
print(f"{sys.argv[2]} {model_name} {variant} {json.dumps(overrides, default=str)} before: "
      f"ACC {100 * before['acc']:.1f} ASR {100 * before['asr']:.1f}", flush=True)
start = time.perf_counter()
result = awm_fast.purify(model, (x, y), backend="torch", seed=int(seed), eval_fn=None if final_only else evaluate,
                         **overrides)
seconds = time.perf_counter() - start
if final_only:
    after = evaluate(result.model)
    print(f"RESULT {model_name} {attack_name} {seed} {variant} ACC {100 * before['acc']:.1f} -> "
          f"{100 * after['acc']:.1f} ASR {100 * before['asr']:.1f} -> {100 * after['asr']:.1f} {seconds:.0f} s")
for record in [] if final_only else result.history:
    print(f"  epoch {record['epoch']:2d}  mask mean {record['mask_mean']:.4f}  ACC {100 * record['acc']:.1f}  "
          f"ASR {100 * record['asr']:.1f}  search CE {record['ascent_loss']:.3f}", flush=True)
