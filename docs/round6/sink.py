# Prototype (round 6): label-consistent copies PLUS the copies the original model sends to the backdoor target
# (the ORACLE target, from the attack). python sink.py TAG '{purify overrides}' attack:seed,...
import os, sys, json, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import torch, awm_fast
import awm_fast.inputs as I
from awm_fast import study
from cases import load_case
P = sys.modules["awm_fast.purify"]
tag, ov, cases = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
SUSPECT = [None]
def keep_sink(model, x, y, copies, generator=None, pool=I.CONSISTENT_POOL):
    augmented, labels = I.augment_one_shot(x, y, copies * pool, generator)
    cand, cl = augmented[len(x):], labels[len(x):]
    with torch.no_grad():
        pred = torch.cat([model(c).argmax(1) for c in cand.split(256)])
    ok = pred == cl
    if SUSPECT[0] is not None:
        ok |= pred == SUSPECT[0]
    ok = ok.view(len(x), copies * pool)
    keep = (ok & (ok.long().cumsum(1) <= copies)).flatten()
    print("kept", int(keep.sum()), "to suspect", int(((pred == SUSPECT[0]) & keep).sum()) if SUSPECT[0] is not None else 0, file=sys.stderr)
    return torch.cat([x, cand[keep]]), torch.cat([y, cl[keep]])
P.augment_one_shot_consistent = keep_sink
os.makedirs("/tmp/r6", exist_ok=True)
for case in cases.split(","):
    a, seed = case.rsplit(":", 1); seed = int(seed)
    m, att, (x, y), (xe, ye) = load_case(a, seed, "fashion-mnist")
    SUSPECT[0] = None if att.is_all_to_all else att.target
    t = time.time()
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, **{"mode": "paper", "one_shot_filter": True, **ov})
    met = study._metrics(r.model, xe, ye, att)
    line = f"{tag},fashion-mnist,{a},{seed},{100*met['asr']:.1f},{100*met['acc']:.1f},{time.time()-t:.1f}"
    print(line, flush=True); open("/tmp/r6/results.csv", "a").write(line + "\n")
