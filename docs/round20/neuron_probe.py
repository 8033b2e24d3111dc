# Does pruning the neurons a trigger excites most finish what AWM's masks leave (Neural Cleanse's mitigation, applied
# after AWM)? One image per class; the neuron layers are the ANP baseline's (BatchNorm channels, hidden Linear units).
#   python neuron_probe.py MODEL ATTACK:SEED
# Prints one JSON line of ACC/ASR (%), each with the k neurons of largest excitation pruned, k in KS:
#   "hunted_*": the excitation of purify's last hunted trigger on the ten images and their label-consistent copies
#               (what purify could do itself: nothing outside the clean set is used);
#   "oracle_*": the excitation of the attack's true trigger on 500 evaluation images (reading only: an upper bound
#               on what any neuron ranking could buy);
# on the original model ("*_original") and on the AWM-purified one ("*_awm").
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent
from neurons import excitation, keep_all_but, pruned

import awm_fast
from awm_fast.baselines import anp_neuron_layers
from awm_fast.inputs import augment_one_shot_consistent

KS = (1, 2, 5, 10, 20)
model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(sys.argv)
names = anp_neuron_layers(model)
x, y = few
x_set, _ = augment_one_shot_consistent(model.eval(), x, y, 9, torch.Generator().manual_seed(seed))
result = awm_fast.purify(model, few, seed=seed)
trigger = result.trigger if result.trigger.dim() == x.dim() - 1 else result.trigger[0]
images = x_eval[:500]
views = {"hunted": (x_set, (x_set + trigger).clamp(0, 1)), "oracle": (images, attack.apply(images))}
row = {"model": model_name, "case": f"{name}:{seed}", "before": percent(model, x_eval, y_eval, attack),
       "awm": percent(result.model, x_eval, y_eval, attack)}
for network_name, network in (("original", model), ("awm", result.model)):
    for view, (clean, triggered) in views.items():
        response = excitation(network, names, clean, triggered)
        flat = torch.cat([response[layer] for layer in names])
        sizes = [len(response[layer]) for layer in names]
        order = flat.topk(max(KS)).indices
        row[f"{view}_{network_name}"] = {
            k: percent(pruned(network, names, keep_all_but(names, sizes, order[:k])), x_eval, y_eval, attack)
            for k in KS}
        row[f"{view}_{network_name}_top"] = [int(i) for i in order[:10]]
print(json.dumps(row), flush=True)
