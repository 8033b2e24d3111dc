# Prototype (round 6): the authors' one-shot copies with a larger minimum crop area.
# python mild.py TAG '{"min_scale": 0.5, ...purify overrides}' attack:seed,...|all3
import os, sys, json, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import torch, awm_fast
import awm_fast.inputs as I
from awm_fast import study
from cases import load_case, ATTACKS
tag, ov, cases = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
MIN = ov.pop("min_scale")
_u = I._uniform
I._uniform = lambda lo, hi, g: _u(MIN, hi, g) if lo == 0.08 else _u(lo, hi, g)
if cases == "all3":
    cases = ",".join(f"{a}:{s}" for s in range(3) for a in ATTACKS)
os.makedirs("/tmp/r6", exist_ok=True)
for case in cases.split(","):
    a, seed = case.rsplit(":", 1); seed = int(seed)
    m, att, (x, y), (xe, ye) = load_case(a, seed, "fashion-mnist")
    t = time.time()
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, **{"mode": "paper", **ov})
    met = study._metrics(r.model, xe, ye, att)
    line = f"{tag},fashion-mnist,{a},{seed},{100*met['asr']:.1f},{100*met['acc']:.1f},{time.time()-t:.1f}"
    print(line, flush=True); open("/tmp/r6/results.csv", "a").write(line + "\n")
