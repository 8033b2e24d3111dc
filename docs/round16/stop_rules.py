# Scores "stop once the hunt has not reached the suspect for P epochs in a row" on trace.py's output, offline:
#   python stop_rules.py TRACES.jsonl [THRESHOLD]
# The rule, as purify could run it: after epoch e's mask step, stop when the hunt losses of epochs e-P+1 .. e
# (each recovered against the previous epoch's masks, before that epoch's mask step) are all above THRESHOLD
# (default 1.0, search.py's TARGETED_REACH_CE). The state kept is the one trace.py recorded after epoch e, which is
# what a purify stopped there would return (no later draw reaches back). Prints, per model and rule, the epoch it
# stops after and ACC/ASR there, then per attack (round 16's table) and overall: mean ASR (mean drop), mean epoch.
import json
import sys

threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
runs = [json.loads(line) for line in open(sys.argv[1])]
rules = {"full": None, "P1": 1, "P2": 2, "P3": 3, "P4": 4, "P5": 5}  # None: all 20 epochs (the default)


def stop_epoch(history, patience):
    """Index into history of the epoch the rule stops after (the last one when it never fires or patience is None)."""
    if patience is not None:
        for index in range(patience - 1, len(history)):
            if all(r["ascent_loss"] > threshold for r in history[index - patience + 1: index + 1]):
                return index
    return len(history) - 1


kept = [{rule: run["history"][stop_epoch(run["history"], p)] for rule, p in rules.items()} for run in runs]
print(f"threshold {threshold}; per model and rule: stop epoch, ACC/ASR after it (%)")
for run, records in zip(runs, kept, strict=True):
    print(f"{run['case']:20s} " + "  ".join(f"{rule} e{r['epoch']:2d} {100 * r['acc']:.1f}/{100 * r['asr']:.1f}"
                                           for rule, r in records.items()))


def mean_row(label, indices):
    cells = []
    for rule in rules:
        asr = sum(kept[i][rule]["asr"] for i in indices) / len(indices)
        drop = sum(runs[i]["before"]["acc"] - kept[i][rule]["acc"] for i in indices) / len(indices)
        epoch = sum(kept[i][rule]["epoch"] for i in indices) / len(indices)
        cells.append(f"{100 * asr:.1f} ({100 * drop:.1f}) e{epoch:.0f}")
    print(f"| {label} | " + " | ".join(cells) + " |")


print("\nmean ASR (mean drop) and mean stop epoch | " + " | ".join(rules))
attacks = list(dict.fromkeys(run["case"].rsplit(":", 1)[0] for run in runs))
for attack in attacks:
    mean_row(attack, [i for i, run in enumerate(runs) if run["case"].rsplit(":", 1)[0] == attack])
mean_row("mean", range(len(runs)))
