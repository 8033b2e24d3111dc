"""Baselines (awm_fast.baselines): fine-tuning and ANP return purified copies of the same class, leave the
caller's model untouched, and ANP's hooks compute exactly the model's function when the masks are 1."""

import pytest
import torch
import torch.nn as nn

from awm_fast.baselines import _NeuronPerturbation, anp, anp_neuron_layers, fine_tune
from awm_fast.models import SmallCNN

# These models are tiny: one thread avoids inter-op contention on a busy CI machine (~10x faster there).
pytestmark = pytest.mark.usefixtures("single_thread")


def _model_and_data():
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=4, image_size=8, width=4).eval()
    x = torch.rand(4, 1, 8, 8)
    y = torch.arange(4)
    return model, x, y


def _snapshot(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_fine_tune_returns_a_changed_copy_and_leaves_the_input_alone():
    model, x, y = _model_and_data()
    before = _snapshot(model)
    tuned = fine_tune(model, (x, y), steps=3, batch_size=8)
    assert type(tuned) is SmallCNN and not tuned.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    assert not any(p.requires_grad or p.grad is not None for p in tuned.parameters())


def test_anp_neuron_layers_are_batchnorms_and_hidden_linears():
    model, _, _ = _model_and_data()
    assert anp_neuron_layers(model) == ["features.1", "features.5", "features.9", "classifier.1"]


def test_neuron_hook_with_unit_masks_is_the_identity_and_perturbation_scales_neurons():
    model, x, _ = _model_and_data()
    reference = model(x)
    hooks = [_NeuronPerturbation(dict(model.named_modules())[name]) for name in anp_neuron_layers(model)]
    torch.testing.assert_close(model(x), reference)
    bn = hooks[0]
    bn.mask.data[0] = 0.0  # neuron 0 of the first BatchNorm now outputs its bias only
    out = bn.module(torch.randn(2, 4, 8, 8))
    torch.testing.assert_close(out[:, 0], bn.module.bias[0].expand(2, 8, 8).detach())
    for hook in hooks:
        hook.handle.remove()
    torch.testing.assert_close(model(x), reference)


def test_anp_prunes_by_threshold_and_keeps_the_class():
    model, x, y = _model_and_data()
    before = _snapshot(model)
    kept = anp(model, (x, y), steps=2, batch_size=8, threshold=0.0)
    torch.testing.assert_close(kept(x), model(x))  # threshold 0 prunes nothing: same function
    pruned, masks = anp(model, (x, y), steps=2, batch_size=8, threshold=1.01, return_masks=True)
    assert type(pruned) is SmallCNN and not pruned.training
    assert set(masks) == set(anp_neuron_layers(model))
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in masks.values())
    assert float(pruned.features[1].weight.abs().sum()) == 0.0  # every neuron below 1.01: all scales zeroed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(h, nn.Module) for h in pruned.features[1]._forward_hooks.values())
    assert not pruned.features[1]._forward_hooks
