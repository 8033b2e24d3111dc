# Oracle: AWM's mask step driven by the TRUE trigger (the attack's mean perturbation over 500 test images)
# instead of a recovered one; Fashion-MNIST models of the round-2 cache.
# python oracle.py TAG '{purify overrides}' attack:seed,...   (appends to /tmp/r6/results.csv)
import json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
import torch, awm_fast
from awm_fast import study, loop
from cases import load_case
tag, overrides, cases = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
TRUE = [None]
def true_trigger(self):
    return TRUE[0].unsqueeze(0).repeat(self.cfg.num_triggers, 1, 1, 1).to(self.device), torch.zeros(())
loop.AWMLoop._recover_triggers_batched = true_trigger
os.makedirs("/tmp/r6", exist_ok=True)
for case in cases.split(","):
    attack_name, seed = case.rsplit(":", 1); seed = int(seed)
    model, attack, (x, y), (x_eval, y_eval) = load_case(attack_name, seed, "fashion-mnist")
    TRUE[0] = study.true_trigger(attack, x_eval[:500])
    start = time.time()
    result = awm_fast.purify(model, (x, y), backend="torch", seed=seed, **{"mode": "paper", **overrides})
    metrics = study._metrics(result.model, x_eval, y_eval, attack)
    line = (f"{tag},fashion-mnist,{attack_name},{seed},{100 * metrics['asr']:.1f},{100 * metrics['acc']:.1f},"
            f"{time.time() - start:.1f}")
    print(line, flush=True)
    open("/tmp/r6/results.csv", "a").write(line + "\n")
