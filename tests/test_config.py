"""AWMConfig: the authors' defaults, validation, and resolution from the mode and the data."""

import dataclasses

import pytest

from awm_fast import AWMConfig

ISSUE_FIELDS = {"mode", "backend", "precision", "device", "seed", "outer", "inner", "batch_size", "alpha", "gamma",
                "trigger_norm", "lr_trigger", "lr_mask", "lr_decay", "shrink_steps", "mask_layers", "input_bounds",
                "one_shot_augment", "inplace", "num_triggers"}


def test_every_documented_field_exists_with_the_authors_defaults():
    config = AWMConfig()
    assert ISSUE_FIELDS <= {f.name for f in dataclasses.fields(config)}
    # jinghuichen/AWM main.py: --outer 20 --inner 5 --batch-size 128 --alpha 0.9 --gamma 1e-8 --lr2 1e-2,
    # SGD lr 10 on the trigger, ExponentialLR(0.9), --shrink-steps 0.
    assert (config.outer, config.inner, config.batch_size) == (20, 5, 128)
    assert (config.alpha, config.gamma, config.lr_trigger, config.lr_mask) == (0.9, 1e-8, 10.0, 1e-2)
    assert (config.lr_decay, config.shrink_steps, config.num_triggers) == (0.9, 0, 1)
    assert config.mode == "improved"  # the issue's better-than-paper default; mode="paper" is the authors' procedure


@pytest.mark.parametrize("numel, expected", [(3 * 32 * 32, 1000.0), (1 * 8 * 8, 1000.0 * 64 / 3072),
                                             (3 * 224 * 224, 1000.0 * 49)])
def test_default_trigger_norm_keeps_the_papers_per_element_budget(numel, expected):
    assert AWMConfig().resolve(numel, 100).trigger_norm == pytest.approx(expected)
    assert AWMConfig(trigger_norm=5.0).resolve(numel, 100).trigger_norm == 5.0


def test_steps_follow_the_authors_formula_with_a_zero_guard():
    assert AWMConfig().resolve(64, 100).steps == 5          # 100 // 128 = 0 -> guarded to 1 epoch's worth
    assert AWMConfig().resolve(64, 500).steps == 3 * 5      # 500 // 128 = 3
    assert AWMConfig(steps=7).resolve(64, 500).steps == 7


def test_paper_and_improved_modes_resolve_differently():
    paper = AWMConfig(mode="paper").resolve(64, 100)
    assert (paper.mask_layers, paper.projection, paper.clamp_ascent, paper.clean_loss) == (
        "conv", "rescale", False, "ce")
    assert (paper.distill_weight, paper.select_epoch, paper.steps) == (0.0, False, 5)
    assert (paper.trigger_search, paper.one_shot_filter, paper.augment_beyond_one_shot) == ("untargeted", False, False)
    # docs/EFFICACY.md: the paper's objective and mask step, CE + 0.1·KL to the original model (round 2), the
    # targeted trigger search on label-consistent copies (rounds 6-7), copies at every shot count (round 8).
    improved = AWMConfig().resolve(64, 100)
    assert (improved.mask_layers, improved.projection, improved.clamp_ascent, improved.clean_loss) == (
        "conv", "rescale", False, "ce")
    assert (improved.distill_weight, improved.select_epoch, improved.steps) == (0.1, False, 5)
    assert (improved.trigger_search, improved.one_shot_filter, improved.augment_beyond_one_shot) == (
        "targeted", True, True)
    # a model without a Conv2d gets Linear masks in either mode, since "conv" would select nothing
    assert AWMConfig().resolve(64, 100, has_conv=False).mask_layers == "linear"
    assert AWMConfig(mode="paper").resolve(64, 100, has_conv=False).mask_layers == "linear"
    assert AWMConfig(mask_layers="conv+linear").resolve(64, 100, has_conv=False).mask_layers == "conv+linear"
    # every improved-mode default stays overridable
    custom = AWMConfig(mode="improved", distill_weight=0.0, select_epoch=True, projection="exact",
                       clamp_ascent=True, clean_loss="distill", mask_layers="conv+linear", steps=15,
                       trigger_search="untargeted", one_shot_filter=False,
                       augment_beyond_one_shot=False).resolve(64, 100)
    assert (custom.distill_weight, custom.select_epoch, custom.projection, custom.clamp_ascent, custom.clean_loss,
            custom.mask_layers, custom.steps) == (0.0, True, "exact", True, "distill", "conv+linear", 15)
    assert (custom.trigger_search, custom.one_shot_filter, custom.augment_beyond_one_shot) == (
        "untargeted", False, False)


def test_several_triggers_in_improved_mode_ask_for_the_untargeted_search():
    with pytest.raises(ValueError, match="mode='improved' implies it; pass trigger_search='untargeted'"):
        AWMConfig(num_triggers=2).validate()
    assert AWMConfig(num_triggers=2, trigger_search="untargeted").resolve(64, 100).num_triggers == 2


def test_replace_rejects_unknown_names_and_keeps_the_original():
    config = AWMConfig()
    with pytest.raises(TypeError, match="unknown AWMConfig option.*'typo'"):
        config.replace(typo=1)
    assert config.replace(outer=3).outer == 3 and config.outer == 20


@pytest.mark.parametrize("field, value", [("seed", -1), ("batch_size", 0), ("inner", 1.5), ("gamma", -1.0),
                                          ("lr_mask", 0.0), ("lr_decay", 1.5), ("input_bounds", (1.0, 0.0)),
                                          ("input_bounds", 3), ("projection", "l2"), ("clean_loss", "mse"),
                                          ("distill_weight", -0.1), ("distill_weight", float("inf"))])
def test_invalid_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        AWMConfig(**{field: value}).validate()
