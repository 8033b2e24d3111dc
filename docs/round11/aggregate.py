# Table R11-a: python aggregate.py runs.txt [label]. runs.txt holds docs/round10/probe.py's RESULT lines of this
# round (the tree's growing hunt radius, with the overrides named in the label); compared with the default of
# rounds 8-9 (round 9's ResNet CSVs, round 8's r8f20 SmallCNN rows) and round 10's bn_drift_weight=10,
# targeted_norm=40 runs, on the same models, images and seeds. Prints mean ASR after (mean ACC after, mean drop)
# [per-seed ASR], then each column's mean over the attacks.
import csv
import os
import sys
from collections import defaultdict

HERE = os.path.dirname(__file__)
ATTACKS = ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet")
MODELS = ("small-resnet", "small-cnn")


def results(path):
    """{(model, attack, seed): (asr after, acc after, acc before)} from RESULT lines."""
    runs = {}
    for line in open(path):
        if line.startswith("RESULT"):
            # RESULT MODEL ATTACK SEED VARIANT [overrides] ACC a -> b ASR c -> d S s
            fields = line.split()
            acc = fields.index("ACC")
            runs[fields[1], fields[2], int(fields[3])] = (float(fields[acc + 7]), float(fields[acc + 3]),
                                                          float(fields[acc + 1]))
    return runs


new = results(sys.argv[1])
label = sys.argv[2] if len(sys.argv) > 2 else "round 11"
radius40 = results(os.path.join(HERE, "..", "round10", "bn_drift_radius40_runs.txt"))
before = {key: value[2] for key, value in radius40.items()}
default = {}
for name in ("small_resnet_10_epochs.csv", "small_resnet_10_epochs_seeds_1_2.csv"):
    for row in csv.DictReader(open(os.path.join(HERE, "..", "round9", name))):
        if row["method"] == "awm-improved":
            key = "small-resnet", row["attack"], int(row["seed"])
            default[key] = (float(row["asr_after"]), float(row["acc_after"]), before[key])
for row in csv.DictReader(open(os.path.join(HERE, "..", "round10", "small_cnn_default_r8f20.csv"))):
    key = "small-cnn", row["attack"], int(row["seed"])
    default[key] = (float(row["asr_after"]), float(row["acc_after"]), before[key])


def cell(runs, model, attack, seeds):
    asr = [runs[model, attack, s][0] for s in seeds]
    acc = [runs[model, attack, s][1] for s in seeds]
    drop = [runs[model, attack, s][2] - runs[model, attack, s][1] for s in seeds]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return f"{mean(asr):.1f} ({mean(acc):.1f}, {mean(drop):.1f}) [{' '.join(f'{v:.1f}' for v in asr)}]", \
        (mean(asr), mean(acc), mean(drop))


columns = (("default (rounds 8-9)", default), ("β=10, radius 40 (round 10)", radius40), (label, new))
for model in MODELS:
    header = " | ".join(name for name, _ in columns)
    print(f"\n{model}\n| attack | {header} |\n" + "|---" * (len(columns) + 1) + "|")
    totals = defaultdict(list)
    for attack in ATTACKS:
        seeds = sorted(s for m, a, s in new if (m, a) == (model, attack))
        if not seeds:
            continue
        cells = []
        for name, runs in columns:
            text, numbers = cell(runs, model, attack, seeds)
            cells.append(text)
            totals[name].append(numbers)
        print(f"| {attack} | " + " | ".join(cells) + " |")
    means = [tuple(sum(v[i] for v in totals[name]) / len(totals[name]) for i in range(3)) for name, _ in columns]
    print("| **mean** | " + " | ".join(f"{a:.1f} ({c:.1f}, {d:.1f})" for a, c, d in means) + " |")
