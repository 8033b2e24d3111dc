"""The efficacy study runner writes a sane CSV, Markdown and PNGs on a tiny digits grid, and caches models."""

import csv

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
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| digits | small-cnn | badnets | 1 | `awm-paper[outer=2,inner=1]` |" in markdown
    pngs = sorted(p.name for p in (tmp_path / "out" / "png").glob("*.png"))
    assert any(name.endswith("_trigger.png") for name in pngs)
    assert any(name.endswith("_history.png") for name in pngs)
    assert sum(name.endswith("_masks.png") for name in pngs) == 2  # AWM's weight masks, ANP's neuron masks
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    # A rerun through the CLI entry point reuses the cached model.
    assert main(["--methods", "none", "--train-epochs", "1", "--eval-limit", "100", "--out", str(tmp_path / "o2"),
                 "--cache", str(tmp_path / "cache"), "--plots", "none", "--quiet"]) == 0
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
