# Per attack, mean ASR after (mean ACC after, mean drop) [per-seed ASR] of RESULT lines (run.py's), three seeds each:
# python aggregate.py RUNS.txt [RUNS.txt ...]. The accuracy before comes from the RESULT lines themselves.
# With --default, the default's figures (docs/round10/small_cnn_default_r8f20.csv, all-to-all from
# docs/round12/purify_runs.txt) are tabulated beside them, with each model's accuracy before from the runs given.
import csv
import itertools
import os
import re
import sys

ATTACKS = ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet")
LINE = re.compile(r"RESULT (\S+) (\S+) (\d) .*?ACC ([\d.]+) -> ([\d.]+) ASR [\d.]+ -> ([\d.]+)")
HERE = os.path.dirname(__file__)


def read_runs(path, model="small-cnn"):
    """{(attack, seed): (acc before, acc after, asr after)} of `model`'s RESULT lines in a file (the last line of a
    case wins)."""
    runs = {}
    for match in map(LINE.search, open(path)):
        if match and match[1] == model:
            runs[match[2], int(match[3])] = tuple(float(match[i]) for i in (4, 5, 6))
    return runs


def read_default(before):
    """The default's (acc before, acc after, asr after) per case; acc before from `before` (same models)."""
    runs = {}
    for row in csv.DictReader(open(os.path.join(HERE, "..", "round10", "small_cnn_default_r8f20.csv"))):
        key = row["attack"], int(row["seed"])
        if key in before:
            runs[key] = (before[key][0], float(row["acc_after"]), float(row["asr_after"]))
    for key, (_, acc, asr) in read_runs(os.path.join(HERE, "..", "round12", "purify_runs.txt")).items():
        if key[0] == "all-to-all" and key in before:  # round 12's check; the other attacks are unchanged by it
            runs[key] = (before[key][0], acc, asr)
    return runs


def summary(runs):
    cells, means = [], []
    for attack in ATTACKS:
        rows = [runs[attack, seed] for seed in range(3) if (attack, seed) in runs]
        if len(rows) < 3:
            cells.append("(incomplete)")
            continue
        asr = sum(r[2] for r in rows) / 3
        acc = sum(r[1] for r in rows) / 3
        drop = sum(r[0] - r[1] for r in rows) / 3
        means.append((asr, acc, drop))
        cells.append(f"{asr:.1f} ({acc:.1f}, {drop:.1f}) [{' '.join(f'{r[2]:.1f}' for r in rows)}]")
    if len(means) == len(ATTACKS):
        cells.append("**" + " ({:.1f}, {:.1f})".format(*[sum(m[i] for m in means) / 6 for i in (1, 2)])
                     .join([f"{sum(m[0] for m in means) / 6:.1f}", ""]) + "**")
    return cells


paths = [p for p in sys.argv[1:] if p != "--default"]
tables = [(os.path.basename(p), read_runs(p)) for p in paths]
if "--default" in sys.argv:
    tables.insert(0, ("default", read_default(tables[0][1])))
print("| attack | " + " | ".join(name for name, _ in tables) + " |")
print("|---" * (len(tables) + 1) + "|")
for label, *cells in itertools.zip_longest((*ATTACKS, "**mean**"), *[summary(runs) for _, runs in tables],
                                          fillvalue=""):
    print(f"| {label} | " + " | ".join(cells) + " |")
