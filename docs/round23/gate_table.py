# Table R23-a: the 18 Fashion-MNIST table SmallCNNs (one image per class, 2,000 eval images), round 22's default
# against the pull alone and today's default (the pull where the gate lets it act, and on compact triggers a hunt
# that may grow to 40), from the runs on record:
#   round 22's default: docs/round21/{reach,table_check}_runs.jsonl, docs/round22/table_runs.jsonl;
#   the pull at beta = 1 from the first step: docs/round22/feature_{,lib_}runs.jsonl;
#   the gate's reading (the first hunt's trigger_window_share): shape_runs.jsonl;
#   the pull with targeted_norm_max=40 (today's default where the share is compact): grow_runs.jsonl;
#   the pull alone, run again with the library's gate: default_runs.jsonl (WaNet), gate_check_runs.jsonl (BadNets s0
#   before the growth, Blend s0); all-to-all (no pull, share 0.36-0.48): all_to_all.csv (the study).
# The gate acts where share >= 0.5 or the warp check named the suspect (the WaNet models: their reruns match the
# beta = 1 runs); the hunt grows where share >= 0.5.   python gate_table.py
import csv
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.dirname(HERE)


def runs(path, keep=lambda run: True):
    with open(os.path.join(DOCS, path)) as handle:
        return {run["case"]: run for run in map(json.loads, handle) if run.get("model") == "small-cnn" and keep(run)}


def pair(text):
    acc, asr = text.split("/")
    return float(acc), float(asr)


def mean(values):
    return sum(values) / len(values)


def table_rows():
    """[(attack, case, before, round 22 default, pull alone, round 23 default, share, pull acts)], each
    result an (ACC, ASR) pair in percent."""
    default = {**runs("round21/reach_runs.jsonl"), **runs("round21/table_check_runs.jsonl"),
               **runs("round22/table_runs.jsonl")}
    at_one = lambda run: run["overrides"].get("feature_distill_weight") == 1.0
    pulled = {**runs("round22/feature_runs.jsonl"), **runs("round22/feature_lib_runs.jsonl", at_one)}
    shares = {case: run["window_share"] for case, run in runs("round23/shape_runs.jsonl").items()}
    rerun = {**runs("round23/default_runs.jsonl"), **runs("round23/gate_check_runs.jsonl")}
    grown = runs("round23/grow_runs.jsonl", lambda run: run["overrides"] == {"targeted_norm_max": 40})

    rows = []  # (attack, case, before, round 22 default, pull alone, today, share, pull acts)
    for attack in ("badnets", "blend", "trojan-square", "trojan-watermark", "wanet"):
        for seed in range(3):
            case = f"{attack}:{seed}"
            compact = shares[case] >= 0.5
            acts = attack == "wanet" or compact
            alone = pulled[case] if acts else default[case]
            if case in rerun:
                assert rerun[case]["after"] == alone["after"], (case, rerun[case]["after"], alone["after"])
            today = grown[case] if compact else alone
            rows.append((attack, case, pair(default[case]["before"]), pair(default[case]["after"]),
                         pair(alone["after"]), pair(today["after"]), shares[case], acts))
    with open(os.path.join(HERE, "all_to_all.csv")) as handle:
        for row in csv.DictReader(handle):
            if row["method"] == "awm-improved":
                case = f"all-to-all:{row['seed']}"
                after = (float(row["acc_after"]), float(row["asr_after"]))
                before = (float(row["acc_before"]), float(row["asr_before"]))
                rows.append(("all-to-all", case, before, after, after, after, shares[case], False))
    return rows


def main():
    rows = table_rows()
    print("| model | before | round 22 default | window share | pull | pull alone | today |")
    print("|---|---|---|---|---|---|---|")
    for _, case, before, old, alone, new, share, acts in rows:
        cells = [f"{before[0]:.1f} / {before[1]:.1f}", f"{old[0]:.1f} / {old[1]:.1f}", f"{share:.2f}",
                 "yes" if acts else "no", f"{alone[0]:.1f} / {alone[1]:.1f}", f"{new[0]:.1f} / {new[1]:.1f}"]
        print(f"| {case} | " + " | ".join(cells) + " |")
    print()
    print("| attack (3 seeds) | before | round 22 default | pull alone | today | Δ ACC, Δ ASR (today) |")
    print("|---|---|---|---|---|---|")
    groups = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    groups["mean of 18"] = rows
    for attack, members in groups.items():
        before, old, alone, new = ([mean([row[i][k] for row in members]) for k in (0, 1)] for i in (2, 3, 4, 5))
        cells = [f"{before[0]:.1f} / {before[1]:.1f}"] + [
            f"{acc:.1f} / {asr:.1f} (drop {before[0] - acc:.1f})" for acc, asr in (old, alone, new)]
        print(f"| {attack} | " + " | ".join(cells) + f" | {new[0] - old[0]:+.1f}, {new[1] - old[1]:+.1f} |")


if __name__ == "__main__":
    main()
