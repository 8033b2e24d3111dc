# Probe variants of the mask step on one case: python probe.py MODEL ATTACK:SEED VARIANT ['json overrides']
# VARIANT: default | normsgd:LR (masks step by LR * g / max|g| with momentum 0.9 instead of Adam) |
#          deep (masks on the last stage's convolutions only; "normsgd:LR+deep" combines both) |
#          bncomp (after every outer epoch, shift each BatchNorm's running mean by the change of its input's mean on
#          the one-shot images since the original model, and scale its running variance by the variance ratio) |
#          bncomp-mean (the same, running mean only) |
#          bnstat:BETA (purify's bn_drift_weight=BETA, awm_fast/bn_drift.py). The bnstat runs in probes.log were
#          made with a monkeypatched prototype of it (whole steps in one forward, variance floor 1e-8 instead of
#          1e-12), since replaced by the library option: ResNet BadNets seed 0, last epoch 81.4 / 2.7 then,
#          81.7 / 2.7 through the library (summation order). Prints ACC/ASR per outer epoch.
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
if variant.startswith("bnstat:"):  # the prototype became purify's bn_drift_weight (see the header)
    overrides["bn_drift_weight"] = float(variant.split(":")[1])
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
