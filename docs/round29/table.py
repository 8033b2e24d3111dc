# Round 29's tables from the runs in this folder: python docs/round29/table.py
# One table per file: a row per model, a column per configuration (the overrides, and shift_probe.py's "shift"), ACC /
# ASR after in %; then per attack the means over the seeds that every column of that attack has.
import json
import os
from collections import defaultdict

HERE = os.path.dirname(__file__)
# Per model family: (title, files). The *_trusted_runs files ran after the BatchNorm penalty began to count only the
# images the original model labels right (awm_fast/bn_drift.py, `trust`); the others before.
FAMILIES = [("Fashion-MNIST SmallCNNs (3 epochs), this machine's models", ("small_cnn_runs.jsonl",
                                                                          "small_cnn_trusted_runs.jsonl")),
            ("Fashion-MNIST small ResNets (10 epochs), this machine's models", ("resnet_bn_drift_runs.jsonl",
                                                                               "resnet_trusted_runs.jsonl")),
            ("8x8 digits SmallCNNs", ("digits_runs.jsonl", "digits_trusted_runs.jsonl"))]


def rows(name):
    with open(os.path.join(HERE, name)) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def label(run, trusted):
    """The column of a run. "default" is round 28's default (on a model the warp check does not name, round 29's
    too). On a warp suspect the BatchNorm penalty acts at β: early runs asked for it as bn_drift_weight=β,
    targeted_norm_max=20 (the same run), later ones as warp_bn_drift_weight=β or through the default ({}; their
    "bn_drift" field gives the β in effect). Round 29's default is β 3 on the trusted images."""
    overrides = run["overrides"]
    beta = None
    if set(overrides) == {"bn_drift_weight", "targeted_norm_max"} and overrides["targeted_norm_max"] == 20:
        beta = overrides["bn_drift_weight"]
    elif set(overrides) == {"warp_bn_drift_weight"}:
        beta = overrides["warp_bn_drift_weight"]
    elif not overrides and run.get("bn_drift"):
        beta = run["bn_drift"]
    if beta == 0 or (beta is None and not overrides and "shift" not in run):
        return "default"
    if beta is not None:
        images = "trusted images" if trusted else "all images"
        return f"β {beta:g} on the warp suspect, {images}" + (" (round 29's default)" if trusted and beta == 3 else "")
    parts = [f"{key}={value}" for key, value in sorted(overrides.items())]
    if "shift" in run:
        parts.append(f"shift penalty {run['shift']:g}")
    return ", ".join(parts)


def split(figure):
    acc, asr = figure.split("/")
    return float(acc), float(asr)


def mean(figures):
    pairs = [split(f) for f in figures]
    return sum(a for a, _ in pairs) / len(pairs), sum(b for _, b in pairs) / len(pairs)


for title, names in FAMILIES:
    runs = [(r, "trusted" in name) for name in names if os.path.exists(os.path.join(HERE, name)) for r in rows(name)]
    if not runs:
        continue
    labels = sorted({label(r, t) for r, t in runs}, key=lambda text: (text != "default", text))
    after, before = {}, {}
    for r, trusted in runs:
        after[r["case"], label(r, trusted)] = r["after"] + (" ⚠" if r.get("warnings") else "")
        before[r["case"]] = r["before"]
    print(f"\n{title} ({', '.join(names)}); ⚠ = purify warned\n")
    print("| model | before | " + " | ".join(labels) + " |\n|" + "---|" * (len(labels) + 2))
    for case in sorted(before):
        print(f"| {case} | {before[case]} | " + " | ".join(after.get((case, lab), "") for lab in labels) + " |")
    by_attack = defaultdict(set)
    for case in before:
        by_attack[case.rsplit(":", 1)[0]].add(case)
    print("\n| attack | seeds | " + " | ".join(labels) + " |\n|" + "---|" * (len(labels) + 2))
    for attack, cases in sorted(by_attack.items()):
        for lab in labels[1:]:
            paired = sorted(c for c in cases if (c, "default") in after and (c, lab) in after)
            if not paired:
                continue
            cells = []
            for other in labels:
                if other in ("default", lab):
                    acc, asr = mean([after[c, other].rstrip(" ⚠") for c in paired])
                    drop = mean([before[c] for c in paired])[0] - acc
                    cells.append(f"{acc:.1f} / {asr:.1f} (drop {drop:.1f})")
                else:
                    cells.append("")
            seeds = ",".join(c.rsplit(":", 1)[1] for c in paired)
            print(f"| {attack} | {seeds} | " + " | ".join(cells) + " |")
