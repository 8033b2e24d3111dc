# Table R10-c: python aggregate.py runs.txt. runs.txt holds probe.py's RESULT lines (bn_drift_weight=10,
# targeted_norm=40); the default's rows are round 9's ResNet CSVs and round 8's r8f20 SmallCNN rows (2,000 eval
# images, same models, images and seeds). Prints mean ASR after (mean ACC after, mean drop) [per-seed ASR].
import csv
import os
import sys
from collections import defaultdict

HERE = os.path.dirname(__file__)
ATTACKS = ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet")

before, penalised, default = {}, defaultdict(dict), defaultdict(dict)
for line in open(sys.argv[1]):
    # RESULT MODEL ATTACK SEED VARIANT ACC a -> b ASR c -> d S s
    _, model, attack, seed, _, _, acc0, _, acc, _, _, _, asr, *_ = line.split()
    before[model, attack, int(seed)] = float(acc0)
    penalised[model][attack, int(seed)] = (float(asr), float(acc))
for name in ("small_resnet_10_epochs.csv", "small_resnet_10_epochs_seeds_1_2.csv"):
    for row in csv.DictReader(open(os.path.join(HERE, "..", "round9", name))):
        if row["method"] == "awm-improved":
            key = row["attack"], int(row["seed"])
            default["small-resnet"][key] = (float(row["asr_after"]), float(row["acc_after"]))
for row in csv.DictReader(open(os.path.join(HERE, "small_cnn_default_r8f20.csv"))):
    default["small-cnn"][row["attack"], int(row["seed"])] = (float(row["asr_after"]), float(row["acc_after"]))


def cell(runs, model, attack):
    seeds = sorted(s for a, s in penalised[model] if a == attack)  # the seeds measured with the penalty
    asr = [runs[model][attack, s][0] for s in seeds]
    acc = [runs[model][attack, s][1] for s in seeds]
    drop = [before[model, attack, s] - runs[model][attack, s][1] for s in seeds]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return (f"{mean(asr):.1f} ({mean(acc):.1f}, {mean(drop):.1f}) [{' '.join(f'{v:.1f}' for v in asr)}]",
            mean(asr), mean(acc), mean(drop))


for model in ("small-resnet", "small-cnn"):
    print(f"\n{model}\n| attack | default | bn_drift_weight=10, targeted_norm=40 |\n|---|---|---|")
    totals = defaultdict(list)
    for attack in ATTACKS:
        cells = [cell(runs, model, attack) for runs in (default, penalised)]
        print(f"| {attack} | {cells[0][0]} | {cells[1][0]} |")
        for i, c in enumerate(cells):
            totals[i].append(c[1:])
    means = [tuple(sum(v[j] for v in totals[i]) / len(ATTACKS) for j in range(3)) for i in (0, 1)]
    print("| **mean** | " + " | ".join(f"{a:.1f} ({b:.1f}, {c:.1f})" for a, b, c in means) + " |")
