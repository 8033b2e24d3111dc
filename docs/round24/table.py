# Table R24: the 18 Fashion-MNIST table SmallCNNs (one image per class, 2,000 eval images): round 23's default
# against round 24's (the feature pull on every all-to-one backdoor, the hunt growing to 40 wherever it acts but on a
# warp suspect), and the pull's weight β at 2 and 3 with the same code, from the runs on record:
#   round 23's default: ../round23/gate_table.py (its "today" column);
#   round 24's default where it differs from round 23's (Blend, Trojan watermark, whose trigger was not compact):
#   grow_runs.jsonl, run as {"feature_distill_gate": "always", "targeted_norm_max": 40}, which is what the default
#   now does there; BadNets, Trojan squares (compact), WaNet (warp suspect) and all-to-all (no pull) run as before;
#   β = 2 and 3: beta_runs.jsonl ({"feature_distill_weight": β} over today's default; all-to-all: the default's, as
#   it has no pull). beta_runs.jsonl also holds β = 3 on the small ResNet and LeNet-5 (seed 0), which this table skips.
# The all-to-all models with the pull (what the default no longer does): all_to_all_{pull,grow}_runs.jsonl.
#   python table.py
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "round23"))
from gate_table import mean, pair, runs, table_rows  # noqa: E402  (runs reads paths under docs/, SmallCNNs only)

ATTACKS = ("badnets", "blend", "trojan-square", "trojan-watermark", "wanet", "all-to-all")


def cell(result, before=None):
    if result is None:
        return "-"
    text = f"{result[0]:.1f} / {result[1]:.1f}"
    return text if before is None else f"{text} (drop {before[0] - result[0]:.1f})"


grown = runs("round24/grow_runs.jsonl")
beta = {weight: runs("round24/beta_runs.jsonl", lambda run, w=weight: run["overrides"] == {"feature_distill_weight": w})
        for weight in (2.0, 3.0)}
rows = []  # (attack, case, before, round 23 default, round 24 default, beta 2, beta 3)
for attack, case, before, _, _, old, _, _ in table_rows():
    new = pair(grown[case]["after"]) if attack in ("blend", "trojan-watermark") else old
    # All-to-all gets no pull, so β changes nothing there (tests/test_all_to_all.py: bit for bit β = 0).
    probes = [old if attack == "all-to-all" else pair(beta[weight][case]["after"]) if case in beta[weight] else None
              for weight in (2.0, 3.0)]
    rows.append((attack, case, before, old, new, *probes))

print("| model | before | round 23 default | round 24 default | β = 2 | β = 3 |")
print("|---|---|---|---|---|---|")
for _, case, *results in rows:
    print(f"| {case} | " + " | ".join(cell(result) for result in results) + " |")
print()
print("| attack (3 seeds) | before | round 23 default | round 24 default | β = 2 | β = 3 |")
print("|---|---|---|---|---|---|")
groups = {attack: [row for row in rows if row[0] == attack] for attack in ATTACKS}
groups["mean of 18"] = rows
for name, members in groups.items():
    columns = list(zip(*(row[2:] for row in members), strict=True))
    means = [None if None in column else (mean([r[0] for r in column]), mean([r[1] for r in column]))
             for column in columns]
    print(f"| {name} | {cell(means[0])} | " + " | ".join(cell(result, means[0]) for result in means[1:]) + " |")
print()
print("All-to-all with the pull (not the default): round 23/24 default, the pull alone, the pull with the larger hunt")
pulled, pulled_grown = runs("round24/all_to_all_pull_runs.jsonl"), runs("round24/all_to_all_grow_runs.jsonl")
for _, case, before, old, *_ in (row for row in rows if row[0] == "all-to-all"):
    print(f"  {case}: {cell(old, before)}, {cell(pair(pulled[case]['after']), before)}, "
          f"{cell(pair(pulled_grown[case]['after']), before)}")
