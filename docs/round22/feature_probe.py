# Probe: a clean term that also keeps the penultimate features of the clean images where the original model put them.
# The logit KL (distill_weight) constrains 10 numbers per image; the input of the last Linear layer (128 on the
# SmallCNN) constrains the function the masks may change on clean images more finely, and the trigger does not drive
# it. Added to the clean term: BETA * sum_i w_i * trust_i * ||f_i - f_i(original)||^2 / mean_i ||f_i(original)||^2,
# trust_i as distill_correct_only (the images the original labels right). Emulated by a subclass of AWMLoop.
#   AWM_CACHE=DIR python feature_probe.py MODEL ATTACK:SEED ['{"beta": 1.0, ...purify overrides}']
# Prints one JSON line. The library has this term since round 22 (feature_distill_weight; the same figures:
# knob_probe.py with {"feature_distill_weight": 1.0}); the probe is kept as the record of the first runs.
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv
from swapped_loop import run_with_loop

from awm_fast.loop import AWMLoop
from awm_fast.modules import MaskedLinear

case = case_from_argv(sys.argv)
overrides = case[3]
beta = overrides.pop("beta", 1.0)


class FeatureLoop(AWMLoop):
    def __init__(self, model, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        last = [m for m in model.modules() if isinstance(m, (nn.Linear, MaskedLinear))][-1]
        self.captured = None
        last.register_forward_hook(lambda module, inputs, output: setattr(self, "captured", inputs[0]))
        with torch.no_grad():  # the masks are all ones here: the original model's features
            self.teacher = torch.cat([(model(chunk), self.captured)[1] for chunk in self.x.split(64)])
        self.scale = self.teacher.pow(2).sum(dim=1).mean()
        right = self.teacher_probs.argmax(dim=1) == self.y
        self.trust = right.float()

    def _clean_loss(self, logits, rows, weights=None):
        loss = super()._clean_loss(logits, rows, weights)
        features = self.captured[: logits.shape[0]].float()
        gap = (features - self.teacher[rows]).pow(2).sum(dim=1) / self.scale * self.trust[rows]
        term = gap.mean() if weights is None else (gap * weights).sum()
        return loss + beta * term


run_with_loop(FeatureLoop, case, {"beta": beta})
