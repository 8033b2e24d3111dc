# Table R11-b: python shots10.py CSV... (the results.csv of `awm-fast study --out DIR` runs). Prints ASR after
# (ACC after) per attack and method, the ACC before, and each method's mean over the attacks.
import csv
import sys
from collections import defaultdict

METHODS = ("awm-improved", "awm-improved[targeted_norm_max=80]", "awm-improved[bn_drift_weight=10]", "ft", "anp")
ATTACKS = ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet")
after, before = {}, {}
for path in sys.argv[1:]:
    for row in csv.DictReader(open(path)):
        after[row["attack"], row["method"]] = (float(row["asr_after"]), float(row["acc_after"]))
        before[row["attack"]] = float(row["acc_before"])
print("| attack (ACC before) | " + " | ".join(METHODS) + " |\n" + "|---" * (len(METHODS) + 1) + "|")
totals = defaultdict(list)
for attack in ATTACKS:
    if attack not in before:
        continue
    cells = []
    for method in METHODS:
        if (attack, method) in after:
            asr, acc = after[attack, method]
            totals[method].append((asr, acc, before[attack] - acc))
            cells.append(f"{asr:.1f} ({acc:.1f})")
        else:
            cells.append("-")
    print(f"| {attack} ({before[attack]:.1f}) | " + " | ".join(cells) + " |")
means = []
for method in METHODS:
    runs = totals[method]
    means.append(f"{sum(r[0] for r in runs) / len(runs):.1f} ({sum(r[1] for r in runs) / len(runs):.1f}, drop "
                 f"{sum(r[2] for r in runs) / len(runs):.1f})" if runs else "-")
print("| **mean** | " + " | ".join(means) + " |")
