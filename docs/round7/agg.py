# Mean ASR after, ACC after and ACC drop per attack: python agg.py TAG [dataset] (reads /tmp/r5/results.csv and
# the before.py output saved as /tmp/r7/before_<dataset>.log)
import collections, sys
tag, dataset = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "fashion-mnist")
before = {}
for line in open(f"/tmp/r7/before_{dataset}.log"):
    attack, seed, _, pair = line.split()
    before[(attack, int(seed))] = float(pair.split("/")[0])
runs = collections.defaultdict(list)
for line in open("/tmp/r5/results.csv"):
    t, ds, attack, seed, asr, acc, sec = line.strip().split(",")
    if t == tag and ds == dataset:
        runs[attack].append((int(seed), float(asr), float(acc), before[(attack, int(seed))] - float(acc), float(sec)))
print(f"{tag} on {dataset}: attack | mean ASR after | mean ACC after | mean drop (worst) | seconds | per-seed ASR")
every = []
for attack, rows in runs.items():
    rows.sort(); every += rows
    mean = lambda i: sum(r[i] for r in rows) / len(rows)
    print(f"{attack:16s} | {mean(1):5.1f} | {mean(2):5.1f} | {mean(3):4.1f} ({max(r[3] for r in rows):4.1f}) | {mean(4):5.0f} | "
          + " ".join(f"{r[1]:.1f}" for r in rows))
mean = lambda i: sum(r[i] for r in every) / len(every)
print(f"{'mean':16s} | {mean(1):5.1f} | {mean(2):5.1f} | {mean(3):4.1f} | n={len(every)}")
