"""Improved mode's additions: the CE + λ·KL clean term, label-free selection of the outer epoch, and sparse triggers
recovered beside the paper's dense one (docs/EFFICACY.md, rounds 2-3)."""

import pytest
import torch

import awm_fast
from awm_fast import AWMConfig

from tiny_models import tiny_cnn, tiny_data

FAST = dict(outer=3, inner=1, batch_size=8, backend="torch")
PAPER = dict(FAST, mode="paper")


def _probe(x):
    """An eval_fn fingerprinting the masked model: its logits on the purification images."""
    def eval_fn(model):
        with torch.no_grad():
            return {"logit_sum": float(model(x).double().sum())}
    return eval_fn


def test_distill_weight_is_validated_and_resolved():
    with pytest.raises(ValueError, match="distill_weight"):
        AWMConfig(distill_weight=-1.0).validate()
    with pytest.raises(ValueError, match="distill_weight"):
        AWMConfig(distill_weight=float("nan")).validate()
    paper = AWMConfig(mode="paper").resolve(64, 100)
    assert (paper.distill_weight, paper.select_epoch) == (0.0, False)
    assert AWMConfig(mode="improved", distill_weight=0.25).resolve(64, 100).distill_weight == 0.25
    assert AWMConfig(select_epoch=True).resolve(64, 100).select_epoch is True


def test_distill_weight_changes_the_ce_clean_term_and_zero_is_plain_ce():
    model, (x, y) = tiny_cnn(), tiny_data()
    plain = awm_fast.purify(model, (x, y), **PAPER)
    zero = awm_fast.purify(model, (x, y), distill_weight=0.0, **PAPER)
    mixed = awm_fast.purify(model, (x, y), distill_weight=2.0, **PAPER)
    for name, mask in plain.masks.items():
        assert torch.equal(mask, zero.masks[name]), name
    assert any(not torch.equal(mask, mixed.masks[name]) for name, mask in plain.masks.items())
    # clean_loss="distill" is KL alone: distill_weight does not apply to it
    kl = awm_fast.purify(model, (x, y), clean_loss="distill", **dict(PAPER, outer=1))
    kl_weighted = awm_fast.purify(model, (x, y), clean_loss="distill", distill_weight=3.0, **dict(PAPER, outer=1))
    for name, mask in kl.masks.items():
        assert torch.equal(mask, kl_weighted.masks[name]), name


def test_distill_correct_only_drops_the_kl_exactly_where_the_original_model_is_wrong():
    model, (x, y) = tiny_cnn(), tiny_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(60):  # fit the eight images, so that the original model labels them y
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).argmax(dim=1), y)
    distilled = dict(PAPER, distill_weight=2.0)

    def masks(labels, **options):
        return awm_fast.purify(model, (x, labels), **options).masks

    # Labels the original model gets right everywhere: every image is distilled either way.
    right_only, everywhere = masks(y, **distilled), masks(y, distill_correct_only=False, **distilled)
    for name, mask in right_only.items():
        assert torch.equal(mask, everywhere[name]), name
    plain = masks(y, **dict(distilled, distill_weight=0.0))
    assert any(not torch.equal(mask, plain[name]) for name, mask in right_only.items())
    # Labels it gets wrong everywhere: no image is distilled, so the clean term is plain CE (λ = 0) ...
    wrong = (y + 1) % 4
    right_only, plain = masks(wrong, **distilled), masks(wrong, **dict(distilled, distill_weight=0.0))
    for name, mask in right_only.items():
        assert torch.equal(mask, plain[name]), name
    # ... while distilling every image still changes the masks.
    everywhere = masks(wrong, distill_correct_only=False, **distilled)
    assert any(not torch.equal(mask, everywhere[name]) for name, mask in plain.items())
    with pytest.raises(ValueError, match="distill_correct_only"):
        AWMConfig(distill_correct_only=1).validate()


@pytest.mark.parametrize("mode", ["paper", "improved"])
def test_select_epoch_returns_the_masks_of_the_epoch_it_marks(mode):
    model, (x, y) = tiny_cnn(), tiny_data()
    result = awm_fast.purify(model, (x, y), mode=mode, select_epoch=True, eval_fn=_probe(x), **FAST)
    selected = [record for record in result.history if record["selected"] == 1.0]
    assert len(selected) == 1 and len(result.history) == FAST["outer"]
    assert all("select_score" in record and 0.0 <= record["select_flip"] <= 1.0 for record in result.history)
    best = min(record["select_score"] for record in result.history)
    assert selected[0]["select_score"] == best
    assert max(r["epoch"] for r in result.history if r["select_score"] == best) == selected[0]["epoch"]
    with torch.no_grad():
        final = float(result.model(x).double().sum())
    assert final == pytest.approx(selected[0]["logit_sum"], rel=1e-5, abs=1e-5)


def test_improved_mode_uses_the_mixed_clean_term_and_differs_from_paper():
    model, (x, y) = tiny_cnn(), tiny_data()
    paper = awm_fast.purify(model, (x, y), **PAPER)
    improved = awm_fast.purify(model, (x, y), **FAST)  # the default mode
    assert improved.config.distill_weight == 0.1 and improved.config.clean_loss == "ce"
    assert set(improved.masks) == set(paper.masks)
    assert any(not torch.equal(mask, improved.masks[name]) for name, mask in paper.masks.items())


@pytest.mark.parametrize("options", [dict(sparse_triggers=-1), dict(sparse_triggers=1.0), dict(sparse_triggers=True),
                                     dict(sparse_triggers=2), dict(num_triggers=3, sparse_triggers=4)])
def test_sparse_triggers_is_validated(options):
    with pytest.raises(ValueError, match="sparse_triggers"):
        AWMConfig(**options).validate()
    assert AWMConfig().sparse_triggers == 0
    assert AWMConfig(mode="paper", num_triggers=2, sparse_triggers=2).validate().sparse_triggers == 2


def test_sparse_triggers_need_a_fast_backend():
    model, (x, y) = tiny_cnn(), tiny_data()
    with pytest.raises(ValueError, match="sparse_triggers=1 needs a fast backend"):
        awm_fast.purify(model, (x, y), mode="paper", num_triggers=2, sparse_triggers=1, outer=1, inner=1,
                        batch_size=8, backend="reference")


@pytest.mark.parametrize("mode", ["paper", "improved"])
def test_dense_and_sparse_triggers_are_each_recovered_as_their_own_kind(mode):
    # One outer epoch returns the triggers recovered against the unmasked model, so each kind can be compared
    # with a run that recovers that kind alone: trigger 0 with this mode's own recovery, trigger 1 with exact
    # per-step projection and the clamp, and both with the eager reference path.
    model, (x, y) = tiny_cnn(), tiny_data()
    # The same data in every run: no augmented copies (improved mode would add them at two images per class).
    options = dict(mode=mode, trigger_search="untargeted", outer=1, inner=5, batch_size=8, trigger_norm=1.0,
                   augment_beyond_one_shot=False)
    mixed = awm_fast.purify(model, (x, y), num_triggers=2, sparse_triggers=1, backend="torch", **options)
    dense, sparse = mixed.trigger.flatten(1)
    assert mixed.trigger.shape == (2, *x.shape[1:])
    assert dense.abs().sum().item() == pytest.approx(1.0, rel=1e-5) and int((dense == 0).sum()) == 0
    assert sparse.abs().sum().item() <= 1.0 + 1e-5 and int((sparse == 0).sum()) >= sparse.numel() // 4
    patch = dict(options, mode="improved", projection="exact", clamp_ascent=True)
    # 1e-6 on both paths: the batched run's forwards hold twice the images, and CPU kernels need not round a batch
    # of 2N as they round N (on AVX-512 machines the sparse trigger differs by up to 7e-9 after five steps).
    for backend, atol in (("torch", 1e-6), ("reference", 1e-6)):
        alone = awm_fast.purify(model, (x, y), backend=backend, **options).trigger.flatten()
        torch.testing.assert_close(dense, alone, rtol=0, atol=atol)
        alone = awm_fast.purify(model, (x, y), backend=backend, **patch).trigger.flatten()
        torch.testing.assert_close(sparse, alone, rtol=0, atol=atol)


def test_sparse_triggers_change_the_masks_and_are_deterministic():
    model, (x, y) = tiny_cnn(), tiny_data()
    options = dict(mode="paper", outer=2, inner=3, batch_size=8, backend="torch", trigger_norm=1.0)
    dense_only = awm_fast.purify(model, (x, y), num_triggers=3, **options)
    runs = [awm_fast.purify(model, (x, y), num_triggers=3, sparse_triggers=1, **options) for _ in range(2)]
    assert torch.equal(runs[0].trigger, runs[1].trigger)
    for name, mask in runs[0].masks.items():
        assert torch.equal(mask, runs[1].masks[name]), name
    assert any(not torch.equal(mask, dense_only.masks[name]) for name, mask in runs[0].masks.items())
    # K=3, S=1: trigger 0 (zero start) and the random restart 1 are dense, trigger 2 is the sparse one
    norms = runs[0].trigger.flatten(1).abs().sum(1)
    zeros = (runs[0].trigger.flatten(1) == 0).sum(1)
    assert norms[:2].tolist() == pytest.approx([1.0, 1.0], rel=1e-5) and zeros[:2].tolist() == [0, 0]
    assert norms[2] <= 1.0 + 1e-5 and zeros[2] >= x[0].numel() // 4
