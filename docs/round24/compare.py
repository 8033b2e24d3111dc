# Per-attack means of two study CSVs over the models both hold (dataset, model, attack, seed): ACC / ASR after, the
# accuracy drop, and how many runs changed.
#   python compare.py OLD.csv NEW.csv [NEW2.csv ...]   (later files replace earlier rows of the same model)
import csv
import statistics
import sys
from collections import defaultdict


def rows(paths):
    table = {}
    for path in paths:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                table[(row["dataset"], row["model"], row["attack"], row["seed"])] = row
    return table


old, new = rows(sys.argv[1:2]), rows(sys.argv[2:])
by_attack = defaultdict(list)
for key in sorted(old.keys() & new.keys()):
    by_attack[key[2]].append((old[key], new[key]))


def mean(pairs, side, column):
    return statistics.mean(float(pair[side][column]) for pair in pairs)


print("| attack | runs | old ACC / ASR (drop) | new ACC / ASR (drop) | changed |")
print("|---|---|---|---|---|")
everything = []
for attack, pairs in sorted(by_attack.items()) + [("all", None)]:
    pairs = pairs if pairs is not None else everything
    if attack != "all":
        everything.extend(pairs)
    cells = [f"{mean(pairs, side, 'acc_after'):.1f} / {mean(pairs, side, 'asr_after'):.2f} "
             f"({mean(pairs, side, 'acc_drop'):.1f})" for side in (0, 1)]
    changed = sum(a["acc_after"] != b["acc_after"] or a["asr_after"] != b["asr_after"] for a, b in pairs)
    print(f"| {attack} | {len(pairs)} | {cells[0]} | {cells[1]} | {changed} |")
