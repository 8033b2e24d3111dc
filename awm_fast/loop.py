"""The AWM outer loop (ALGORITHM.md) over a model whose layers already carry masks.

Two implementations of each phase, chosen by the masked modules' backend (the trigger ascent's live in
awm_fast.ascent, the mask step's here):

- eager (backend "reference"): the authors' mask_train() line by line, including what their code costs:
  the masks keep requiring grad during trigger recovery (so every backward also forms the weight
  gradients), the ascent backward retains its graph, and the clean and triggered batches run as two
  forward passes. It is the oracle and the baseline every benchmark measures against.
- fast (every other backend): the same objective, computed with less work:
  * minibatches are drawn with replacement, so a one-shot set of 100 images repeats ~28% of a batch
    of 128: each distinct image is forwarded once and its loss weighted by its multiplicity;
  * the model's own labels, which the ascent targets, cannot change while the masks are frozen, so
    they are computed once per outer epoch for the whole set instead of once per step;
  * masks stop requiring grad during trigger recovery (no weight-gradient GEMMs);
  * K triggers and the clean images share batched forwards (eval-mode BatchNorm makes samples
    independent) through awm_fast.ops.apply_triggers / trigger_step, packed into the fewest chunks of at
    most forward_chunk images with gradient accumulation, so activation memory is one chunk's whatever K;
  * the γ‖m‖₁ gradient, the Adam step and the [0, 1] clamp run as foreach kernels over all masks;
  * nothing synchronises with the host inside an epoch (losses accumulate on the device).
trigger_search="targeted" (improved mode's default) replaces the paper's ascent with
awm_fast.search.TargetedSearch (patch-sized candidates per class name the suspected target once; its trigger,
hunted afresh every epoch, drives the mask step); fast backends only.
"""

from __future__ import annotations

import contextlib
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_fast import ops
from awm_fast.ascent import ascend_batched, ascend_eager
from awm_fast.batching import autocast, chunks, distinct, forward_chunk
from awm_fast.bn_drift import BatchNormDrift
from awm_fast.config import AWMConfig
from awm_fast.feature_distill import PenultimateFeatures, gate_pull, trigger_window_share
from awm_fast.masking import AttachedMasks
from awm_fast.search import (
    RESIDUAL_RADIUS_FACTOR,
    RESIDUAL_STANDOUT,
    TARGETED_REACH_CE,
    TargetedSearch,
)

SHRINK_LR = 1e-3  # the authors' lr1: Adam learning rate of the optional shrink warm-up
# residual_outer's epochs run in blocks of this many, the residual check after each (measured so, round 22): one
# check costs about one naming search, so checking after every epoch would double a block's cost.
RESIDUAL_BLOCK = 5

HISTORY_KEYS = ("epoch", "loss", "clean_loss", "trigger_loss", "ascent_loss", "mask_l1", "mask_mean", "trigger_l1",
                "lr_mask", "seconds", "extra", "residual")


def check_backend_options(cfg: AWMConfig, backend: str) -> None:
    """ValueError when cfg asks for a trigger recovery or a penalty that only the fast backends implement."""
    if backend == "reference" and cfg.bn_drift_weight:
        raise ValueError(f"bn_drift_weight={cfg.bn_drift_weight} needs a fast backend ('torch' or 'triton'): the "
                         "reference backend runs the authors' procedure only")
    if backend == "reference" and (cfg.sparse_triggers or cfg.trigger_search == "targeted"):
        option = f"sparse_triggers={cfg.sparse_triggers}" if cfg.sparse_triggers else "trigger_search='targeted'"
        raise ValueError(f"{option} needs a fast backend ('torch' or 'triton'): the reference backend recovers "
                         "the paper's single dense trigger (mode='paper' is the authors' procedure; mode='improved', "
                         "the default, searches with trigger_search='targeted')")


def trusted_rows(original: torch.Tensor, y: torch.Tensor, correct_only: bool) -> torch.Tensor:
    """Where the pulls towards the original model count (1) or not (0), [N] fp32, from the original model's labels
    original [N] int64 and the true ones y [N]: with distill_correct_only, only the samples the original labels right.
    Its output on the others (copies a warp suspect attracts, images a backdoor moves) would teach the masks the
    backdoor back (docs/EFFICACY.md, round 13)."""
    right = original == y
    return (right if correct_only else torch.ones_like(right)).float()


class AWMLoop:
    """Runs `cfg.outer` epochs of trigger recovery + mask update, then up to `cfg.extra_outer` more while the hunt
    still reaches the suspect, then (with cfg.residual_check) the residual check, and up to `cfg.residual_outer`
    more epochs while it finds the suspect standing out; all state lives on x's device."""

    def __init__(self, model: nn.Module, attached: AttachedMasks, x: torch.Tensor, y: torch.Tensor,
                 cfg: AWMConfig, generator: torch.Generator, eval_fn=None, verbose: bool = False,
                 search: TargetedSearch | None = None) -> None:
        """x [N, ...] float, y [N] int64 on the run device. search: the TargetedSearch that recovers the triggers
        when cfg.trigger_search == "targeted" (purify builds it over the few-shot images and their kept copies)."""
        self.model, self.cfg, self.x, self.y, self.generator = model, cfg, x, y, generator
        self.masks = list(attached.masks.values())
        backend = attached.modules[0].backend
        check_backend_options(cfg, backend)
        self.eager = backend == "reference"
        if (cfg.trigger_search == "targeted") != (search is not None):
            raise ValueError(f"trigger_search={cfg.trigger_search!r} needs a TargetedSearch exactly when targeted")
        self.search = search
        warped = search is not None and search.warp_suspected  # the warp check named the suspect
        # warp_mask_pull acts on warp suspects only: patch and blend backdoors need all the travel (round 19).
        self.mask_pull = cfg.warp_mask_pull if warped else 0.0
        self.eval_fn, self.verbose = eval_fn, verbose
        self.device = x.device
        # Loss scaling wherever fp16 runs: its gradients underflow on any device. Without it on CPU, a mask whose
        # gradient is tiny but steady (Adam moves it a full step anyway) lost it to fp16 and stayed put, and the
        # fp16 masks left the fp32 ones by 5% of their travel instead of 1% (round 24, the feature pull's gradients).
        self.scaler = torch.amp.GradScaler(x.device.type) if cfg.precision == "fp16" else None
        self.chunk = forward_chunk(cfg, x.device)  # images per forward + backward in the fast path
        self.distill_weight = 0.0 if cfg.clean_loss == "distill" else (cfg.distill_weight or 0.0)
        needs_teacher = cfg.clean_loss == "distill" or self.distill_weight > 0
        self.teacher_probs = self._teacher_probs() if needs_teacher else None
        # Where the pulls towards the original model (the λ·KL term, feature_distill_weight, the BatchNorm penalty)
        # count: trusted_rows.
        self.trust = None
        if self.teacher_probs is not None or cfg.feature_distill_weight:
            original = self.teacher_probs.argmax(dim=1) if self.teacher_probs is not None else self._predictions()
            self.trust = trusted_rows(original, y, cfg.distill_correct_only)
        # The BatchNorm penalty's weight: bn_drift_weight everywhere, at least warp_bn_drift_weight on a warp suspect,
        # whose stand-in trigger the masks otherwise answer through the frozen statistics (round 29).
        self.bn_drift_weight = max(cfg.bn_drift_weight, cfg.warp_bn_drift_weight) if warped else cfg.bn_drift_weight
        if verbose and self.bn_drift_weight != cfg.bn_drift_weight:
            print(f"[awm] BatchNorm penalty (β = {self.bn_drift_weight:g}) acts on the warp suspect "
                  "(warp_bn_drift_weight)", file=sys.stderr, flush=True)
        # Built while the masks are all ones: it records the original model's BatchNorm input moments.
        self.bn_drift = BatchNormDrift(model, x, cfg.batch_size, self._autocast, self.trust) \
            if self.bn_drift_weight else None
        # Built while the masks are all ones: it records the original model's penultimate features.
        self.features = PenultimateFeatures(model, x, cfg.batch_size, self._autocast, self.trust) \
            if cfg.feature_distill_weight else None
        # The weight in effect: with feature_distill_gate="compact", 0 until the first hunt decides (_gate_features);
        # with "always" from the start, unless the first hunt finds an all-to-all backdoor.
        always = cfg.feature_distill_gate == "always"
        self.feature_weight = cfg.feature_distill_weight if always else 0.0
        self.gate_record: dict[str, float] = {}  # what the gate saw, merged into the first epoch's record
        if self.bn_drift_weight:
            self.gate_record["bn_drift"] = float(self.bn_drift_weight)  # the BatchNorm penalty's weight in effect

    def run(self) -> tuple[torch.Tensor, list[dict[str, float]]]:
        """Returns (trigger [C, H, W] or [K, C, H, W], history)."""
        try:
            return self._run()
        finally:
            if self.bn_drift is not None:
                self.bn_drift.close()
            if self.features is not None:
                self.features.close()

    def _run(self) -> tuple[torch.Tensor, list[dict[str, float]]]:
        cfg = self.cfg
        if cfg.shrink_steps:
            shrink_optimizer = self._adam(SHRINK_LR)
            for _ in range(cfg.shrink_steps):
                for rows in self._minibatches():
                    self._mask_step(shrink_optimizer, rows, triggers=None)
        optimizer = self._adam(cfg.lr_mask)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, cfg.lr_decay) if cfg.lr_decay else None
        history = []
        best = None  # (score, epoch index, mask snapshot) when cfg.select_epoch
        for epoch in range(cfg.outer):
            triggers, best = self._epoch(epoch, optimizer, history, best)
            if scheduler is not None:
                scheduler.step()
        # extra_outer: a hunt that still reaches the suspect shows the backdoor is still there (docs/EFFICACY.md,
        # rounds 17-18), and lr_decay has left the masks little travel (about 0.06 in all after 20 epochs of 5
        # steps at 0.9): keep masking at the undecayed rate until the hunt fails or the cap is spent.
        for extra in range(cfg.extra_outer):
            if self.search is None or not history[-1]["ascent_loss"] < TARGETED_REACH_CE:
                break
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_mask
            triggers, best = self._epoch(cfg.outer + extra, optimizer, history, best)
        if self._checks_residual():
            triggers, best = self._residual_epochs(history, triggers, best)
        if cfg.select_epoch:
            final_triggers, _ = self._recover_triggers()
            best = self._consider(best, history[-1], final_triggers)
            with torch.no_grad():
                torch._foreach_copy_(self.masks, best[2])
            for record in history:
                record["selected"] = float(record["epoch"] == best[1])
        trigger = triggers[0] if cfg.num_triggers == 1 else triggers
        return trigger, history

    def _checks_residual(self) -> bool:
        """Whether the residual check runs: on an all-to-one suspect of the targeted search, with cfg.residual_check."""
        return self.search is not None and self.cfg.residual_check and not self.search.all_to_all

    def _residual_epochs(self, history: list[dict[str, float]], triggers: torch.Tensor, best):
        """The residual check (TargetedSearch.suspect_standout at RESIDUAL_RADIUS_FACTOR times the hunt's radius),
        recorded as "suspect_standout" in the last epoch's record; while the suspect stands out (above
        RESIDUAL_STANDOUT) and cfg.residual_outer allows, RESIDUAL_BLOCK more epochs and the check again.
        Returns (triggers, best) as _epoch does.

        The check shows that the masks still respond to the suspect's trigger at the larger radius, where the
        hunt at its own radius no longer finds it (docs/EFFICACY.md, rounds 21-22: LeNet-5s, MLPs with dense
        triggers). So the added epochs hunt at the check's radius, with a fresh Adam at the undecayed lr_mask:
        the decayed run has left the masks little travel, and its moments describe the smaller trigger."""
        cfg, search = self.cfg, self.search
        radius = RESIDUAL_RADIUS_FACTOR * cfg.targeted_norm
        optimizer, ran = None, 0
        while True:
            standout = history[-1]["suspect_standout"] = search.suspect_standout(radius)
            block = min(RESIDUAL_BLOCK, cfg.residual_outer - ran) if standout > RESIDUAL_STANDOUT else 0
            if self.verbose:
                verdict = f"stands out: {block} more epochs" if block else "done"
                print(f"[awm] residual check at L1 radius {radius:g}: class {search.suspect} is reached {standout:.3g} "
                      f"times as easily as the next class ({verdict})", file=sys.stderr, flush=True)
            if not block:
                return triggers, best
            if optimizer is None:
                optimizer = self._adam(cfg.lr_mask)
                search.radius = max(search.radius, radius)  # grows on from there where targeted_norm_max allows
            for _ in range(block):
                triggers, best = self._epoch(len(history), optimizer, history, best, residual=True)
                ran += 1

    def _epoch(self, epoch: int, optimizer: torch.optim.Optimizer, history: list[dict[str, float]], best,
               residual: bool = False):
        """One outer epoch: recover the trigger(s), then cfg.steps mask steps; appends its record to history.
        Returns (triggers, best) with best updated as _consider does when cfg.select_epoch."""
        start = time.perf_counter()
        triggers, ascent_loss = self._recover_triggers()
        if not history and self.search is not None:
            self._gate_features(triggers[0])
        if self.cfg.select_epoch and epoch > 0:  # this trigger was recovered against the previous epoch's masks
            best = self._consider(best, history[-1], triggers)
        sums = torch.zeros(3, device=self.device)  # loss, clean term, trigger term
        for rows in self._minibatches():
            sums += self._mask_step(optimizer, rows, triggers)
        lr = optimizer.param_groups[0]["lr"]
        history.append(self._epoch_record(epoch, sums / self.cfg.steps, ascent_loss, triggers, lr, start, residual))
        return triggers, best

    def _gate_features(self, trigger: torch.Tensor) -> None:
        """After the first hunt (trigger [C, H, W], the suspect's or the all-to-all objective's), before any mask
        step: records how compact the trigger is and applies the feature pull's gate (feature_distill.gate_pull):
        the pull's weight from now on, the hunt's growth and, on an all-to-all backdoor, the release of the
        features the trigger drives beyond its destinations' own."""
        share = trigger_window_share(trigger)
        if share is not None:
            self.gate_record["trigger_window_share"] = share
        if self.features is None:
            return
        cfg, search = self.cfg, self.search
        gate = gate_pull(cfg, share, search.all_to_all, search.warp_suspected)
        shape = (f"{share:.2f} of the first hunt's trigger in one window" if share is not None
                 else "the first hunt's trigger is not an image, or all zero")
        self.feature_weight = cfg.feature_distill_weight if gate.acts else 0.0
        if gate.grows:
            search.radius_max = max(search.radius_max, cfg.feature_distill_norm_max)
        if not gate.acts:
            self.features.close()
            self.features = None
            state = f"is off: {gate.why_not}; {shape}"
        elif search.all_to_all:
            triggered = ops.apply_triggers(self.x, trigger[None], *cfg.input_bounds)[0]
            z = self.features.release(self.model, triggered, self.y, cfg.feature_distill_release, cfg.batch_size,
                                      self._autocast)
            released = int((z > cfg.feature_distill_release).sum())
            self.gate_record["feature_released"] = float(released)
            grows = f"; the trigger is spread, so the hunt may grow to L1 {search.radius_max:g}" if gate.grows else ""
            state = (f"acts on an all-to-all backdoor, releasing the {released} of {z.numel()} features the trigger "
                     f"drives more than {cfg.feature_distill_release:g} spreads beyond its destinations' ({shape}"
                     f"{grows})")
        elif search.warp_suspected:
            state = f"acts; the hunt does not grow (the warp check named the suspect; {shape})"
        else:
            state = f"acts; the hunt may grow to L1 {search.radius_max:g} ({shape})"
        self.gate_record["feature_distill"] = float(self.feature_weight)
        if self.verbose:
            print(f"[awm] feature pull (β = {cfg.feature_distill_weight:g}) {state}", file=sys.stderr, flush=True)

    @torch.no_grad()
    def _consider(self, best, record: dict[str, float], triggers: torch.Tensor):
        """Score the current masks (recorded as `record`) without test labels; keep the best snapshot.

        A backdoor sends triggered inputs to ONE class, a generic adversarial perturbation scatters them,
        so the score is the recovered triggers' own attack success rate, worst trigger: the largest
        share of the clean images not predicted as class c that the trigger sends to c, plus the masked
        model's error on the clean set's labels (a label-free proxy of ASR + clean error). Ties go to
        the later epoch.
        """
        lo, hi = self.cfg.input_bounds
        own = self._predictions()
        num_classes = int(max(int(own.max()), int(self.y.max())) + 1)
        target_rate = flips = torch.zeros((), device=self.device)
        for trigger in triggers:
            with self._autocast():
                shifted = torch.cat([self.model((chunk + trigger).clamp(lo, hi)).argmax(dim=1)
                                     for chunk in self.x.split(self.cfg.batch_size)])
            flips = torch.maximum(flips, (shifted != own).float().mean())
            sent = torch.zeros(num_classes, device=self.device).index_add_(0, shifted, (shifted != own).float())
            eligible = len(own) - torch.bincount(own, minlength=num_classes).float()
            target_rate = torch.maximum(target_rate, (sent / eligible.clamp(min=1)).max())
        score = float(target_rate + (own != self.y).float().mean())
        record["select_flip"], record["select_target"], record["select_score"] = float(flips), float(target_rate), score
        if best is None or score <= best[0]:
            return score, record["epoch"], [m.detach().clone() for m in self.masks]
        return best

    def _adam(self, lr: float) -> torch.optim.Adam:
        # The authors' plain Adam for the reference; one foreach kernel per op over all masks otherwise.
        return torch.optim.Adam(self.masks, lr=lr) if self.eager else torch.optim.Adam(self.masks, lr=lr, foreach=True)

    # ---- sampling ------------------------------------------------------------------------------

    def _minibatches(self):
        """`steps` minibatches of row indices drawn with replacement, fresh each call (their RandomSampler)."""
        index = torch.randint(0, self.x.shape[0], (self.cfg.steps, self.cfg.batch_size), generator=self.generator)
        yield from index.to(self.device)

    # ---- step 1: trigger recovery (inner max) ------------------------------------------------------

    def _recover_triggers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Triggers [K, C, H, W] (detached, inside the L1 ball) and the mean ascent loss: the targeted search's
        (K = 1), else the paper's ascent (awm_fast.ascent)."""
        if self.eager:
            return ascend_eager(self.model, self.x, self.cfg, self._minibatches(), self._autocast)
        self._set_masks_trainable(False)
        try:
            if self.search is not None:
                trigger, loss, _ = self.search.recover()
                return trigger, loss
            return ascend_batched(self.model, self.x, self._predictions(), self.cfg, self._minibatches(),
                                  self.generator, self.chunk, self._autocast)
        finally:
            self._set_masks_trainable(True)

    # ---- step 2: mask update (outer min) ---------------------------------------------------------------

    def _mask_step(self, optimizer: torch.optim.Optimizer, rows: torch.Tensor,
                   triggers: torch.Tensor | None) -> torch.Tensor:
        """One Adam step on the masks, then clamp to [0, 1]. Returns [loss, clean term, trigger term]
        (the data terms; the penalty is γ·mask_l1, recorded per epoch)."""
        alpha = 1.0 if triggers is None else self.cfg.alpha
        optimizer.zero_grad()
        if self.eager:
            clean_term, trigger_term = self._mask_losses_eager(rows, triggers)
            # γ‖m‖₁ through autograd, as their Regularization() does.
            l1 = torch.stack([m.abs().sum() for m in self.masks]).sum()
            self._backward(alpha * clean_term + (1 - alpha) * trigger_term + self.cfg.gamma * l1)
        else:
            clean_term, trigger_term = self._mask_backward_batched(rows, triggers, alpha)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if not self.eager and self.cfg.gamma:
            # The γ‖m‖₁ gradient, γ·sign(m), for every mask in one foreach op instead of a graph per layer.
            with torch.no_grad():
                torch._foreach_add_([m.grad for m in self.masks], torch._foreach_sign(self.masks),
                                    alpha=self.cfg.gamma)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        with torch.no_grad():
            if self.mask_pull:
                # m += p·(1 − m) = m·(1 − p) + p with p = lr·ρ: the pull back to 1 at the step's (decayed) rate.
                pull = optimizer.param_groups[0]["lr"] * self.mask_pull
                torch._foreach_mul_(self.masks, 1.0 - pull)
                torch._foreach_add_(self.masks, pull)
            torch._foreach_clamp_min_(self.masks, 0.0)
            torch._foreach_clamp_max_(self.masks, 1.0)
        data_loss = alpha * clean_term + (1 - alpha) * trigger_term
        return torch.stack([data_loss, clean_term, trigger_term]).detach()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _mask_losses_eager(self, rows: torch.Tensor, triggers: torch.Tensor | None):
        """The authors' two forward passes over the minibatch: (clean term, trigger term)."""
        images, labels = self.x[rows], self.y[rows]
        lo, hi = self.cfg.input_bounds
        zero = torch.zeros((), device=self.device)
        with self._autocast():
            trigger_term = zero if triggers is None else F.cross_entropy(
                self.model((images + triggers[0]).clamp(lo, hi)).float(), labels)
            clean_logits = self.model(images).float()
        return self._clean_loss(clean_logits, rows), trigger_term

    def _mask_backward_batched(self, rows: torch.Tensor, triggers: torch.Tensor | None, alpha: float):
        """Backpropagate α·clean + (1-α)·triggered over the distinct images and their K triggered copies.

        All (1+K)·U inputs go through the model in as few forwards as possible, each of at most
        forward_chunk images (eval-mode BatchNorm makes samples independent), with gradient accumulation
        across them: activation memory stays that of one chunk whatever K. Returns the detached
        (clean term, trigger term).
        """
        unique_rows, weights = distinct(rows)
        images, labels = self.x[unique_rows], self.y[unique_rows]
        u, k = len(unique_rows), (0 if triggers is None else self.cfg.num_triggers)
        inputs = images
        if triggers is not None:
            lo, hi = self.cfg.input_bounds
            inputs = torch.cat([images, ops.apply_triggers(images, triggers, lo, hi).flatten(0, 1)])
        clean_total = trigger_total = torch.zeros((), device=self.device)
        for chunk in self._chunks(u, inputs.shape[0]):
            with self._autocast(), self._capture_statistics(chunk.start == 0):
                logits = self.model(inputs[chunk]).float()
            # Rows [0, u) are the clean images, rows [u, (1+K)u) the triggered copies, trigger-major.
            clean_rows = range(chunk.start, min(chunk.stop, u))
            trigger_rows = range(max(chunk.start, u) - u, chunk.stop - u)
            clean = trigger = torch.zeros((), device=self.device)
            if len(clean_rows):
                piece = slice(clean_rows.start, clean_rows.stop)
                clean = self._clean_loss(logits[: len(clean_rows)], unique_rows[piece], weights[piece])
                if self.bn_drift is not None:  # all clean rows are in this chunk (_chunks)
                    clean = clean + self.bn_drift_weight * self.bn_drift.penalty(unique_rows, weights)
            if len(trigger_rows):
                index = torch.arange(trigger_rows.start, trigger_rows.stop, device=self.device) % u
                per_sample = F.cross_entropy(logits[len(clean_rows):], labels[index], reduction="none")
                trigger = (per_sample * weights[index]).sum() / k
            self._backward(alpha * clean + (1 - alpha) * trigger)
            clean_total, trigger_total = clean_total + clean.detach(), trigger_total + trigger.detach()
        return clean_total, trigger_total

    def _chunks(self, clean: int, total: int) -> list[slice]:
        """Slices of at most forward_chunk inputs over the `clean` images followed by their triggered copies; with the
        BatchNorm penalty the clean images get one slice of their own, since their statistics must be whole."""
        if self.bn_drift is None:
            return chunks(total, self.chunk)
        rest = chunks(total - clean, self.chunk) if total > clean else []
        return [slice(0, clean)] + [slice(clean + part.start, clean + part.stop) for part in rest]

    def _capture_statistics(self, first_chunk: bool):
        """The BatchNorm drift's capture around the forward of the clean images, else a no-op."""
        return self.bn_drift.capture() if self.bn_drift is not None and first_chunk else contextlib.nullcontext()

    def _clean_loss(self, logits: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor | None = None):
        """CE on the true labels, or KL to the original model's predictions; a batch mean, or Σ weights_i · loss_i.
        With feature_distill_weight, plus that weight times the features' drift of the forward that gave `logits`."""
        loss = self._label_loss(logits, rows, weights)
        if self.features is not None and self.feature_weight:
            loss = loss + self.feature_weight * self.features.penalty(rows, weights)
        return loss

    def _label_loss(self, logits: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor | None = None):
        """_clean_loss's terms on the outputs: CE, CE + λ·KL or KL (clean_loss, distill_weight)."""
        reduction = "mean" if weights is None else "none"
        if self.teacher_probs is None:
            loss = F.cross_entropy(logits, self.y[rows], reduction=reduction)
        elif self.distill_weight > 0:  # CE + λ·KL(original ‖ masked); never in paper mode (λ = 0 there)
            kl = F.kl_div(F.log_softmax(logits, dim=1), self.teacher_probs[rows], reduction="none").sum(dim=1)
            kl = kl * self.trust[rows]  # a batch mean over all rows, untrusted ones counting 0
            kl = kl.mean() if weights is None else kl
            loss = F.cross_entropy(logits, self.y[rows], reduction=reduction) + self.distill_weight * kl
        else:
            loss = F.kl_div(F.log_softmax(logits, dim=1), self.teacher_probs[rows],
                            reduction="batchmean" if weights is None else "none")
            loss = loss if weights is None else loss.sum(dim=1)
        return loss if weights is None else (loss * weights).sum()

    @torch.no_grad()
    def _predictions(self) -> torch.Tensor:
        """argmax of the current masked model on every sample: [N] int64."""
        with self._autocast():
            return torch.cat([self.model(chunk).argmax(dim=1) for chunk in self.x.split(self.cfg.batch_size)])

    @torch.no_grad()
    def _teacher_probs(self) -> torch.Tensor:
        """Softmax of the unpurified model (masks are all ones now) on every sample: [N, num_classes] fp32."""
        with self._autocast():
            return torch.cat([self.model(chunk).float().softmax(dim=1) for chunk in self.x.split(self.cfg.batch_size)])

    # ---- bookkeeping -------------------------------------------------------------------------------

    def _set_masks_trainable(self, trainable: bool) -> None:
        for mask in self.masks:
            mask.requires_grad_(trainable)

    def _autocast(self):
        return autocast(self.cfg, self.device)

    def _epoch_record(self, epoch: int, means: torch.Tensor, ascent_loss: torch.Tensor, triggers: torch.Tensor,
                      lr: float, start: float, residual: bool = False) -> dict[str, float]:
        with torch.no_grad():
            mask_l1 = torch.stack([m.sum() for m in self.masks]).sum()  # masks are >= 0
            numel = sum(m.numel() for m in self.masks)
            stats = torch.stack([*means, ascent_loss, mask_l1, triggers.flatten(1).abs().sum(1).max()]).tolist()
        record = {"epoch": epoch + 1, "loss": stats[0], "clean_loss": stats[1], "trigger_loss": stats[2],
                  "ascent_loss": stats[3], "mask_l1": stats[4], "mask_mean": stats[4] / numel,
                  "trigger_l1": stats[5], "lr_mask": lr}
        if residual:
            record["residual"] = 1.0  # a residual_outer epoch: the residual check before it found the suspect
        elif epoch >= self.cfg.outer:
            record["extra"] = 1.0  # an extra_outer epoch: the hunt before it still reached the suspect
        if epoch == 0:
            record.update(self.gate_record)
        if self.search is not None:
            record["suspect_class"] = float(self.search.suspect)
            record["all_to_all"] = float(self.search.all_to_all)  # the hunt moves images off their own labels
            record["search_radius"] = float(self.search.radius)  # the radius of the next epoch's hunt
        if self.eval_fn is not None:
            with torch.no_grad():
                record.update(self.eval_fn(self.model))
            self.model.eval()
        record["seconds"] = time.perf_counter() - start
        if self.verbose and self.cfg.log_every and (epoch + 1) % self.cfg.log_every == 0:
            _print_progress(record, self.cfg.outer)
        return record


def _print_progress(record: dict[str, float], outer: int) -> None:
    extras = "".join(f"  {key} {value:.4f}" for key, value in record.items()
                     if key not in HISTORY_KEYS and isinstance(value, (int, float)))
    extra = (" (extra: the hunt still reached the suspect)" if record.get("extra") else
             " (residual: the suspect still stood out)" if record.get("residual") else "")
    print(f"[awm] epoch {record['epoch']:>3}/{outer}{extra}  loss {record['loss']:.4f}"
          f"  clean {record['clean_loss']:.4f}  triggered {record['trigger_loss']:.4f}"
          f"  mask mean {record['mask_mean']:.4f}{extras}"
          f"  {record['seconds']:.2f}s", file=sys.stderr, flush=True)
