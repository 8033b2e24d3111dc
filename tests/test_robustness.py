"""Bad input to purify(): one clear error naming the problem, and the model left exactly as it was found.

test_purify.py covers the option checks and the data checks (empty, length mismatch, float labels, NaN,
bounds, labels out of range, rejected shapes, no maskable layer); this file covers the rest of the issue's
list: a single class, train mode, devices, the model's output, non-modules, and failures half-way through.
"""

import warnings

import pytest
import torch
import torch.nn as nn

import awm_fast
from awm_fast.inputs import as_tensors, check_classes

from tiny_models import tiny_cnn, tiny_data

FAST = dict(outer=1, inner=1, batch_size=8)


def _snapshot(model: nn.Module):
    """Everything purify could touch: values, per-module modes, requires_grad flags, module types, devices."""
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {name: m.training for name, m in model.named_modules()},
            {name: p.requires_grad for name, p in model.named_parameters()},
            [type(m).__name__ for m in model.modules()],
            {p.device for p in model.parameters()})


def _assert_unchanged(model: nn.Module, snapshot) -> None:
    values, modes, flags, types, devices = _snapshot(model)
    assert values.keys() == snapshot[0].keys()
    for key, value in snapshot[0].items():
        assert torch.equal(values[key], value), key
    assert (modes, flags, types, devices) == snapshot[1:]


def test_a_single_class_is_rejected_before_the_model_is_touched():
    model, (x, _) = tiny_cnn(), tiny_data()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="single class"):
        awm_fast.purify(model, (x, torch.full((len(x),), 2)), inplace=True, **FAST)
    _assert_unchanged(model, before)
    with pytest.raises(ValueError, match="single class"):
        check_classes(torch.tensor([1]))
    check_classes(torch.tensor([1, 0]))


def test_train_mode_warns_once_runs_in_eval_and_the_callers_model_keeps_its_modes():
    model, (x, y) = tiny_cnn(), tiny_data()
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model: per-module modes must survive
    before = _snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = awm_fast.purify(model, (x, y), **FAST)
    train_warnings = [w for w in caught if "train mode" in str(w.message)]
    assert len(train_warnings) == 1 and issubclass(train_warnings[0].category, UserWarning)
    assert "your model keeps its mode" in str(train_warnings[0].message)
    assert train_warnings[0].filename == __file__  # stacklevel points at the caller
    assert not any(m.training for m in result.model.modules())
    _assert_unchanged(model, before)


def test_train_mode_with_inplace_switches_the_model_itself():
    model, (x, y) = tiny_cnn(), tiny_data()
    model.train()
    with pytest.warns(UserWarning, match=r"the model itself \(inplace=True\)"):
        result = awm_fast.purify(model, (x, y), inplace=True, **FAST)
    assert result.model is model and not any(m.training for m in model.modules())


def test_an_eval_mode_model_gets_no_warning():
    model, (x, y) = tiny_cnn(), tiny_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        awm_fast.purify(model, (x, y), **FAST)


def test_a_failure_half_way_leaves_an_inplace_model_exactly_as_it_was():
    model, (x, y) = tiny_cnn(), tiny_data()
    model.train()
    model[0].bias.requires_grad_(False)
    before = _snapshot(model)
    calls = []

    def failing_eval(masked_model):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation server went away")
        return {}

    with pytest.warns(UserWarning, match="train mode"), pytest.raises(RuntimeError, match="went away"):
        awm_fast.purify(model, (x, y), inplace=True, eval_fn=failing_eval, outer=3, inner=1, batch_size=8)
    assert len(calls) == 2  # it failed after masks had been trained for two epochs
    _assert_unchanged(model, before)


def test_data_that_requires_grad_is_read_not_differentiated():
    model, (x, y) = tiny_cnn(), tiny_data()
    x = x.clone().requires_grad_(True)
    awm_fast.purify(model, (x, y), **FAST)
    assert x.grad is None
    x_checked, _ = as_tensors((x, y))
    assert not x_checked.requires_grad


def test_a_model_spread_over_two_devices_is_rejected():
    model, (x, y) = tiny_cnn(), tiny_data()
    model[6].to("meta")  # one Linear elsewhere: stands in for a model split across GPUs
    with pytest.raises(ValueError, match=r"spread over devices \['cpu', 'meta'\]"):
        awm_fast.purify(model, (x, y), **FAST)


@pytest.mark.parametrize("device, match", [
    ("warp-drive", "unknown device 'warp-drive'"),
    pytest.param("cuda", "CUDA is not available", marks=pytest.mark.skipif(torch.cuda.is_available(),
                                                                              reason="CUDA is available here")),
])
def test_a_bad_device_option_is_a_value_error(device, match):
    model, (x, y) = tiny_cnn(), tiny_data()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=match):
        awm_fast.purify(model, (x, y), device=device, inplace=True, **FAST)
    _assert_unchanged(model, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_data_on_another_device_than_the_model_is_copied_to_the_run_device():
    model, (x, y) = tiny_cnn(), tiny_data()
    x_gpu, y_gpu = x.cuda(), y.cuda()
    result = awm_fast.purify(model, (x_gpu, y_gpu), **FAST)
    assert {p.device.type for p in result.model.parameters()} == {"cpu"}
    assert result.trigger.device.type == "cpu"
    assert x_gpu.is_cuda and y_gpu.is_cuda


class _Wrapped(nn.Module):
    """tiny_cnn with its output passed through `post` (to fake models with the wrong kind of output)."""

    def __init__(self, post):
        super().__init__()
        self.net, self.post = tiny_cnn(), post

    def forward(self, x):
        return self.post(self.net(x))


@pytest.mark.parametrize("post, match", [
    (lambda logits: (logits, logits), r"logits \[B, num_classes\]; got tuple"),
    (lambda logits: {"logits": logits}, r"logits \[B, num_classes\]; got dict"),
    (lambda logits: logits[..., None], r"logits \[B, num_classes\]; got \(2, 4, 1\)"),
    (lambda logits: logits[:1], r"logits \[B, num_classes\]; got \(1, 4\)"),
    (lambda logits: logits.argmax(1, keepdim=True).expand(-1, 4), "floating-point logits"),
    (lambda logits: logits * float("nan"), "NaN or Inf logits"),
    (lambda logits: logits[:, :2], "label 3 is out of range for a model with 2 outputs"),
])
def test_a_model_whose_output_is_not_logits_covering_the_labels_is_rejected(post, match):
    model, (x, y) = _Wrapped(post), tiny_data()
    model.eval()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=match):
        awm_fast.purify(model, (x, y), inplace=True, **FAST)
    _assert_unchanged(model, before)


def test_non_finite_weights_are_reported_as_such():
    model, (x, y) = tiny_cnn(), tiny_data()
    with torch.no_grad():
        model[6].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf logits .* check its weights"):
        awm_fast.purify(model, (x, y), **FAST)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, y: awm_fast.purify("model.pt", (x, y)), TypeError, "model must be a torch.nn.Module, got str"),
    (lambda x, y: awm_fast.purify(tiny_cnn(), (x, y), eval_fn="acc"), TypeError, "eval_fn must be callable"),
    (lambda x, y: awm_fast.purify(nn.Sequential(nn.ReLU()), (x, y)), ValueError, "no parameters"),
    (lambda x, y: awm_fast.purify(tiny_cnn(), (x, y.bool())), TypeError, "integers"),
    (lambda x, y: awm_fast.purify(tiny_cnn(), (x, y[:, None].expand(-1, 2))), ValueError, r"shape \[N\]"),
    (lambda x, y: awm_fast.purify(tiny_cnn(), (x.double(), y)), ValueError, "rejects inputs .* dtype torch.float64"),
])
def test_other_bad_arguments_name_the_problem(call, error, match):
    x, y = tiny_data()
    with pytest.raises(error, match=match):
        call(x, y)
