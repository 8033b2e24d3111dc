"""The targeted trigger search of AWMConfig.trigger_search="targeted" (docs/EFFICACY.md, rounds 6, 7 and 11).

A backdoor makes its target class reachable from any image by a small patch; a clean class is not. The first
search (outer epoch 1, on the unmasked model) names the target: for every class c, `trigger_restarts`
candidate triggers descend the cross-entropy to c of the search images not predicted as c (x + Δ clamped to
input_bounds, L1-normalised gradient steps, exact projection onto the radius targeted_norm), and the class
whose best candidate reaches it most easily (lowest cross-entropy) is the suspect. It stays the suspect: every
later search hunts for its trigger against the current masks, continuing the best candidate so far beside
fresh random ones, and that one trigger drives the mask step. Round 7 measured why: a search free to switch
classes leaves the backdoor once the masks resist its first trigger, and a warm-started candidate alone gets
stuck where the masks learned to resist it. When the hunt's best trigger no longer reaches the suspect, the next
hunt searches a larger radius, up to targeted_norm_max (round 11; by default beyond one image per class, or with
bn_drift_weight, where the masks no longer erase a dense trigger by collateral damage), or up to
feature_distill_norm_max where the feature pull acts (round 23). The search images are
the few-shot images and their kept augmented copies: a trigger that must work on all of them is universal, as a
backdoor's is, rather than an adversarial perturbation of ten images.

An all-to-all backdoor (class s to s + 1) makes no one class reachable from every image, so after naming the suspect
the first search also checks for one (round 12): a universal trigger of the same radius, then of half of it (round
15), then of twice it (round 26: a dense trigger's size, which the hunt then keeps), that moves the images off their
own labels, counting a move to the suspect as staying (and, when the trigger's moves pile up on one more class, that
class too: such sinks are how clean models fail, one class at a time). A trigger that moves most images, each class
to a class of its own (where an image goes depends on where it comes from), is an all-to-all backdoor's; the hunt
then keeps that objective. The check runs only when the suspect does not stand out (round 17): a class reached two
orders of magnitude more easily than any other is an all-to-one backdoor's target, and the check, free to ignore that
class, can call such a model all-to-all. Where no class stands out even twice, it asks fewer channels (round 26).
The rule that reads the check's searches is awm_fast.all_to_all; the losses the searches descend, awm_fast.reach.

awm_fast.warp.warp_suspect does the same for warping backdoors, which no additive patch names: per class, a
half-pixel smooth flow field; a class such warps reach is a warping backdoor's target.

Both cost classes x images work per step. On a model with more classes than cfg.class_shortlist each first screens
every class cheaply (round 15: one candidate or flow field per class, a few steps on a few images) and searches in
full only the shortlist the screen reaches most easily, so their cost grows with the classes through the screen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from awm_fast import ops
from awm_fast.all_to_all import channel_share, leaving_verdict, stands_out
from awm_fast.batching import autocast, forward_chunk
from awm_fast.config import AWMConfig
from awm_fast.reach import away_losses, reach_losses

# Measured with these values (round 6):
TARGETED_STEPS = 10  # descent steps per outer epoch (the suspect's best candidate continues across epochs)
TARGETED_STEP_SIZE = 0.5  # each step moves a candidate by this fraction of the radius in L1, then projects
TARGETED_MAX_IMAGES = 64  # at most this many search images per step (a fresh random subset when there are more)
TARGETED_FRESH = 8  # once the suspect is named: fresh random candidates per epoch beside the best one so far
# The hunt's radius grows (round 11): after an epoch whose best trigger no longer reaches the suspect (mean
# cross-entropy above TARGETED_REACH_CE, the warp check's threshold), the next epoch searches a radius
# TARGETED_GROWTH times larger, up to targeted_norm_max. A dense backdoor (Blend) outlives the masks that erased
# its patch-sized stand-in; a larger trigger finds it again.
TARGETED_REACH_CE = 1.0
TARGETED_GROWTH = 1.5  # measured with this factor and targeted_norm_max = 4 x targeted_norm (round 11)
# The class screen (cfg.class_shortlist, round 15): on a model with more classes than the shortlist, every class first
# gets one candidate from zero descending SCREEN_STEPS steps on the same SCREEN_IMAGES search images (about 30x less
# work per class than the naming search's trigger_restarts x TARGETED_STEPS steps on TARGETED_MAX_IMAGES), in blocks
# of SCREEN_BLOCK classes so that memory does not grow with the classes; the naming search then runs on the
# shortlist, the classes the screen reaches most easily.
SCREEN_STEPS = 5
SCREEN_IMAGES = 16
SCREEN_BLOCK = 64
# The all-to-all check (round 12), measured on Fashion-MNIST with these values. Its draws come from a generator of
# its own, so that purify's draws (and results) are what they were wherever it finds no all-to-all backdoor.
ALL_TO_ALL_STEPS = 30  # descent steps of each search (TargetedSearch's step: L1-normalised, exact projection)
ALL_TO_ALL_RESTARTS = 4  # candidates per search: one from zero, the others random
ALL_TO_ALL_SEARCHES = 2  # at most: each later one also counts the last one's sink as staying
# The check's radii, as fractions of the suspect's, tried in this order until one finds an all-to-all backdoor
# (round 15): the suspect's own radius as in round 12, then half of it. A universal trigger much larger than the
# backdoor's patch has natural destinations of its own: on 8x8 digits (radius 10 on 64 pixels, a 2x2 patch of L1 <= 4)
# it piled the moved images on 2-3 classes and found 1 of 5 all-to-all models; at half the radius it found the 4 it
# ran on. The small ResNets' all-to-all triggers move fewer than half the images at half the radius and are found at
# the full one (2 of 3). No model of another attack it ran on (14 digits, 12 + 12 Fashion-MNIST) crossed the rule at
# either radius (docs/EFFICACY.md, round 15). Where the full radius finds the backdoor, everything is as in round 12.
# Round 26 added twice the radius, tried last: a dense trigger (an all-to-all backdoor with a blend trigger) moves the
# images source-dependently only at its own size; smaller universal triggers pile them on sinks. Where twice the radius
# finds the backdoor, the hunt keeps that radius (the suspect's misses the trigger: 17.8% ASR left instead of 7.3).
# None of the table's 12 patch and blend Fashion-MNIST SmallCNNs (all-to-one) crossed the rule at twice the radius,
# the check forced to run on each (docs/EFFICACY.md, round 26).
ALL_TO_ALL_RADII = (1.0, 0.5, 2.0)
# purify's residual check (cfg.residual_check, round 21): after the loop, every class is searched once more on the
# purified model, at RESIDUAL_RADIUS_FACTOR times the hunt's radius, and purify warns when the suspect is still
# reached more than RESIDUAL_STANDOUT times as easily (in cross-entropy) as the runner-up. Measured at twice the radius
# (docs/EFFICACY.md, round 21): at most 0.15 on 12 purified Fashion-MNIST SmallCNNs (0.5-7.9% ASR left), 2.9-6.0
# on five LeNet-5s (6.9-32% left), 3.0-11.3 on 5 of 13 MLPs (9.7-64% left; the others 0.43-1.64), and 0.54-1.48 on
# never-poisoned MLPs and LeNet-5s, whose easiest class is named too: hence a bar of 2, not 1. Where it is above the
# bar, the loop masks on (cfg.residual_outer, round 22: awm_fast.loop.AWMLoop._residual_epochs).
RESIDUAL_RADIUS_FACTOR = 2.0
RESIDUAL_STANDOUT = 2.0


class TargetedSearch:
    """Per-class trigger candidates over the search images x [M, C, H, W] (the few-shot images and their kept
    augmented copies, on the run device); `cfg` must be resolved (targeted_norm set).

    The first search names the suspect (among every class, or cfg.class_shortlist classes picked by a screen; with
    cfg.all_to_all_check it also checks for an all-to-all backdoor); every later one hunts for its trigger alone: the
    best candidate so far, continued, beside TARGETED_FRESH fresh ones.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, cfg: AWMConfig, generator: torch.Generator,
                 suspect: int | None = None) -> None:
        """suspect: a class already suspected (warp_suspect's); the search then hunts for its trigger only."""
        self.model, self.x, self.cfg, self.generator = model, x, cfg, generator
        self.device = x.device
        self.chunk = forward_chunk(cfg, x.device)
        self.suspect = suspect  # the suspected target class, named by the first search (or given) and kept
        self.warp_suspected = suspect is not None  # given by purify's warp check (warp_suspect)
        self.best = None  # [C, H, W] the suspect's trigger of the last search
        self.radius = cfg.targeted_norm  # L1 radius of the candidates; grows up to radius_max
        self.radius_max = cfg.targeted_norm_max  # raised to cfg.feature_distill_norm_max where the feature pull acts
        # All-to-all (found by the first search's check): the hunt then moves images off their own labels, counting
        # a move to a class of `staying` (the suspect and the sinks the check met) as none.
        self.all_to_all = False
        self.staying: list[int] = []

    def recover(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One epoch of the search: (the suspect's trigger [1, C, H, W], its mean loss (fp32 scalar): cross-entropy
        to the suspect class, or for an all-to-all backdoor the cross-entropy of leaving the staying classes, the
        suspect class)."""
        restarts = self.cfg.trigger_restarts
        naming = self.suspect is None
        searched = self._classes_to_name() if naming else None  # [S] int64: the classes the naming search tries
        if naming or self.best is None:
            candidates = self._starting_candidates(searched.shape[0] if naming else 1)
        else:
            candidates = torch.cat([self.best[None], self._random_candidates(TARGETED_FRESH)])
        if naming:
            classes = searched.repeat_interleave(restarts)
        elif self.all_to_all:
            classes = None
        else:
            classes = torch.full((candidates.shape[0],), self.suspect, device=self.device)
        candidates, losses = self._descend(candidates, classes, TARGETED_STEPS, staying=self.staying)
        if naming:
            # The class reached most easily (lowest cross-entropy of its best candidate) is the suspect.
            per_class = losses.view(-1, restarts)
            reach = per_class.min(dim=1).values  # [S] each searched class's best candidate
            easiest = int(reach.argmin())
            self.suspect = int(searched[easiest])
            chosen = easiest * restarts + int(per_class[easiest].argmin())
            check = self.cfg.all_to_all_check and not stands_out(reach, easiest)
            found = self._check_all_to_all(channel_share(reach, easiest)) if check else None
            if found is not None:
                candidates, losses, chosen = found[0][None], found[1][None], 0
        else:
            chosen = int(losses.argmin())
            # The masks resist a trigger of this size: look wider (the host reads the loss only while it can grow).
            if self.radius < self.radius_max and float(losses[chosen]) > TARGETED_REACH_CE:
                self.radius = min(self.radius * TARGETED_GROWTH, self.radius_max)
        self.best = candidates[chosen]
        return self.best[None].clone(), losses[chosen], self.suspect

    def suspect_standout(self, radius: float) -> float:
        """How much more easily the suspect is reached than any other class now, by triggers of L1 `radius`: the
        runner-up's reach over the suspect's, each class's reach being the mean cross-entropy of its best candidate
        after the naming search's own search (trigger_restarts candidates, TARGETED_STEPS steps; on a model with
        more than cfg.class_shortlist classes, the classes its screen reaches most easily, at least two, and the
        suspect). Above 1 the suspect is still the class reached most easily. Draws from a generator of its own
        and leaves the search as it found it (radius, generator), so a later epoch or run is the same with or
        without this call."""
        saved = self.radius, self.generator
        self.radius = radius
        self.generator = torch.Generator().manual_seed(saved[1].initial_seed() + 2)
        restarts = self.cfg.trigger_restarts
        try:
            classes = self._classes_to_name(minimum=2)  # a runner-up is needed even with a shortlist of one
            if not bool((classes == self.suspect).any()):
                classes = torch.cat([classes, torch.tensor([self.suspect], device=self.device)])
            candidates = self._starting_candidates(classes.shape[0])
            _, losses = self._descend(candidates, classes.repeat_interleave(restarts), TARGETED_STEPS)
        finally:
            self.radius, self.generator = saved
        reach = losses.view(-1, restarts).min(dim=1).values  # [S] per class searched
        suspect = classes == self.suspect
        # A suspect at cross-entropy 0 (float32 underflow) with any other class above it stands out without bound.
        return float(reach[~suspect].min() / reach[suspect].min().clamp(min=torch.finfo(reach.dtype).tiny))

    def _classes_to_name(self, minimum: int = 1) -> torch.Tensor:
        """The classes [S] int64 the naming search tries: every class, or on a model with more classes than
        cfg.class_shortlist the shortlist its screen reaches most easily (easiest first), of at least `minimum`."""
        num_classes = self._num_classes()
        if not screens_classes(self.cfg, num_classes):
            return torch.arange(num_classes, device=self.device)
        return self._screen(num_classes).argsort()[: max(self.cfg.class_shortlist, minimum)]

    def _starting_candidates(self, classes: int) -> torch.Tensor:
        """[classes · trigger_restarts, C, H, W] class-major: per class one candidate from zero, then
        trigger_restarts - 1 random ones of L1 norm radius / 2."""
        restarts = self.cfg.trigger_restarts
        candidates = self._random_candidates(classes * restarts)
        candidates[::restarts] = 0.0
        return candidates

    def _screen(self, num_classes: int) -> torch.Tensor:
        """Per class, how easily it is reached [num_classes] fp32: the mean cross-entropy of one candidate from zero
        after SCREEN_STEPS steps on the same SCREEN_IMAGES search images (inf for a class every one of them
        already is), SCREEN_BLOCK classes at a time."""
        count = self.x.shape[0]
        rows = torch.randperm(count, generator=self.generator)[:SCREEN_IMAGES].to(self.device)
        losses = []
        for block in torch.arange(num_classes, device=self.device).split(SCREEN_BLOCK):
            candidates = torch.zeros(block.shape[0], *self.x.shape[1:], device=self.device)
            losses.append(self._descend(candidates, block, SCREEN_STEPS, rows=rows)[1])
        return torch.cat(losses)

    def _check_all_to_all(self, share: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """After naming the suspect: (the all-to-all trigger [C, H, W], its loss) when the backdoor is all-to-all
        (then self.all_to_all and self.staying are set), else None (and nothing is changed). Checks at each radius
        of ALL_TO_ALL_RADII in turn, asking `share` of the classes left as channels (all_to_all.channel_share);
        the hunt keeps the suspect's radius, or a larger one that found the backdoor."""
        suspect_radius, found = self.radius, None
        for fraction in ALL_TO_ALL_RADII:
            self.radius = suspect_radius * fraction  # _descend and _random_candidates search self.radius
            found = self._check_all_to_all_at_radius(share)
            if found is not None:
                break
        self.radius = suspect_radius
        if found is not None and fraction > 1.0:
            # A larger radius found a trigger the suspect's could not: the hunt searches at its size from now on.
            self.radius = self.radius_max = suspect_radius * fraction
        elif found is not None and fraction != 1.0:
            # A smaller radius tells that the backdoor is all-to-all and which classes stay; the trigger of the first
            # mask step is searched at the hunt's radius, as the hunt will search it.
            found = self._leaving_search(self._check_generator(), self.staying)
        return found

    def _check_all_to_all_at_radius(self, share: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """_check_all_to_all at self.radius.

        Up to ALL_TO_ALL_SEARCHES universal searches move the images off their own labels, a move to a staying
        class counting as none; staying starts as [suspect] and gains each search's sink. Draws from a generator
        of its own (seeded from the search's, the same at every radius), so the hunt's draws do not depend on
        whether the check ran.
        """
        generator = self._check_generator()
        own, num_classes = self._labels(), self._num_classes()
        staying = [self.suspect]
        for _ in range(ALL_TO_ALL_SEARCHES):
            if num_classes - len(staying) < 2:  # nothing left to spread over (and leaving would be impossible)
                break
            trigger, loss = self._leaving_search(generator, staying)
            sink, all_to_all = leaving_verdict(own, self._labels(trigger), staying, num_classes, share)
            if sink is not None:  # count it as staying and search again
                staying = [*staying, sink]
                continue
            if all_to_all:
                self.all_to_all, self.staying = True, staying
                return trigger, loss
            break
        return None

    def _check_generator(self) -> torch.Generator:
        """The all-to-all check's own generator, seeded from the search's: the same draws at every radius."""
        return torch.Generator().manual_seed(self.generator.initial_seed() + 1)

    def _leaving_search(self, generator: torch.Generator, staying: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One universal search of the check at self.radius: ALL_TO_ALL_RESTARTS candidates (the first from zero)
        descend the loss of leaving the images' own labels, a move to a class of `staying` counting as none. Returns
        the best one [C, H, W] and its loss (fp32 scalar)."""
        candidates = self._random_candidates(ALL_TO_ALL_RESTARTS, generator)
        candidates[0] = 0.0
        candidates, losses = self._descend(candidates, None, ALL_TO_ALL_STEPS, generator, staying)
        best = int(losses.argmin())
        return candidates[best], losses[best]

    def _descend(self, candidates: torch.Tensor, classes: torch.Tensor | None, steps: int,
                 generator: torch.Generator | None = None, staying: Sequence[int] = (),
                 rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`steps` descent steps of candidates [K, C, H, W] toward classes [K], or with classes=None off the
        images' own labels, a move to a class of `staying` counting as none: (the candidates, each one's mean loss
        [K] fp32, measured before the last step). generator: for the image subsets; None = the search's. rows
        [U] int64: the search images of every step (None: each step draws its own, _batch_rows)."""
        cfg = self.cfg
        lo, hi = cfg.input_bounds
        own_labels = self._labels()  # the masks are frozen during the search: they hold for the whole epoch
        for _ in range(steps):
            batch = rows if rows is not None else self._batch_rows(generator)
            candidates.requires_grad_(True)
            perturbed = ops.apply_triggers(self.x[batch], candidates, lo, hi)  # [K, U, C, H, W]
            if classes is None:
                grad_flat, losses = away_losses(self.model, perturbed.detach().flatten(0, 1), candidates.shape[0],
                                                own_labels[batch], list(staying), cfg, self.chunk)
            else:
                grad_flat, losses = reach_losses(self.model, perturbed.detach().flatten(0, 1), classes,
                                                 own_labels[batch], cfg, self.chunk)
            (grad,) = torch.autograd.grad(perturbed, candidates, grad_flat.view_as(perturbed))
            candidates = candidates.detach()
            # Descent with a step of fixed L1 length whatever the gradient's scale (it shrinks as CE falls).
            norms = grad.flatten(1).abs().sum(dim=1).clamp(min=torch.finfo(grad.dtype).tiny)
            direction = -grad / norms.view(-1, *[1] * (grad.dim() - 1))
            ops.trigger_step(candidates, direction, TARGETED_STEP_SIZE * self.radius, self.radius, "plain", "exact")
        return candidates, losses

    def _labels(self, trigger: torch.Tensor | None = None) -> torch.Tensor:
        """The model's labels [M] int64 of the search images, under `trigger` [C, H, W] when given."""
        lo, hi = self.cfg.input_bounds
        labels = []
        with torch.no_grad(), autocast(self.cfg, self.device):
            for part in self.x.split(self.chunk):
                inputs = part if trigger is None else ops.apply_triggers(part, trigger[None], lo, hi)[0]
                labels.append(self.model(inputs).argmax(dim=1))
        return torch.cat(labels)

    def _num_classes(self) -> int:
        with torch.no_grad(), autocast(self.cfg, self.device):
            return self.model(self.x[:1]).shape[1]

    def _random_candidates(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[count, C, H, W] random points of L1 norm radius / 2, on the device (drawn from `generator`, None = the
        search's)."""
        generator = generator if generator is not None else self.generator
        return random_l1_points(count, self.x.shape[1:], 0.5 * self.radius, generator).to(self.device)

    def _batch_rows(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Row indices of this step's search images: all of them, or a fresh random subset of
        TARGETED_MAX_IMAGES when there are more (drawn from `generator`, None = the search's)."""
        count = self.x.shape[0]
        if count <= TARGETED_MAX_IMAGES:
            return torch.arange(count, device=self.device)
        generator = generator if generator is not None else self.generator
        return torch.randperm(count, generator=generator)[:TARGETED_MAX_IMAGES].to(self.device)


def screens_classes(cfg: AWMConfig, num_classes: int) -> bool:
    """Whether the searches screen a model's classes first: it has more than cfg.class_shortlist (None: never)."""
    return cfg.class_shortlist is not None and num_classes > cfg.class_shortlist


def random_l1_points(count: int, shape: tuple[int, ...], norm: float, generator: torch.Generator) -> torch.Tensor:
    """[count, *shape] fp32 CPU points of L1 norm `norm` each: uniform noise in [-1, 1], rescaled. The random starts
    of the trigger searches (targeted candidates, the untargeted search's restarts)."""
    noise = torch.rand((count, *shape), generator=generator) * 2 - 1
    norms = noise.flatten(1).abs().sum(1).view(-1, *[1] * len(shape))
    return noise * (norm / norms)
