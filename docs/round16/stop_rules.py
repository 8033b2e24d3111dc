# Scores "stop once the hunt has not reached the suspect for P epochs in a row" on trace.py's output, offline:
#   python stop_rules.py TRACES.jsonl [THRESHOLD]
# The rule, as purify could run it: after epoch e's mask step, stop when the hunt losses of epochs e-P+1 .. e
# (each recovered against the previous epoch's masks, before that epoch's mask step) are all above THRESHOLD
# (default 1.0, search.py's TARGETED_REACH_CE). The state kept is the one trace.py recorded after epoch e, which is
# what a purify stopped there would return (no later draw reaches back). Prints, per model and P, the epoch it
# stops at and ACC/ASR there against the full 20 epochs, then the means.
import json
import sys

threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
runs = [json.loads(line) for line in open(sys.argv[1])]
patiences = (1, 2, 3, 4, 5)


def stop_epoch(history, patience):
    """Index into history of the epoch the rule stops after (the last one when it never fires)."""
    for index in range(patience - 1, len(history)):
        if all(r["ascent_loss"] > threshold for r in history[index - patience + 1: index + 1]):
            return index
    return len(history) - 1


print(f"threshold {threshold}; per model: full run ACC/ASR, then per patience P: stop epoch ACC/ASR")
means = {p: [0.0, 0.0, 0.0] for p in (0, *patiences)}
for run in runs:
    history = run["history"]
    last = history[-1]
    cells = [f"{run['case']:20s} full {100 * last['acc']:.1f}/{100 * last['asr']:.1f}"]
    means[0][0] += last["acc"]
    means[0][1] += last["asr"]
    means[0][2] += last["epoch"]
    for p in patiences:
        r = history[stop_epoch(history, p)]
        cells.append(f"P{p} e{r['epoch']:2d} {100 * r['acc']:.1f}/{100 * r['asr']:.1f}")
        means[p][0] += r["acc"]
        means[p][1] += r["asr"]
        means[p][2] += r["epoch"]
    print("  ".join(cells))
n = len(runs)
cells = [f"{'full' if p == 0 else f'P{p}'} {100 * acc / n:.1f}/{100 * asr / n:.1f} ({epochs / n:.1f})"
         for p, (acc, asr, epochs) in means.items()]
print("mean ACC/ASR (epochs): " + "  ".join(cells))
