"""torch.compile: one AWM mask step of the torch backend traces as a single graph and matches eager."""

import torch
import torch.nn.functional as F

from awm_fast.masking import attach_masks, select_layers

from tiny_models import tiny_cnn, tiny_data


def _mask_step_loss(model, images, labels, trigger):
    perturbed = (images + trigger).clamp(0, 1)
    logits = model(torch.cat([images, perturbed]))
    clean, triggered = logits[: len(images)], logits[len(images):]
    return 0.9 * F.cross_entropy(clean, labels) + 0.1 * F.cross_entropy(triggered, labels)


def test_torch_backend_mask_step_compiles_without_graph_breaks_and_matches_eager():
    torch._dynamo.reset()
    x, y = tiny_data()
    trigger = torch.rand(1, 8, 8) * 0.1
    grads = {}
    for compiled in (False, True):
        model = tiny_cnn().requires_grad_(False)
        attached = attach_masks(model, select_layers(model, "conv+linear"), backend="torch")
        step = torch.compile(_mask_step_loss, backend="aot_eager", fullgraph=True) if compiled else _mask_step_loss
        loss = step(model, x, y, trigger)
        loss.backward()
        grads[compiled] = (loss.detach(), [m.grad.clone() for m in attached.masks.values()])
    torch.testing.assert_close(grads[True][0], grads[False][0])
    for compiled_grad, eager_grad in zip(grads[True][1], grads[False][1], strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, atol=1e-6, rtol=1e-5)
