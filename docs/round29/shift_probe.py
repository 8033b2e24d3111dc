# knob_probe.py (or another probe script given first) with round 14's trigger-shift penalty in the mask step: the
# triggered term also counts SHIFT · ReLU(log p_s(x + Δ) − log p_s(x)) for every image not of the suspect class s,
# log p_s(x) the masked model's own on the clean image (no gradient through it). Cross-entropy to the label stops
# pushing once x + Δ is labelled right; the penalty keeps pushing while the trigger still lifts the suspect.
# Only on an all-to-one suspect of the targeted search (no all-to-all hunt). Prints the script's JSON lines with
# "shift": SHIFT added.
#   SHIFT=0.3 AWM_CACHE=DIR python docs/round29/shift_probe.py [SCRIPT.py] MODEL ATTACK:SEED ['json overrides']
import contextlib
import io
import json
import os
import runpy
import sys

import torch
import torch.nn.functional as F

from awm_fast import ops
from awm_fast.batching import distinct
from awm_fast.loop import AWMLoop

SHIFT = float(os.environ.get("SHIFT", "0.3"))


def _mask_backward_shift(self, rows, triggers, alpha):
    """AWMLoop._mask_backward_batched plus the shift penalty (K = 1 trigger; no BatchNorm drift)."""
    search = self.search
    if triggers is None or search is None or search.all_to_all or self.bn_drift is not None:
        return _original(self, rows, triggers, alpha)
    suspect = search.suspect
    unique_rows, weights = distinct(rows)
    images, labels = self.x[unique_rows], self.y[unique_rows]
    u = len(unique_rows)
    with torch.no_grad(), self._autocast():
        clean_logp = torch.cat([self.model(chunk).float().log_softmax(dim=1)[:, suspect]
                                for chunk in images.split(self.chunk)])
    lo, hi = self.cfg.input_bounds
    inputs = torch.cat([images, ops.apply_triggers(images, triggers, lo, hi).flatten(0, 1)])
    other = (labels != suspect).float()
    clean_total = trigger_total = torch.zeros((), device=self.device)
    for chunk in self._chunks(u, inputs.shape[0]):
        with self._autocast():
            logits = self.model(inputs[chunk]).float()
        clean_rows = range(chunk.start, min(chunk.stop, u))
        trigger_rows = range(max(chunk.start, u) - u, chunk.stop - u)
        clean = trigger = torch.zeros((), device=self.device)
        if len(clean_rows):
            piece = slice(clean_rows.start, clean_rows.stop)
            clean = self._clean_loss(logits[: len(clean_rows)], unique_rows[piece], weights[piece])
        if len(trigger_rows):
            index = torch.arange(trigger_rows.start, trigger_rows.stop, device=self.device)
            triggered = logits[len(clean_rows):]
            per_sample = F.cross_entropy(triggered, labels[index], reduction="none")
            lift = (triggered.log_softmax(dim=1)[:, suspect] - clean_logp[index]).clamp(min=0) * other[index]
            trigger = ((per_sample + SHIFT * lift) * weights[index]).sum()
        self._backward(alpha * clean + (1 - alpha) * trigger)
        clean_total, trigger_total = clean_total + clean.detach(), trigger_total + trigger.detach()
    return clean_total, trigger_total


_original = AWMLoop._mask_backward_batched
AWMLoop._mask_backward_batched = _mask_backward_shift
script = os.path.join(os.path.dirname(__file__), "..", "round21", "knob_probe.py")
if sys.argv[1].endswith(".py"):
    script = sys.argv.pop(1)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    runpy.run_path(script, run_name="__main__")
for line in printed.getvalue().splitlines():  # each JSON line, tagged with the penalty's weight
    print(json.dumps({"shift": SHIFT, **json.loads(line)}) if line.startswith("{") else line, flush=True)
