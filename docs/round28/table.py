# Round 28's tables from the runs in this folder: python docs/round28/table.py
import json
import os

HERE = os.path.dirname(__file__)


def rows(name):
    with open(os.path.join(HERE, name)) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split(figure):
    acc, asr = figure.split("/")
    return float(acc), float(asr)


def mean(figures):
    pairs = [split(f) for f in figures]
    return f"{sum(a for a, _ in pairs) / len(pairs):.1f} / {sum(b for _, b in pairs) / len(pairs):.1f}"


print("Table R28-a: the small ResNet's WaNet, round 27's default against warp_copies (resnet_wanet_runs.jsonl)\n")
print("| seed | before | round 27 default | `warp_copies=True` (today's default) |\n|---|---|---|---|")
wanet = rows("resnet_wanet_runs.jsonl")
by = {(r["case"], bool(r["overrides"].get("warp_copies"))): r for r in wanet}
seeds = sorted({r["case"] for r in wanet})
for case in seeds:
    print(f"| {case} | {by[case, False]['before']} | {by[case, False]['after']} | {by[case, True]['after']} |")
befores = [by[c, False]["before"] for c in seeds]
print(f"| mean | {mean(befores)} | {mean([by[c, False]['after'] for c in seeds])} | "
      f"{mean([by[c, True]['after'] for c in seeds])} |")

print("\nTable R28-b: the small ResNet's WaNet s0 per epoch (resnet_trajectory_runs.jsonl, warmup_runs.jsonl)\n")
print("| run | epoch 1 | 2 | 5 | 10 | 15 | 20 |\n|---|---|---|---|---|---|---|")
warmed = [r for r in rows("warmup_runs.jsonl") if r["model"] == "small-resnet"]
trajectories = rows("resnet_trajectory_runs.jsonl") + warmed
for r in trajectories:
    label = ("warp_copies" if r["overrides"].get("warp_copies") else "round 27 default") \
        if not r.get("warmup") else f"today's default, warm-up {r['warmup']} steps"
    t = r["trajectory"]
    print(f"| {label} | " + " | ".join(t[i - 1] for i in (1, 2, 5, 10, 15, 20)) + " |")

print("\nTable R28-c: ten more decayed epochs (outer=30) and averaged masks, one run each (average_runs.jsonl, "
      "digits_average_runs.jsonl)\n")
print("| model | epoch 20 | epoch 30 | mean of last 5 | mean of last 10 | exponential 0.7 |\n|---|---|---|---|---|---|")
for name in ("average_runs.jsonl", "digits_average_runs.jsonl"):
    for r in rows(name):
        if r["overrides"].get("outer") != 30 or r["epochs"] != 30:  # a run with extra epochs has no plain epoch 20
            continue
        t = r["trajectory"]
        print(f"| {r['model']} {r['case']} | {t[19]} | {t[29]} | {r['last5']} | {r['last10']} | {r['ema0.7']} |")
for model in ("small-cnn", "digits"):
    runs = [r for name in ("average_runs.jsonl", "digits_average_runs.jsonl") for r in rows(name)
            if r["model"] == model and r["overrides"].get("outer") == 30 and r["epochs"] == 30]
    print(f"| mean, {model} ({len(runs)}) | {mean([r['trajectory'][19] for r in runs])} | "
          f"{mean([r['trajectory'][29] for r in runs])} | {mean([r['last5'] for r in runs])} | "
          f"{mean([r['last10'] for r in runs])} | {mean([r['ema0.7'] for r in runs])} |")
