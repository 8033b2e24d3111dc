"""Neuron-level helpers shared by the round-20 probes: neuron masks as forward hooks on the ANP baseline's neuron
layers (every BatchNorm channel, every hidden Linear unit), and a neuron's response to a trigger."""
import copy

import torch


def neuron_outputs(network, names):
    """{name: module} of the layers whose outputs are masked (the ANP baseline's neuron layers)."""
    modules = dict(network.named_modules())
    return {layer: modules[layer] for layer in names}


def set_neuron_masks(network, names, masks):
    """Forward hooks multiplying each named layer's output by its mask [C] along dim 1; returns the handles."""
    handles = []
    for layer, module in neuron_outputs(network, names).items():
        mask = masks[layer]

        def hook(module, inputs, output, mask=mask):
            return output * mask.view((1, -1) + (1,) * (output.dim() - 2))

        handles.append(module.register_forward_hook(hook))
    return handles


def pruned(network, names, keep):
    """A copy of `network` whose neurons with keep == 0 output nothing (hooks; keep {name: [C] 0/1})."""
    copied = copy.deepcopy(network)
    set_neuron_masks(copied, names, keep)
    return copied


def keep_all_but(names, sizes, flat_indices):
    """{name: [C] 0/1}: 0 at the given indices of the layers' neurons laid end to end, 1 elsewhere."""
    keep = torch.ones(sum(sizes))
    keep[flat_indices] = 0
    return dict(zip(names, keep.split(sizes), strict=True))


def excitation(network, names, clean, triggered):
    """{name: [C]} each neuron's mean output on `triggered` minus on `clean` ([N, C, H, W] images each)."""
    outputs = {}
    handles = [module.register_forward_hook(lambda m, i, o, layer=layer: outputs.__setitem__(layer, o))
               for layer, module in neuron_outputs(network, names).items()]
    with torch.no_grad():
        network(clean)
        on_clean = {layer: o.transpose(0, 1).flatten(1).mean(1) for layer, o in outputs.items()}
        network(triggered)
        on_triggered = {layer: o.transpose(0, 1).flatten(1).mean(1) for layer, o in outputs.items()}
    for handle in handles:
        handle.remove()
    return {layer: on_triggered[layer] - on_clean[layer] for layer in names}
