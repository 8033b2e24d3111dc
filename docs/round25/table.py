"""Round 25's tables from the raw runs: python table.py (in this folder).

runs.jsonl: Fashion-MNIST SmallCNNs retrained this round, one image per class, 2,000 eval images (docs/round21/
knob_probe.py's runs, with "a2a", "fd", "share" and "standout" for its all_to_all, feature_distill, window_share and
suspect_standout). "build" says which code ran: "round 24" (main at cb16acd), "probe: suspect release" (the release
against the suspect's own images, on every all-to-one suspect), "probe: destination release" (the release as landed,
but on every suspect, all-to-one ones included; on all-to-all ones it is the landed code), "landed".
digits_all_to_all.jsonl: the 8x8 digits all-to-all models,
round 24's default ({}) and the destination-release probe; digits_final.jsonl: the landed default on two of them,
and the pull without the release (a threshold of 10^6) on the four the all-to-all check finds.
heldout_runs.jsonl, resnet_all_to_all.jsonl: held-out models (the all-to-all check fires on none of them).
"""

import collections
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    with open(os.path.join(HERE, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def variant(run):
    overrides = ", ".join(f"{key.removeprefix('feature_distill_')}={value}" for key, value in run["overrides"].items())
    return f"{run.get('build', 'landed')} {{{overrides}}}"


def acc_asr(text):
    return tuple(float(part) for part in text.split("/"))


def table(runs):
    variants = list(dict.fromkeys(variant(run) for run in runs))
    cells = collections.defaultdict(dict)
    for run in runs:
        cells[run["case"]][variant(run)] = run
    print("| model | before | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 2) + "|")
    per_attack = collections.defaultdict(lambda: collections.defaultdict(list))
    for case in sorted(cells):
        before = next(iter(cells[case].values()))["before"]
        row = []
        for name in variants:
            run = cells[case].get(name)
            row.append(f"{run['after']}" + (f" ({run['released']:.0f} released)" if run and run.get("released") else "")
                       if run else "")
            if run:
                per_attack[case.rsplit(":", 1)[0]][name].append((*acc_asr(run["after"]), acc_asr(before)[0]))
        print(f"| {case} | {before} | " + " | ".join(row) + " |")
    print()
    print("| attack | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for attack, by_variant in sorted(per_attack.items()):
        row = []
        for name in variants:
            values = by_variant.get(name, [])
            if values:
                acc, asr, before = (sum(column) / len(values) for column in zip(*values, strict=True))
                row.append(f"{acc:.1f} / {asr:.1f} (drop {before - acc:.1f}, n={len(values)})")
            else:
                row.append("")
        print(f"| {attack} | " + " | ".join(row) + " |")
    print()


def todays_default(runs):
    """Table R25-c: today's default on each of the 18 models: the landed code's run where there is one, else round
    24's default on an all-to-one model (the same code path there, bit for bit: badnets:0 ran on both, 84.5 / 4.8)
    and the destination-release probe on an all-to-all one (the landed code on an all-to-all suspect)."""
    chosen = {}
    for run in runs:
        if run["overrides"]:
            continue
        if run["build"] == "landed" or run["case"] not in chosen:
            chosen[run["case"]] = run
    for run in runs:
        if run["case"].startswith("all-to-all") and run["overrides"] == {"feature_distill_release": 2}:
            chosen[run["case"]] = {**run, "build": "landed"}
    return [{**run, "overrides": {}, "build": "today's default"} for run in chosen.values()]


fashion = load("runs.jsonl")
table(fashion)
table(todays_default(fashion))
table(load("digits_all_to_all.jsonl") + load("digits_final.jsonl"))
