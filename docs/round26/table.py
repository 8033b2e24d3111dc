# Tables R26-a/b/c of docs/EFFICACY.md, round 26, from runs.jsonl (one purify per line: build, model, case, before,
# after as "ACC/ASR" %, a2a, radii, ...) and check_diag.jsonl (check_diag.py's lines).
#   python docs/round26/table.py
import collections
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
runs = [json.loads(line) for line in open(os.path.join(HERE, "runs.jsonl")) if line.strip()]
diags = [json.loads(line) for line in open(os.path.join(HERE, "check_diag.jsonl")) if line.strip()]


# The landed code = the check ("check" runs) plus the all-to-all hunt's growth where its first trigger is spread
# (share below 0.25). Where the landed code itself was not run: a compact first trigger, a hunt already at 40 (found at
# twice the radius) or a digits model (whose hunts never fail, so never grow) runs as "check" did; a spread one as the
# probe build that let every all-to-all hunt grow ("grow to 2x", the same mechanism), marked †.
SPREAD = 0.25
landed = {(r["model"], r["case"]) for r in runs if r["build"] == "landed"}
for r in [r for r in runs if r["build"] == "check"]:
    key = (r["model"], r["case"])
    if key in landed:
        continue
    spread = r.get("share") is not None and r["share"] < SPREAD and r.get("a2a") and max(r["radii"] or [0]) < 40
    source = next((g for g in runs if g["build"] == "grow to 2x" and (g["model"], g["case"]) == key), None)
    if spread and source is None:
        continue
    runs.append({**(source if spread else r), "build": "landed", "mark": "†" if spread else ""})


def split(cell):
    acc, asr = cell.split("/")
    return float(acc), float(asr)


def table(title, builds, cases):
    by = {(r["build"], r["model"], r["case"]): r for r in runs}
    print(f"\n{title}\n")
    print("| model | before | " + " | ".join(builds) + " |")
    print("|---|---|" + "---|" * len(builds))
    sums = collections.defaultdict(list)
    cases = [(model, case) for model, case in cases if any((build, model, case) in by for build in builds)]
    for model, case in cases:
        rows = [by.get((build, model, case)) for build in builds]
        before = next(r["before"] for r in rows if r)
        cells = []
        for build, r in zip(builds, rows, strict=True):
            if r is None:
                cells.append("-")
                continue
            found = " (all-to-all)" if r.get("a2a") else ""
            cells.append(f"{r['after'].replace('/', ' / ')}{r.get('mark', '')}{found}")
            sums[build].append(split(r["after"]))
        print(f"| {model} {case} | {before.replace('/', ' / ')} | " + " | ".join(cells) + " |")
    means = []
    for build in builds:
        values = sums[build]
        if len(values) != len(cases):
            means.append("-")
            continue
        means.append(f"{sum(v[0] for v in values) / len(values):.1f} / {sum(v[1] for v in values) / len(values):.1f}")
    print(f"| mean of {len(cases)} | | " + " | ".join(means) + " |")


HELD_OUT = [("small-cnn", "all-to-all:base=blend:0"), ("small-cnn", "all-to-all:base=blend:2"),
            ("small-cnn", "all-to-all:base=trojan-watermark:0"), ("small-resnet", "all-to-all:0"),
            ("small-resnet", "all-to-all:1"), ("digits", "all-to-all:4")]
table("Table R26-a: the held-out all-to-all models the check missed in round 25 (ACC / ASR %)",
      ["round 25", "twice the radius", "check", "landed"], HELD_OUT)
table("Table R26-b: the all-to-all hunt's radius growing to 40 (ACC / ASR %)",
      ["check", "grow to 2x", "landed"],
      [("small-cnn", f"all-to-all:{seed}") for seed in range(6)]
      + [("small-cnn", "all-to-all:base=blend:1"), ("small-cnn", "all-to-all:base=blend:2"),
         ("small-resnet", "all-to-all:0"), ("small-resnet", "all-to-all:1")])
print("\nTable R26-c: the check's searches (check_diag.py; 2 searches per radius): the naming search's standout ratio "
      "and, over the searches that move at least half the images with no sink, the largest channels / classes left\n")
print("| model | standout | largest channel share (radius fraction, search) | rule |")
print("|---|---|---|---|")
for d in sorted(diags, key=lambda d: (d.get("standout", 0) > 100, d["case"])):
    if "rows" not in d:
        continue
    fair = [r for r in d["rows"] if r["search"] < 2 and r["f"] in (0.5, 1.0, 2.0) and r["moved"] >= 0.5
            and r["sink"] <= 0.5]
    best = max(fair, key=lambda r: r["channels"] / r["classes_left"], default=None)
    share = 0.25 if d["standout"] < 2 else 1 / 3
    runs_check = d["standout"] < 100
    shown = f"{best['channels'] / best['classes_left']:.3f} ({best['f']:g}, {best['search']})" if best else "none"
    verdict = ("not run (stands out)" if not runs_check else
               f"asks {share:.3g}: " + ("all-to-all" if best and best["channels"] >= share * best["classes_left"]
                                         else "not called"))
    print(f"| {d['case']} | {d['standout']:g} | {shown} | {verdict} |")
