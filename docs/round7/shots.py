# The 1/10/50-shot comparison table: python shots.py DIR... (each an `awm-fast study --out DIR` folder; the
# 1-shot AWM rows come from /tmp/r5/results.csv: tags paper (round 6) and r7i (improved))
import collections, csv, sys

ASR_ACC = collections.defaultdict(list)  # (attack, shots, method) -> [(asr, acc)]
for folder in sys.argv[1:]:
    for row in csv.DictReader(open(f"{folder}/results.csv")):
        ASR_ACC[(row["attack"], int(row["shots"]), row["method"])].append(
            (float(row["asr_after"]), float(row["acc_after"])))
for line in open("/tmp/r5/results.csv"):
    tag, dataset, attack, seed, asr, acc, _ = line.strip().split(",")
    method = {"paper": "awm-paper", "r7i": "awm-improved"}.get(tag)
    if method and dataset == "fashion-mnist":
        ASR_ACC[(attack, 1, method)].append((float(asr), float(acc)))
methods = ("awm-paper", "awm-improved", "ft", "anp")
print("| attack | shots | " + " | ".join(methods) + " |")
print("|---" * (2 + len(methods)) + "|")
for attack in ("badnets", "blend", "trojan-square", "trojan-watermark", "all-to-all", "wanet"):
    for shots in (1, 10, 50):
        cells = []
        for method in methods:
            runs = ASR_ACC.get((attack, shots, method), [])
            cells.append(f"{sum(r[0] for r in runs) / len(runs):.1f} ({sum(r[1] for r in runs) / len(runs):.1f})"
                         f"{'' if len(runs) == 1 else f' n={len(runs)}'}" if runs else "-")
        print(f"| {attack} | {shots} | " + " | ".join(cells) + " |")
