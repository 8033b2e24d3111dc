# Why the all-to-all check calls a model what it does: the check's universal leaving searches at several radius
# fractions (each with up to SEARCHES searches, a sink joining the staying classes after each), forced to run even where
# the suspect stands out, with each search's moved share, largest receiving share (sink), channels and the channels the
# rule needs; and the naming search's standout ratio.
#   AWM_CACHE=DIR SEARCHES=2 python check_diag.py DATASET MODEL ATTACK:SEED [FRACTIONS, e.g. 1,0.5,2]
# ATTACK "clean" is the never-poisoned model of the same training. Prints one JSON line.
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import cases

import awm_fast
from awm_fast import all_to_all, search, study
from awm_fast.all_to_all import _channels as channels
from awm_fast.data import few_shot_subset

dataset, model_name, case = sys.argv[1:4]
name, seed = case.rsplit(":", 1)
seed = int(seed)
fractions = [float(f) for f in (sys.argv[4] if len(sys.argv) > 4 else "1,0.5,2").split(",")]
searches = int(os.environ.get("SEARCHES", "2"))
epochs = None if dataset == "digits" else (10 if model_name == "small-resnet" else 3)
if name == "clean":
    split = cases._split(dataset)
    settings = study.StudySettings(cache=cases.CACHE, train_limit=None if dataset == "digits" else 12000,
                                   train_epochs=epochs)
    model = study._clean_model(settings, split, dataset, model_name, seed)
    few = few_shot_subset(split.x_test, split.y_test, 1, seed=seed)[:2]
else:
    model, _, few, _ = cases.load_case(name, seed, dataset, model_name, epochs)
log = {"case": f"{dataset}/{model_name}/{case}"}


def never_stands_out(reach, suspect):
    others = torch.cat([reach[:suspect], reach[suspect + 1:]])
    log["standout"] = round(float(others.min() / reach[suspect]), 2)
    return False  # the check runs on every model: its rows are what this script is for


def logged_check(self, channel_share):
    rows, radius, own, num_classes = [], self.radius, self._labels(), self._num_classes()
    for fraction in fractions:
        self.radius = radius * fraction
        generator, staying = self._check_generator(), [self.suspect]
        for index in range(searches):
            if num_classes - len(staying) < 2:
                break
            trigger, loss = self._leaving_search(generator, staying)
            moved = self._labels(trigger)
            stays = torch.tensor(staying)
            eligible = ~torch.isin(own, stays)
            away = eligible & (moved != own) & ~torch.isin(moved, stays)
            received = torch.bincount(moved[away], minlength=num_classes).float()
            total = float(received.sum())
            rows.append({"f": fraction, "search": index, "staying": list(staying),
                         "moved": round(total / float(eligible.sum()), 2),
                         "sink": round(float(received.max()) / max(total, 1.0), 2),
                         "channels": round(channels(own[away], moved[away], num_classes), 2) if total else 0,
                         "classes_left": num_classes - len(staying), "loss": round(float(loss), 2)})
            if total and float(received.max()) > all_to_all.SINK_SHARE * total:
                staying = [*staying, int(received.argmax())]
                continue
            break
    self.radius = radius
    log.update(rows=rows, suspect=self.suspect)
    log["channel_share"] = channel_share
    return checked(self, channel_share)


checked = search.TargetedSearch._check_all_to_all
search.stands_out = never_stands_out
search.TargetedSearch._check_all_to_all = logged_check
result = awm_fast.purify(model, few, seed=seed, outer=1, extra_outer=0, residual_check=False, verbose=False)
log["called_all_to_all"] = result.history[0].get("all_to_all")
print(json.dumps(log))
