# Screen runner: python run.py TAG 'json overrides' attack:seed,... [dataset]
import sys, json, time, torch, awm_fast
from awm_fast import study
from cases import ATTACKS, load_case
import awm_fast.inputs as I
P = sys.modules["awm_fast.purify"]
MODEL = [None]
_orig_aug = I.augment_one_shot
def filtered_aug(x, y, copies, generator=None):
    keep_x, keep_y = [x], [y]
    need = torch.full((len(y),), copies)
    for _ in range(30):
        if int(need.sum()) == 0: break
        cand, cy = _orig_aug(x, y, copies, generator)
        cand, cy = cand[len(x):], cy[len(x):]
        with torch.no_grad():
            ok = MODEL[0](cand).argmax(1) == cy
        src_idx = torch.arange(len(y)).repeat_interleave(copies)
        for i in range(len(cand)):
            if ok[i] and need[src_idx[i]] > 0:
                need[src_idx[i]] -= 1; keep_x.append(cand[i:i+1]); keep_y.append(cy[i:i+1])
    return torch.cat(keep_x), torch.cat(keep_y)
tag, overrides, cases = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if overrides.pop('filter_aug', False): P.augment_one_shot = filtered_aug
if overrides.pop('soft_labels', False):
    from awm_fast import loop as L
    _init = L.AWMLoop.__init__
    def _patched(self, model, attached, x, y, cfg, generator, eval_fn=None, verbose=False):
        _init(self, model, attached, x, y, cfg, generator, eval_fn, verbose)
        with torch.no_grad():
            own = torch.cat([model(c).argmax(1) for c in x.split(128)])
        c = int(y.max()) + 1
        soft = torch.nn.functional.one_hot(y, c).float()
        bad = own != y
        bad[:c] = False  # the originals keep their labels
        soft[bad] = 1.0 / c
        self.y = soft
        print("uniform rows", int(bad.sum()), file=sys.stderr)
    L.AWMLoop.__init__ = _patched
dataset = sys.argv[4] if len(sys.argv) > 4 else "digits"
if cases in ("all5", "all2"):  # every attack, seeds 0-4 / 0-1
    cases = ",".join(f"{a}:{s}" for s in range(int(cases[-1])) for a in ATTACKS)
for case in cases.split(","):
    attack_name, seed = case.rsplit(":", 1); seed = int(seed)
    m, att, (x, y), (xe, ye) = load_case(attack_name, seed, dataset)
    MODEL[0] = m
    t = time.time()
    r = awm_fast.purify(m, (x, y), backend="torch", seed=seed, **{"mode": "paper", **overrides})
    sec = time.time() - t
    met = study._metrics(r.model, xe, ye, att)
    line = f"{tag},{dataset},{attack_name},{seed},{100*met['asr']:.1f},{100*met['acc']:.1f},{sec:.1f}"
    print(line, flush=True)
    open("/tmp/r5/results.csv", "a").write(line + "\n")
