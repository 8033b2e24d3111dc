# Tables R27-a/b/c of docs/EFFICACY.md, round 27, from runs.jsonl (trajectory.py's lines: ACC, ASR and the warp check's
# reach after every epoch) and quantile_runs.jsonl (quantile_probe.py's lines). "runner-up + warped" is what
# warp_copies=True does; warp_copies_runs.jsonl has the option itself run through knob_probe.py (the same figures).
#   python docs/round27/table.py
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    return [json.loads(line) for line in open(os.path.join(HERE, name)) if line.strip()]


runs = load("runs.jsonl")


def full(copies, case, overrides=None):
    for r in runs:
        if r["copies"] == copies and r["case"] == case and r["overrides"] == (overrides or {}):
            return r
    return None


print("Table R27-a: WaNet SmallCNNs, ACC / ASR after epoch 1 and after the run; warp reach (CE) range over the epochs")
print("| seed | copies | epoch 1 | final | lowest ASR (epoch) | warp reach: min - max |")
print("|---|---|---|---|---|---|")
for seed in range(3):
    for copies, extra in (("landed", None), ("runner-up", None), ("runner-up", {"feature_distill_weight": 0}),
                          ("landed + warped", None), ("runner-up + warped", None)):
        r = full(copies, f"small-cnn/wanet:{seed}", extra)
        if r is None:
            continue
        rows = r["rows"]
        low = min(range(len(rows)), key=lambda e: rows[e][1])
        reach = [row[2] for row in rows]
        label = copies + (", no pull" if extra else "")
        print(f"| {seed} | {label} | {rows[0][0]} / {rows[0][1]} | {rows[-1][0]} / {rows[-1][1]} | "
              f"{rows[low][1]} ({low + 1}) | {min(reach):.2f} - {max(reach):.2f} |")

print("\nTable R27-b: one epoch (outer=1, no extra or residual epoch), ACC / ASR after it")
print("| case | copies | overrides | after epoch 1 |")
print("|---|---|---|---|")
for r in runs:
    if r["overrides"].get("outer") == 1:
        extra = {k: v for k, v in r["overrides"].items() if k not in ("outer", "extra_outer", "residual_check")}
        print(f"| {r['case']} | {r['copies']} | {extra or 'default'} | {r['rows'][0][0]} / {r['rows'][0][1]} |")

print("\nTable R27-c: the quantile hunt against the landed one (ACC / ASR after)")
print("| case | landed | quantile 0.25 | quantile 0.5 |")
print("|---|---|---|---|")
quantile = load("quantile_runs.jsonl")
for case in sorted({r["case"] for r in quantile}):
    cells = {r.get("quantile", "landed"): r["after"] for r in quantile if r["case"] == case}
    print(f"| {case} | {cells.get('landed', '')} | {cells.get(0.25, '')} | {cells.get(0.5, '')} |")
