# A trigger-free second signal: Reconstructive Neuron Pruning (RNP; Li et al., ICML 2023) at one image per class.
#   1. unlearn: a copy of the model does SGD *ascent* on the clean set's cross-entropy until its accuracy on that set
#      falls to UNLEARN_ACC (clean features are what the clean loss can reach; a backdoor's are not);
#   2. recover: one mask per neuron (BatchNorm channel, hidden Linear unit) of the unlearned copy, in [0, 1], learns
#      to bring the clean set back (SGD, descent). The unlearned copy leans on whatever survived, so the masks that
#      fall are the neurons the clean set does not need and the unlearned model over-uses: the backdoor's, by RNP's
#      account;
#   3. prune: zero those neurons (mask < THRESHOLD) in the original, or in the model AWM purified.
# Clean set: the one image per class and 9 label-consistent copies each (improved mode's). Batches: the whole set.
# BatchNorm stays in eval mode throughout (the baselines' rule: ~100 images would wreck the running statistics).
#   python rnp_probe.py MODEL ATTACK:SEED ['json overrides of the constants below'] [--awm]
# Prints one JSON line: ACC/ASR of the original, of the RNP-pruned original (at THRESHOLD, and with its k lowest masks
# pruned), with --awm of AWM and AWM then RNP-pruned; how many neurons were pruned per layer, and how many of the ten
# neurons the true trigger excites most (an oracle, for reading only) are among them.
import copy
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import case_from_argv, percent
from neurons import excitation, keep_all_but, neuron_outputs, pruned, set_neuron_masks

import awm_fast
from awm_fast.baselines import anp_neuron_layers
from awm_fast.inputs import augment_one_shot_consistent

WITH_AWM = "--awm" in sys.argv
argv = [a for a in sys.argv if a != "--awm"]
model_name, name, seed, overrides, model, attack, few, (x_eval, y_eval) = case_from_argv(argv)
SETTINGS = {"unlearn_lr": 0.01, "unlearn_acc": 0.1, "unlearn_max_steps": 500, "recover_lr": 0.2,
            "recover_steps": 200, "threshold": 0.2, "copies": 9, **overrides}


def accuracy(network, x, y):
    """Accuracy on (x, y) as a float32 mean, not awm_fast.metrics.clean_accuracy's float64: the rows of
    rnp_runs.jsonl stopped the unlearning on this rounding (18/90 in float32 is just above a 0.2 floor)."""
    with torch.no_grad():
        return float((network(x).argmax(1) == y).float().mean())


def unlearn(network, x, y):
    """SGD ascent (momentum 0.9, weight decay 5e-4: RNP's) on every parameter until accuracy on (x, y) <= unlearn_acc.
    Returns the number of steps."""
    parameters = [p for p in network.parameters() if p.is_floating_point()]
    for p in parameters:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(parameters, lr=SETTINGS["unlearn_lr"], momentum=0.9, weight_decay=5e-4)
    steps = 0
    while accuracy(network, x, y) > SETTINGS["unlearn_acc"] and steps < SETTINGS["unlearn_max_steps"]:
        loss = -F.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    for p in parameters:
        p.requires_grad_(False)
    return steps


def recover(network, names, x, y):
    """Neuron masks {name: [C] fp32 in [0, 1]} that bring the unlearned network's accuracy on (x, y) back."""
    masks = {layer: torch.ones(module.weight.shape[0], requires_grad=True)
             for layer, module in neuron_outputs(network, names).items()}
    handles = set_neuron_masks(network, names, masks)
    optimizer = torch.optim.SGD(list(masks.values()), lr=SETTINGS["recover_lr"], momentum=0.9)
    for _ in range(SETTINGS["recover_steps"]):
        loss = F.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for mask in masks.values():
                mask.clamp_(0.0, 1.0)
    recovered = accuracy(network, x, y)
    for handle in handles:
        handle.remove()
    return {layer: mask.detach() for layer, mask in masks.items()}, recovered


x, y = few
generator = torch.Generator().manual_seed(seed)
x_set, y_set = augment_one_shot_consistent(model.eval(), x, y, SETTINGS["copies"], generator)
names = anp_neuron_layers(model)
unlearned = copy.deepcopy(model).eval()
steps = unlearn(unlearned, x_set, y_set)
unlearned_pct = percent(unlearned, x_eval, y_eval, attack)
masks, recovered = recover(unlearned, names, x_set, y_set)
keep = {layer: (mask >= SETTINGS["threshold"]).float() for layer, mask in masks.items()}
flat_masks = torch.cat([masks[layer] for layer in names])
sizes = [len(masks[layer]) for layer in names]
response = excitation(model, names, x_eval[:500], attack.apply(x_eval[:500]))
flat_excitation = torch.cat([response[layer] for layer in names])
flat_keep = torch.cat([keep[layer] for layer in names])
top = flat_excitation.topk(10).indices
row = {"model": model_name, "case": f"{name}:{seed}", "settings": SETTINGS, "set": len(y_set),
       "unlearn_steps": steps, "unlearned": unlearned_pct, "recovered_set_acc": round(recovered, 3),
       "pruned": {layer: int((k == 0).sum()) for layer, k in keep.items()},
       "oracle_top10_pruned": int((flat_keep[top] == 0).sum()),
       "before": percent(model, x_eval, y_eval, attack),
       "rnp": percent(pruned(model, names, keep), x_eval, y_eval, attack),
       # topk per k, not one topk(40) sliced: masks clamped at 0 tie, and the two pick different tied neurons.
       "rnp_lowest_k": {k: percent(pruned(model, names, keep_all_but(names, sizes, flat_masks.topk(k, largest=False)
                                                                     .indices)), x_eval, y_eval, attack)
                        for k in (5, 10, 20, 40)}}
if WITH_AWM:
    result = awm_fast.purify(model, few, seed=seed)
    row["awm"] = percent(result.model, x_eval, y_eval, attack)
    row["awm_then_rnp"] = percent(pruned(result.model, names, keep), x_eval, y_eval, attack)
print(json.dumps(row), flush=True)
