import sys, collections
rows = [l.strip().split(",") for l in open("/tmp/r5/results.csv") if l.strip()]
atts = ["badnets","blend","trojan-square","trojan-watermark","all-to-all","wanet"]
by = collections.defaultdict(dict)
for tag, ds, a, s, asr, acc, sec in rows: by[(tag, ds)][(a, int(s))] = (float(asr), float(acc))
tags = sys.argv[1:] or sorted({k[0] for k in by})
for (tag, ds), d in sorted(by.items()):
    if tag not in tags: continue
    cells = []; allasr = []; allacc = []
    for a in atts:
        v = [d[k] for k in sorted(d) if k[0] == a]
        if not v: cells.append("-"); continue
        asr = sum(p[0] for p in v)/len(v); acc = sum(p[1] for p in v)/len(v); allasr += [p[0] for p in v]; allacc += [p[1] for p in v]
        cells.append(f"{asr:.1f}({acc:.1f})[" + " ".join(f"{p[0]:.0f}" for p in v) + "]")
    print(f"{tag:40s} {ds[:6]} " + " | ".join(cells) + f" || {sum(allasr)/len(allasr):.1f} ({sum(allacc)/len(allacc):.1f}) n={len(allasr)}")
