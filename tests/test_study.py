"""The efficacy study runner writes a sane CSV, Markdown and PNGs on a tiny digits grid, and caches models."""

import csv
import dataclasses

import pytest

from awm_fast.study import CSV_COLUMNS, StudySettings, main, parse_method, run_study

# These models are tiny: one thread avoids inter-op contention on a busy CI machine (~10x faster there).
pytestmark = pytest.mark.usefixtures("single_thread")


def test_parse_method():
    assert parse_method("awm-improved[steps=30, alpha=0.5, clean_loss=distill]") == (
        "awm-improved", {"steps": 30, "alpha": 0.5, "clean_loss": "distill"})
    assert parse_method("ft") == ("ft", {})
    with pytest.raises(ValueError, match="unknown method"):
        parse_method("magic")


def test_attack_specs_take_the_studys_defaults_then_the_overrides():
    from awm_fast.attacks import AllToAll, BadNets, Blend, WaNet
    from awm_fast.study import build_attack

    assert build_attack("badnets", 8, 10).size == 2 and build_attack("badnets", 28, 10).size == 3
    moved = build_attack("badnets:location=top-left,target=5,size=4", 8, 10)
    assert isinstance(moved, BadNets) and (moved.location, moved.target, moved.size) == ("top-left", 5, 4)
    assert build_attack("wanet", 8, 10).strength == 1.0 and build_attack("wanet:strength=0.7", 8, 10).strength == 0.7
    wrapped = build_attack("all-to-all:base=blend,ratio=0.3", 28, 10)
    assert isinstance(wrapped, AllToAll) and isinstance(wrapped.base, Blend) and wrapped.base.ratio == 0.3
    assert build_attack("all-to-all", 28, 7).num_classes == 7 and build_attack("all-to-all", 8, 7).base.size == 2
    assert isinstance(build_attack("wanet:target=3", 28, 10), WaNet)
    with pytest.raises(ValueError, match="colour"):
        build_attack("badnets:colour=1", 28, 10)
    with pytest.raises(ValueError, match="unknown attack 'laser'"):
        build_attack("laser:size=2", 28, 10)


def test_a_bad_attack_spec_fails_before_any_training(tmp_path):
    settings = StudySettings(attacks=("badnets", "blend:ration=0.1"), methods=("none",), out=str(tmp_path / "out"),
                             cache=str(tmp_path / "cache"), verbose=False)
    with pytest.raises(ValueError, match="ration"):
        run_study(settings)
    assert not (tmp_path / "cache").exists()


def test_tiny_digits_study_writes_csv_markdown_and_pngs(tmp_path):
    settings = StudySettings(datasets=("digits",), attacks=("badnets",), shots=(1,), seeds=(0,),
                             methods=("none", "awm-paper[outer=2,inner=1]", "ft[steps=2]", "anp[steps=2]"),
                             train_epochs=1, eval_limit=200, history_limit=50, out=str(tmp_path / "out"),
                             cache=str(tmp_path / "cache"), verbose=False)
    rows = run_study(settings)
    with open(tmp_path / "out" / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == len(rows) == 4
    for row in table:
        for column in ("acc_before", "asr_before", "acc_after", "asr_after"):
            assert 0.0 <= float(row[column]) <= 100.0
        assert float(row["seconds"]) >= 0 and int(row["n_clean"]) == 10
    assert table[0]["acc_after"] == table[0]["acc_before"]  # "none" is the backdoored model itself
    # How each AWM run ran: paper mode's 2 planned epochs, no residual check, no hunt to gate a feature pull;
    # nothing for the others.
    facts = [(row["epochs"], row["suspect_standout"], row["trigger_window_share"], row["feature_distill"])
             for row in table]
    assert facts == [("", "", "", ""), ("2", "", "", ""), ("", "", "", ""), ("", "", "", "")]
    # The never-poisoned reference: one per seed, the same figures on every row of that seed.
    assert len({(row["acc_clean_model"], row["asr_clean_model"]) for row in table}) == 1
    assert 0.0 <= float(table[0]["asr_clean_model"]) < float(table[0]["asr_before"])
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| digits | small-cnn | badnets | 1 | `awm-paper[outer=2,inner=1]` |" in markdown
    pngs = sorted(p.name for p in (tmp_path / "out" / "png").glob("*.png"))
    assert any(name.endswith("_trigger.png") for name in pngs)
    assert any(name.endswith("_history.png") for name in pngs)
    assert sum(name.endswith("_masks.png") for name in pngs) == 2  # AWM's weight masks, ANP's neuron masks
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # the backdoored model and the clean one
    # A rerun through the CLI entry point reuses the cached model.
    assert main(["--methods", "none", "--train-epochs", "1", "--eval-limit", "100", "--out", str(tmp_path / "o2"),
                 "--cache", str(tmp_path / "cache"), "--plots", "none", "--quiet"]) == 0
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_clean_reference_is_the_same_network_trained_without_poisoning(tmp_path):
    """asr_clean_model equals the attack's success rate on a model trained here, independently, on the unpoisoned
    images (same seed, same epochs); --no-clean-reference leaves the columns empty and trains nothing more."""
    import torch

    from awm_fast.attacks import train_backdoored
    from awm_fast.data import few_shot_subset, load_dataset, without_indices
    from awm_fast.metrics import attack_success_rate, clean_accuracy
    from awm_fast.models import build_model
    from awm_fast.study import build_attack

    settings = StudySettings(attacks=("blend",), methods=("none",), train_epochs=1, eval_limit=200, plots="none",
                             history_limit=0, out=str(tmp_path / "out"), cache=str(tmp_path / "cache"), verbose=False)
    (row,) = run_study(settings)
    split = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("small-cnn", split.x_train.shape[1], split.num_classes, split.x_train.shape[-1])
    attack = build_attack("blend", split.x_train.shape[-1], split.num_classes)
    train_backdoored(model, split.x_train, split.y_train, attack, rate=0.0, epochs=1, seed=0)
    model.eval()
    _, _, used = few_shot_subset(split.x_test, split.y_test, 1, seed=0)
    x_eval, y_eval = without_indices(split.x_test, split.y_test, used)
    x_eval, y_eval = x_eval[:200], y_eval[:200]
    assert row["acc_clean_model"] == round(100 * clean_accuracy(model, x_eval, y_eval), 2)
    assert row["asr_clean_model"] == round(100 * attack_success_rate(model, x_eval, y_eval, attack), 2)
    assert "| ASR clean model |" in (tmp_path / "out" / "results.md").read_text()

    (row,) = run_study(dataclasses.replace(settings, clean_reference=False, cache=str(tmp_path / "c2")))
    assert (row["acc_clean_model"], row["asr_clean_model"]) == ("", "")
    assert len(list((tmp_path / "c2").glob("*.pt"))) == 1


def test_an_awm_runs_facts_are_its_epochs_last_residual_ratio_and_feature_gate():
    from awm_fast.study import _run_facts

    history = [{"epoch": 1, "trigger_window_share": 0.7512, "feature_distill": 1.0},
               {"epoch": 2, "suspect_standout": 3.0}, {"epoch": 3, "suspect_standout": 0.12345}]
    assert _run_facts(history) == {"epochs": 3, "suspect_standout": 0.123, "trigger_window_share": 0.751,
                                   "feature_distill": 1.0}
    # no residual check ran, no hunt gated a pull
    assert _run_facts([{"epoch": 1}]) == {"epochs": 1, "suspect_standout": "", "trigger_window_share": "",
                                          "feature_distill": ""}
    empty = {"epochs": "", "suspect_standout": "", "trigger_window_share": "", "feature_distill": ""}
    assert _run_facts([]) == empty  # a baseline
