# Per-epoch ACC/ASR and the search's loss: python curve.py attack:seed '{purify overrides}'
import json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import awm_fast
from awm_fast import study
from cases import load_case
name, seed = sys.argv[1].rsplit(":", 1); seed = int(seed)
over = json.loads(sys.argv[2])
model, attack, (x, y), (xe, ye) = load_case(name, seed, "fashion-mnist")
ev = lambda m: study._metrics(m, xe[:1000], ye[:1000], attack)
r = awm_fast.purify(model, (x, y), backend="torch", seed=seed, mode="paper", eval_fn=ev, **over)
for h in r.history:
    print(f"{int(h['epoch']):2d} acc {100*h['acc']:.1f} asr {100*h['asr']:.1f} ascent {h['ascent_loss']:.2f} "
          f"trig {h.get('trigger_term', float('nan')):.2f} suspect {h['suspect_class']:.0f}", flush=True)
