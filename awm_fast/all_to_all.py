"""The all-to-all check's rule (rounds 12, 17 and 26): what the naming search's per-class reach and one universal
leaving search's moves say about the backdoor.

TargetedSearch (awm_fast/search.py) runs the searches; this module reads them. An all-to-one backdoor makes one
class far easier to reach than any other (stands_out: then the check does not run). An all-to-all backdoor's
universal trigger moves most images, each class to classes of its own (leaving_verdict): where an image goes depends
on where it comes from, which a clean model's universal perturbation, piling the images on one sink, does not show.
How many classes the rule asks as channels depends on how evenly the classes are reached (channel_share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SINK_SHARE = 0.5  # a class that receives more than this share of the images a trigger moves is a sink
# All-to-all: the trigger moves at least ALL_TO_ALL_MOVED of the images it may move, no sink takes them, and where
# an image goes depends on where it comes from: exp(mutual information of source and destination class), the
# effective number of source-to-destination channels, is at least ALL_TO_ALL_CHANNELS of the classes that may
# receive them (a permutation of n classes has n channels, a sink 1). Measured (docs/EFFICACY.md, round 12): 3.2-4.6
# on the three all-to-all SmallCNNs, 2.2-3.9 on the three ResNets; at most 2.2 on the other attacks' models.
ALL_TO_ALL_MOVED = 0.5
ALL_TO_ALL_CHANNELS = 1 / 3
# Where no class is reached even ALL_TO_ALL_EVEN times more easily than every other (the naming search's cross-entropy),
# nothing points to an all-to-one target and the rule asks ALL_TO_ALL_CHANNELS_EVEN of the classes instead (round 26).
# Measured (docs/EFFICACY.md, round 26): the five held-out all-to-all models a third missed at every radius (a
# watermark trigger, a blend trigger, two small ResNets, an 8x8 digits SmallCNN) have ratios of 1.06-1.63 and 0.26-0.32
# of the classes left as channels. The gate is what separates on the small ResNets, not the channels: an all-to-one
# Blend ResNet (ratio 4.71) and a never-poisoned one (4.1) reach 0.26 and 0.31 with half moved and no sink, and are
# asked a third. The lowest all-to-one ratio measured is that ResNet's 4.71 (the SmallCNNs' at least 47.9; round 17:
# 9.1); the all-to-all ResNets have 1.06 and 1.2.
ALL_TO_ALL_EVEN = 2.0
ALL_TO_ALL_CHANNELS_EVEN = 1 / 4
# The check runs only when no class stands out (round 17): an all-to-one backdoor makes its target far easier to reach
# than any other class, and that class is then the backdoor's, whatever else a universal trigger of the radius can
# do. Stands out: the suspect's cross-entropy is at least ALL_TO_ALL_STANDOUT times below every other class's (two
# orders of magnitude). Measured on the naming search (docs/EFFICACY.md, round 17): 1.7-10.2 times on ten all-to-all
# SmallCNNs (Fashion-MNIST, digits, and three held-out ones with a checkerboard patch), 1.1-1.3 on the three small
# ResNets; 180 and 590 times on the two held-out all-to-one BadNets SmallCNNs (targets 5 and 7) that the check called
# all-to-all, so that the hunt left their target alone (ASR 73.5 and 93.0 after purify). A suspect below the bar is
# checked as before: the all-to-one models' ratios range from 9.1 (a model the check leaves alone) to 120,000.
ALL_TO_ALL_STANDOUT = 100.0


def stands_out(reach: torch.Tensor, suspect: int) -> bool:
    """Whether class `suspect` of the naming search's per-class losses reach [S] fp32 (each class's best candidate's
    cross-entropy, inf for a class with nothing to reach) is reached ALL_TO_ALL_STANDOUT times more easily than
    every other class. False when there is no other class to compare with, or the suspect itself is unreachable."""
    runner_up = _runner_up(reach, suspect)
    if runner_up is None or not math.isfinite(float(reach[suspect])):
        return False
    return float(reach[suspect]) * ALL_TO_ALL_STANDOUT <= runner_up


def _runner_up(reach: torch.Tensor, suspect: int) -> float | None:
    """The lowest of the naming search's per-class losses reach [S] fp32 but the suspect's; None when there is no
    other class."""
    others = torch.cat([reach[:suspect], reach[suspect + 1:]])
    return float(others.min()) if others.numel() else None


def leaving_verdict(own: torch.Tensor, moved: torch.Tensor, staying: Sequence[int], num_classes: int,
                    channel_share: float = ALL_TO_ALL_CHANNELS) -> tuple[int | None, bool]:
    """What one universal leaving search of the all-to-all check shows, from the images' labels [M] int64 without
    (own) and with (moved) its trigger, a move to a staying class counting as none: (sink, all_to_all). sink: the class
    that takes more than SINK_SHARE of the images moved, if one does (all_to_all is then False). all_to_all: the
    trigger moves at least ALL_TO_ALL_MOVED of the images whose own label is not staying, each class to classes of its
    own (at least channel_share of the classes left, in _channels), as an all-to-all backdoor's trigger does."""
    stays = torch.tensor(list(staying), device=own.device, dtype=own.dtype)
    eligible = ~torch.isin(own, stays)
    away = eligible & (moved != own) & ~torch.isin(moved, stays)
    received = torch.bincount(moved[away], minlength=num_classes).float()
    total = float(received.sum())
    if total == 0:
        return None, False
    if float(received.max()) > SINK_SHARE * total:
        return int(received.argmax()), False
    channels = _channels(own[away], moved[away], num_classes)
    return None, (total >= ALL_TO_ALL_MOVED * float(eligible.sum())
                  and channels >= channel_share * (num_classes - len(staying)))


def channel_share(reach: torch.Tensor, suspect: int) -> float:
    """The share of the classes left that the all-to-all check asks as channels, from the naming search's per-class
    losses reach [S] fp32: ALL_TO_ALL_CHANNELS_EVEN where the suspect is not reached even ALL_TO_ALL_EVEN times more
    easily than every other class, else ALL_TO_ALL_CHANNELS."""
    runner_up = _runner_up(reach, suspect)
    even = runner_up is not None and float(reach[suspect]) * ALL_TO_ALL_EVEN > runner_up
    return ALL_TO_ALL_CHANNELS_EVEN if even else ALL_TO_ALL_CHANNELS


def _channels(source: torch.Tensor, destination: torch.Tensor, num_classes: int) -> float:
    """exp(I(source; destination)) of paired class labels [n] int64 (n > 0): 1 when where an image goes does not
    depend on where it comes from, up to num_classes for a permutation."""
    joint = torch.bincount(source * num_classes + destination, minlength=num_classes ** 2).view(num_classes, -1)
    p = joint.double() / joint.sum()
    independent = p.sum(dim=1, keepdim=True) * p.sum(dim=0, keepdim=True)
    seen = p > 0
    return math.exp(float((p[seen] * (p[seen] / independent[seen]).log()).sum()))
