"""The command line end to end on a tiny real checkpoint, its exit codes and one-line errors, and the safe
loaders and atomic writers behind it (awm_fast.checkpoints)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import awm_fast
from awm_fast import checkpoints, cli
from awm_fast.attacks import BadNets
from awm_fast.data import load_digits
from awm_fast.metrics import evaluate
from awm_fast.models import SmallCNN

MODEL_KWARGS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 4}
CONFIG = {"outer": 2, "inner": 1, "batch_size": 20, "seed": 5}
ATTACK = "badnets:size=2,offset=1,target=0"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A SmallCNN checkpoint (.pt), 2 digits per class (uint8 .npz), 40 held-out digits, a YAML config."""
    root = tmp_path_factory.mktemp("cli")
    split = load_digits()
    torch.manual_seed(0)
    torch.save(SmallCNN(**MODEL_KWARGS).state_dict(), root / "model.pt")
    x_test, y_test = split.x_test.numpy(), split.y_test.numpy()
    few = np.concatenate([np.flatnonzero(y_test == c)[:2] for c in range(10)])
    np.savez(root / "few.npz", x=np.round(x_test[few] * 255).astype(np.uint8), y=y_test[few])
    np.savez(root / "eval.npz", x=x_test[100:140], y=y_test[100:140])
    (root / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in CONFIG.items()))
    nan = x_test[few].copy()
    nan[3, 0, 2, 2] = np.nan
    np.savez(root / "nan.npz", x=nan, y=y_test[few])
    np.savez(root / "one_class.npz", x=x_test[few], y=np.zeros(len(few), dtype=np.int64))
    return root


def _purify_args(files, out, *extra):
    return ["purify", "--model-def", "awm_fast.models:SmallCNN", "--model-kwargs", json.dumps(MODEL_KWARGS),
            "--weights", str(files / "model.pt"), "--data", str(files / "few.npz"), "--config",
            str(files / "config.yaml"), "--out", str(out), *extra]


def _loaded_model(path):
    model = SmallCNN(**MODEL_KWARGS)
    checkpoints.load_weights(model, path)
    return model.eval()


def test_purify_end_to_end_writes_weights_report_and_plots(files, tmp_path, capsys):
    out = tmp_path / "purified.safetensors"
    code = cli.main(_purify_args(files, out, "--eval-data", str(files / "eval.npz"), "--attack", ATTACK))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "awm-fast purify" in captured.out and "ACC before -> after" in captured.out
    assert captured.err == ""  # no bar off a terminal, no warning

    # The file is exactly what the library computes with the same config and seed (CPU: bit-identical).
    data = checkpoints.load_data(files / "few.npz")
    assert data.x.dtype == torch.float32 and float(data.x.max()) <= 1.0  # uint8 / 255
    expected = awm_fast.purify(_loaded_model(files / "model.pt"), (data.x, data.y), awm_fast.AWMConfig(**CONFIG))
    purified = _loaded_model(out)
    for name, value in expected.model.state_dict().items():
        assert torch.equal(purified.state_dict()[name], value), name

    report = json.loads((tmp_path / "purified.report.json").read_text())
    # 20 images, 2 per class: improved mode adds ceil(9 / 2) = 5 copies each, so the step count is the augmented
    # set's, 20 · 6 // batch_size 20 · inner 1 = 6.
    assert report["seed"] == 5 and report["config"]["outer"] == 2 and report["config"]["steps"] == 6
    assert report["package_versions"]["torch"] and report["package_versions"]["awm_fast"] == awm_fast.__version__
    assert {"load_model", "load_data", "purify", "save_weights", "plots", "total"} <= set(report["timings_seconds"])
    assert set(report["masks"]) == set(expected.masks)
    for name, stats in report["masks"].items():
        assert stats["mean"] == pytest.approx(float(expected.masks[name].mean()))
        assert sum(stats["histogram"]["counts"]) == stats["numel"] == expected.masks[name].numel()
    assert {"acc", "asr"} <= set(report["metrics"]["before"]) and {"acc", "asr"} <= set(report["metrics"]["after"])
    assert report["metrics"]["after"]["acc"] == pytest.approx(
        evaluate(purified, *_eval_set(files), BadNets(size=2, offset=1, target=0))["acc"])
    assert [record["epoch"] for record in report["history"]] == [1, 2]
    assert all({"acc", "asr", "loss", "mask_mean"} <= set(record) for record in report["history"])
    assert report["inputs"]["weights"]["sha256"] and report["run"]["backend"] == "torch"

    for kind in ("trigger", "masks", "history"):
        assert (tmp_path / f"purified.{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "purified.safetensors", "purified.report.json", "purified.trigger.png", "purified.masks.png",
        "purified.history.png"])  # no temporary file left behind


def _eval_set(files):
    data = checkpoints.load_data(files / "eval.npz")
    return data.x, data.y


def test_evaluate_reports_acc_and_asr(files, tmp_path, capsys):
    report = tmp_path / "eval.json"
    code = cli.main(["evaluate", "--model-def", "awm_fast.models:SmallCNN", "--model-kwargs",
                     json.dumps(MODEL_KWARGS), "--weights", str(files / "model.pt"), "--data",
                     str(files / "eval.npz"), "--attack", ATTACK, "--batch-size", "7", "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    expected = evaluate(_loaded_model(files / "model.pt"), *_eval_set(files), BadNets(size=2, offset=1, target=0))
    figures = json.loads(report.read_text())["metrics"]
    assert figures["acc"] == pytest.approx(expected["acc"]) and figures["asr"] == pytest.approx(expected["asr"])
    assert "ACC" in captured.out and "ASR (badnets" in captured.out


def _pickled_module(files, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(SmallCNN(**MODEL_KWARGS), path)  # a pickled nn.Module, not a state dict
    return ["--weights", str(path)]


def _write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


BAD_INPUTS = {
    "missing weights": (lambda f, t: ["--weights", str(t / "nope.pt")], "weights file .*nope.pt does not exist"),
    "unknown weights format": (lambda f, t: ["--weights", _write(t, "w.onnx", "x")], "unknown format .onnx"),
    "corrupt weights": (lambda f, t: ["--weights", _write(t, "w.pt", "not a zip")], "cannot be loaded as weights"),
    "pickled module": (_pickled_module, "cannot be loaded as weights only .* save model.state_dict"),
    "corrupt safetensors": (lambda f, t: ["--weights", _write(t, "w.safetensors", "{}")],
                            "not a readable .safetensors"),
    "no such module": (lambda f, t: ["--model-def", "no_such_pkg.nets:Net"], "no module named 'no_such_pkg.nets'"),
    "no colon": (lambda f, t: ["--model-def", "SmallCNN"], "must look like MODULE:CLASS"),
    "no such class": (lambda f, t: ["--model-def", "awm_fast.models:BigCNN"], "has no attribute 'BigCNN'"),
    "not a module": (lambda f, t: ["--model-def", "awm_fast.models:MODELS"], "names a tuple"),
    "bad kwargs json": (lambda f, t: ["--model-kwargs", "{num_classes: 10}"], "not valid JSON"),
    "wrong kwargs": (lambda f, t: ["--model-kwargs", '{"classes": 10}'], "rejected --model-kwargs"),
    "mis-shaped weights": (lambda f, t: ["--model-kwargs", json.dumps({**MODEL_KWARGS, "width": 8})],
                           "does not fit the model SmallCNN: mis-shaped"),
    "missing data": (lambda f, t: ["--data", str(t / "none.npz")], "data .*none.npz does not exist"),
    "data format": (lambda f, t: ["--data", _write(t, "d.csv", "1,2")], "unknown format .csv"),
    "NaN data": (lambda f, t: ["--data", str(f / "nan.npz")], "x contains NaN or Inf"),
    "one class": (lambda f, t: ["--data", str(f / "one_class.npz")], "single class"),
    "unknown option": (lambda f, t: ["--config", _write(t, "c.yaml", "outer: 1\nlearning_rate: 3\n")],
                       r"--config .*c.yaml: unknown AWMConfig option\(s\) \['learning_rate'\]"),
    "bad option value": (lambda f, t: ["--config", _write(t, "c.json", '{"trigger_norm": -1}')], "trigger_norm"),
    "unknown backend": (lambda f, t: ["--config", _write(t, "c.yaml", "backend: cuda-magic\n")], "unknown backend"),
    "bad yaml": (lambda f, t: ["--config", _write(t, "c.yaml", "outer: [1\n")], "invalid YAML"),
    "missing config": (lambda f, t: ["--config", str(t / "none.yaml")], "config file .* does not exist"),
    "out suffix": (lambda f, t: ["--out", str(t / "model.onnx")], "use a .safetensors"),
    "out directory": (lambda f, t: ["--out", str(t / "no" / "dir.safetensors")], "does not exist"),
    "attack without eval data": (lambda f, t: ["--attack", ATTACK], "--attack needs --eval-data"),
    "unknown attack": (lambda f, t: ["--eval-data", str(f / "eval.npz"), "--attack", "laser"], "unknown attack"),
    "bad device": (lambda f, t: ["--device", "warp-drive"], "unknown device 'warp-drive'"),
    "usage": (lambda f, t: ["--outer", "many"], "argument --outer: invalid int value"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_on_stderr_and_writes_nothing(case, files, tmp_path, capsys):
    make_args, message = BAD_INPUTS[case]
    out = tmp_path / "out.safetensors"
    args = _purify_args(files, out) + make_args(files, tmp_path)  # argparse: the last occurrence wins
    before = set(tmp_path.iterdir())
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("awm-fast: error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert set(tmp_path.iterdir()) == before  # nothing written, not even a temporary file


def test_a_checkpoint_is_never_executed(files, tmp_path, capsys):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):  # unpickling this would create `marker`
            return (pathlib.Path.touch, (marker,))

    torch.save({"features.0.weight": Payload()}, tmp_path / "evil.pt")
    code = cli.main(_purify_args(files, tmp_path / "out.safetensors", "--weights", str(tmp_path / "evil.pt")))
    assert code == 2 and "cannot be loaded as weights only" in capsys.readouterr().err
    assert not marker.exists()


def test_a_failure_while_saving_leaves_the_previous_file_and_no_partial_one(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "purified.safetensors"
    out.write_bytes(b"previous")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", disk_full)  # fails after the bytes went to the temporary file
    code = cli.main(_purify_args(files, out, "--no-plots"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("awm-fast: internal error (OSError): "), lines
    assert "No space left on device" in lines[0]
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["purified.safetensors"]


def test_atomic_write_removes_its_temporary_file_when_the_writer_fails(tmp_path):
    def half_then_crash(handle):
        handle.write(b"half a tensor")
        raise RuntimeError("serialiser crashed")

    with pytest.raises(RuntimeError, match="serialiser crashed"):
        checkpoints.atomic_write(tmp_path / "w.safetensors", half_then_crash)
    assert list(tmp_path.iterdir()) == []
    checkpoints.atomic_write_bytes(tmp_path / "w.bin", b"complete")
    assert (tmp_path / "w.bin").read_bytes() == b"complete"
    assert oct((tmp_path / "w.bin").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # like open() would


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_python_dash_m_exit_code_and_stderr_in_a_real_process(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "awm_fast", "purify", "--model-def", "awm_fast.models:SmallCNN", "--weights",
         str(tmp_path / "missing.pt"), "--data", str(tmp_path), "--out", str(tmp_path / "o.safetensors")],
        capture_output=True, text=True, timeout=120)
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [f"awm-fast: error: weights file {tmp_path / 'missing.pt'} does "
                                                   "not exist"]


def test_demo_subcommand_and_its_flags_are_unchanged(monkeypatch):
    import awm_fast.demo

    seen = []
    monkeypatch.setattr(awm_fast.demo, "run_demo", lambda settings: seen.append(settings))
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--dataset", "fashion-mnist", "--mode", "paper", "--backend", "torch",
                     "--per-class", "2", "--outer", "3", "--train-epochs", "1", "--seed", "4"]) == 0
    assert seen[0] == awm_fast.demo.DemoSettings()
    assert seen[1] == awm_fast.demo.DemoSettings(dataset="fashion-mnist", mode="paper", backend="torch",
                                                 per_class=2, seed=4, train_epochs=1, outer=3)


# ------------------------------------------------------------------------------------------- loaders and writers


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(3, 3)
        self.again = self.shared
        self.head = nn.Linear(3, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip_with_tied_layers_and_a_data_parallel_prefix(tmp_path, suffix):
    model = _Tied()
    path = checkpoints.save_weights(model.state_dict(), tmp_path / f"w{suffix}")
    restored = checkpoints.load_weights(_Tied(), path)
    for name, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value)
    assert restored.shared is restored.again
    prefixed = checkpoints.save_weights({f"module.{k}": v for k, v in model.state_dict().items()},
                                        tmp_path / f"dp{suffix}")
    assert torch.equal(checkpoints.load_weights(_Tied(), prefixed).head.weight, model.head.weight)


def test_nested_checkpoints_are_unwrapped_and_foreign_entries_refused(tmp_path):
    model = _Tied()
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, tmp_path / "nested.pt")
    assert torch.equal(checkpoints.load_weights(_Tied(), tmp_path / "nested.pt").head.bias, model.head.bias)
    torch.save({**model.state_dict(), "note": "hello"}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="entry 'note' is a str"):
        checkpoints.read_state_dict(tmp_path / "mixed.pt")


def test_data_directory_of_npy_arrays_and_label_checks(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, 8, 8)))  # [N, H, W]: one channel
    np.save(tmp_path / "y.npy", np.array([[0], [1], [0], [1]]))
    data = checkpoints.load_data(tmp_path)
    assert data.x.shape == (4, 1, 8, 8) and data.x.dtype == torch.float32 and data.y.tolist() == [0, 1, 0, 1]
    np.save(tmp_path / "y.npy", np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(TypeError, match="labels y must be integers"):
        checkpoints.load_data(tmp_path)
    np.savez(tmp_path / "objects.npz", x=np.array([object()] * 2), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="cannot be read without pickle"):
        checkpoints.load_data(tmp_path / "objects.npz")
    np.savez(tmp_path / "names.npz", images=np.zeros((2, 1, 4, 4)), labels=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"expected arrays 'x' and 'y', found \['images', 'labels'\]"):
        checkpoints.load_data(tmp_path / "names.npz")


def test_image_folder_labels_channels_and_sizes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in (0, 2, 10):  # numeric names are the labels ("10" sorts after "2")
        (tmp_path / "digits" / str(label)).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8)).save(tmp_path / "digits" / str(label) / "a.png")
    data = checkpoints.load_data(tmp_path / "digits")
    assert data.x.shape == (3, 1, 5, 6) and sorted(data.y.tolist()) == [0, 2, 10]
    for name in ("cat", "ant"):  # names: sorted order, RGB keeps three channels
        (tmp_path / "pets" / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "pets" / name / "1.png")
    data = checkpoints.load_data(tmp_path / "pets")
    assert data.x.shape == (2, 3, 4, 4) and data.classes == ["ant", "cat"] and data.y.tolist() == [0, 1]
    Image.fromarray(np.zeros((7, 7, 3), dtype=np.uint8)).save(tmp_path / "pets" / "cat" / "2.png")
    with pytest.raises(ValueError, match="resize the images to one size"):
        checkpoints.load_data(tmp_path / "pets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither x.npy"):
        checkpoints.load_data(tmp_path / "empty")


def test_model_definitions_torchvision_and_a_python_file(tmp_path):
    resnet = checkpoints.build_model("torchvision:resnet18", {"num_classes": 3})
    assert type(resnet).__name__ == "ResNet" and resnet.fc.out_features == 3
    with pytest.raises(ValueError, match="never downloads weights"):
        checkpoints.build_model("torchvision:resnet18", {"weights": "DEFAULT"})
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        checkpoints.build_model("torchvision:fasterrcnn_resnet50_fpn")
    source = tmp_path / "my_net.py"
    source.write_text("import torch.nn as nn\n\ndef make(width=2):\n    return nn.Sequential(nn.Linear(4, width))\n")
    assert checkpoints.build_model(f"{source}:make", {"width": 5})[0].out_features == 5
    with pytest.raises(TypeError, match="returned a int"):
        source.write_text("def make():\n    return 3\n")
        checkpoints.build_model(f"{source}:make")


def test_config_files_yaml_and_json(tmp_path):
    (tmp_path / "c.yaml").write_text("outer: 3\ninput_bounds: [-1, 1]\nmask_layers: [features.0]\n")
    options = checkpoints.load_config_file(tmp_path / "c.yaml")
    assert options == {"outer": 3, "input_bounds": (-1, 1), "mask_layers": ["features.0"]}
    assert awm_fast.AWMConfig(**options).validate().input_bounds == (-1, 1)
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a mapping"):
        checkpoints.load_config_file(tmp_path / "c.json")
    (tmp_path / "c.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="invalid YAML"):  # safe_load: no Python tags
        checkpoints.load_config_file(tmp_path / "c.yaml")


def test_report_with_k_triggers_non_finite_values_and_plots(tmp_path):
    from awm_fast import report

    masks = {"conv.weight": torch.tensor([[0.0, 0.25], [0.75, 1.0]]), "fc.weight": torch.ones(3)}
    history = [{"epoch": 1, "loss": float("nan"), "mask_mean": 0.5, "acc": 0.9, "asr": 0.1, "seconds": 0.1}]
    result = awm_fast.PurifyResult(nn.Linear(2, 2), masks, torch.ones(2, 1, 4, 4) * torch.tensor([1.0, -2.0])[:, None,
                                   None, None], history, awm_fast.AWMConfig(num_triggers=2, mask_layers=lambda n, m: 1))
    built = report.build_report(result, inputs={"path": pathlib.Path("x")}, timings={"purify": 1.0})
    text = json.dumps(built, allow_nan=False)  # strict JSON: NaN became null
    assert json.loads(text)["history"][0]["loss"] is None and built["inputs"]["path"] == "x"
    assert built["trigger"]["l1"] == [16.0, 32.0] and built["trigger"]["linf"] == [1.0, 2.0]
    assert built["masks"]["conv.weight"]["fraction_below_0.5"] == 0.5
    assert built["masks"]["conv.weight"]["histogram"]["counts"] == [1, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    assert built["config"]["mask_layers"].startswith("<function")
    written = report.write_plots(result, tmp_path / "run", metrics_before={"acc": 0.95, "asr": 0.99})
    assert [p.name for p in written] == ["run.trigger.png", "run.masks.png", "run.history.png"]
    table = report.summary_table([("ACC", "90.0%"), ("a much longer key", "x")], title="t").splitlines()
    assert len({len(line) for line in table}) == 1  # aligned
