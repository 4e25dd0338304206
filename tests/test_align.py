"""Aligning positions (bgad_lite.align): the shrinkage intensity against a direct
computation, the map's invariants at α = 1 and α = 0, and its use in prepare/evaluate."""

import dataclasses

import pytest
import torch

from bgad_lite import align
from bgad_lite.config import BGADError
from bgad_lite.gaussian import ledoit_wolf


def _direct_alpha(x: torch.Tensor) -> float:
    """Schäfer–Strimmer's α toward the pooled covariance, written with the full (B, n, C, C) tensor."""
    x = x.double()
    b, n, c = x.shape
    xc = x - x.mean(1, keepdim=True)
    w = xc[:, :, :, None] * xc[:, :, None, :]  # (B, n, C, C) w_kij
    s = w.sum(1) / (n - 1)
    var = n / (n - 1) ** 3 * ((w - w.mean(1, keepdim=True)) ** 2).sum(1)
    return float((var.sum() / ((s - s.mean(0)) ** 2).sum()).clamp(0, 1))


def test_alpha_matches_the_direct_formula_and_lies_in_0_1():
    torch.manual_seed(0)
    x = torch.randn(6, 12, 4) * torch.rand(6, 1, 4) * 2 + torch.randn(6, 1, 4)
    alpha, pooled = align.pooled_shrinkage(x)
    assert alpha == pytest.approx(_direct_alpha(x), rel=1e-9)
    assert 0.0 < alpha < 1.0
    xc = x.double() - x.double().mean(1, keepdim=True)
    torch.testing.assert_close(pooled, (xc.transpose(1, 2) @ xc / 11).mean(0))


def test_alpha_is_large_for_alike_positions_and_small_for_different_ones():
    torch.manual_seed(1)
    alike = torch.randn(200, 3, 4, 4)  # every position the same N(0, I)
    scale = torch.linspace(0.2, 5.0, 16).reshape(1, 1, 4, 4)
    different = torch.randn(200, 3, 4, 4) * scale + 3 * torch.randn(1, 3, 4, 4)  # each position its own
    assert align.fit_level(alike).alpha > 0.8
    assert align.fit_level(different).alpha < 0.05


def test_auto_aligns_only_the_levels_whose_positions_differ():
    torch.manual_seed(1)
    alike = torch.randn(200, 3, 4, 4)
    scale = torch.linspace(0.2, 5.0, 16).reshape(1, 1, 4, 4)
    different = torch.randn(200, 3, 4, 4) * scale + 3 * torch.randn(1, 3, 4, 4)
    kept, moved = align.fit([alike, different], mode="auto")
    assert not kept.active and kept.alpha >= align.AUTO_BELOW and kept.matrix is None
    assert align.apply_level(kept, alike) is alike  # left exactly as it is
    with pytest.raises(BGADError, match="do not match"):  # an inactive level still checks the shape
        align.apply_level(kept, torch.randn(2, 3, 3, 3))
    assert moved.active and moved.alpha < align.AUTO_BELOW
    on = align.fit_level(different, mode="on")
    torch.testing.assert_close(align.apply_level(moved, different), align.apply_level(on, different))
    # an imposed α decides too: below the cut the level is aligned even where positions look alike
    assert align.fit_level(alike, alpha=0.3, mode="auto").active
    assert not align.fit_level(alike, alpha=0.5, mode="auto").active
    with pytest.raises(BGADError, match="mode"):
        align.fit_level(alike, mode="off")


def test_auto_leaves_a_level_with_too_few_images_for_its_channels():
    """C > n/4: the per-position whitening would rest on a covariance of too few samples."""
    torch.manual_seed(3)
    scale = torch.linspace(0.2, 5.0, 4).reshape(1, 1, 2, 2)
    for n, c, active in ((40, 10, True), (39, 10, False)):  # C ≤ n/4 exactly at 40 images
        different = torch.randn(n, c, 2, 2) * scale + 3 * torch.randn(1, c, 2, 2)
        level = align.fit_level(different, mode="auto")
        assert level.alpha < align.AUTO_BELOW and level.active is active
        assert align.fit_level(different, mode="on").active  # "on" aligns it anyway


def test_config_modes():
    from bgad_lite import BGADConfig

    assert BGADConfig().align_positions == "auto"
    with pytest.raises(BGADError, match="align_positions must be one of"):
        BGADConfig(align_positions="yes")


def test_alpha_one_is_the_identity():
    torch.manual_seed(2)
    f = torch.randn(20, 3, 2, 5) * 2 + 1
    level = align.fit_level(f, alpha=1.0)
    torch.testing.assert_close(align.apply_level(level, f), f, rtol=1e-5, atol=1e-5)


def test_alpha_zero_moves_every_position_onto_the_pooled_gaussian():
    """At α = 0 each position's aligned fibers have mean μ̄ and covariance L̄ L⁻¹ S L⁻ᵀ L̄ᵀ, with
    L Lᵀ the position's Ledoit–Wolf covariance: the pooled one up to the shrinkage."""
    torch.manual_seed(3)
    n, c = 400, 3
    f = torch.randn(n, c, 2, 2) * torch.tensor([0.5, 2.0, 4.0, 1.0]).reshape(1, 1, 2, 2) + torch.randn(1, c, 2, 2) * 5
    level = align.fit_level(f, alpha=0.0)
    y = align.apply_level(level, f).double()
    x = f.double().permute(2, 3, 0, 1).reshape(4, n, c)
    means = y.mean(0).permute(1, 2, 0).reshape(4, c)  # (positions, C)
    torch.testing.assert_close(means, level.mean.expand(4, c), rtol=0, atol=1e-4)
    lw, _ = ledoit_wolf(x)
    _, pooled = align.pooled_shrinkage(x)
    yp = y.permute(2, 3, 0, 1).reshape(4, n, c)
    yc = yp - yp.mean(1, keepdim=True)
    cov = yc.transpose(1, 2) @ yc / n  # (positions, C, C), the ML estimate as in ledoit_wolf
    l_bar, l_pos = torch.linalg.cholesky(pooled), torch.linalg.cholesky(lw)
    s = (x - x.mean(1, keepdim=True)).transpose(1, 2) @ (x - x.mean(1, keepdim=True)) / n
    expect = l_bar @ torch.linalg.solve(l_pos, torch.linalg.solve(l_pos, s).transpose(1, 2)) @ l_bar.T
    torch.testing.assert_close(cov, expect, rtol=1e-6, atol=1e-6)
    # the spread of the per-position scales (0.5 to 4) is gone: every position near the pooled variances
    before = s.diagonal(dim1=1, dim2=2) / pooled.diagonal()
    ratio = cov.diagonal(dim1=1, dim2=2) / pooled.diagonal()
    assert float(before.max() / before.min()) > 50
    assert float(ratio.min()) > 0.8 and float(ratio.max()) < 1.25


def test_bad_input_is_named():
    level = align.fit_level(torch.randn(10, 3, 2, 2))
    with pytest.raises(BGADError, match="do not match"):
        align.apply_level(level, torch.randn(1, 3, 3, 3))
    with pytest.raises(BGADError, match="alpha must lie"):
        align.fit_level(torch.randn(10, 3, 2, 2), alpha=1.5)
    with pytest.raises(BGADError, match="2 training images"):
        align.fit_level(torch.randn(1, 3, 2, 2))
    with pytest.raises(BGADError, match="feature levels"):
        align.apply([level], [torch.randn(1, 3, 2, 2)] * 2)


def test_prepare_aligns_the_flows_features_and_keeps_the_backbones_for_the_gaussian(tiny_root, tmp_path):
    from bgad_lite import BGADConfig, pipeline
    from bgad_lite.gaussian import GaussianModel

    tiny_cfg = BGADConfig(data_dir=str(tiny_root), category="brick", image_size=64, n_anomalies=2, n_cutpaste=2,
                          cache_dir=str(tmp_path / "cache"), align_positions="off")

    plain = pipeline.prepare(tiny_cfg, progress=False)
    aligned = pipeline.prepare(dataclasses.replace(tiny_cfg, align_positions="on"), progress=False)
    assert plain.alignment is None and plain.raw_features("test") is plain.test_features
    assert len(aligned.alignment) == len(plain.train_features)
    for part in ("train", "anomaly", "test"):
        for raw, flows_see, a in zip(plain.raw_features(part), getattr(aligned, f"{part}_features"), aligned.alignment):
            assert aligned.raw_features(part)[0].shape == plain.raw_features(part)[0].shape
            torch.testing.assert_close(flows_see, align.apply_level(a, raw))
    torch.testing.assert_close(aligned.raw_features("train")[0], plain.train_features[0])
    # the Gaussian reference is the same model whether or not the flows see aligned features
    g_plain = pipeline.evaluate(GaussianModel.fit(plain.raw_features("train")), plain)["scores"]
    g_aligned = pipeline.evaluate(GaussianModel.fit(aligned.raw_features("train")), aligned)["scores"]
    torch.testing.assert_close(torch.as_tensor(g_aligned), torch.as_tensor(g_plain))


@pytest.mark.slow
def test_a_run_with_aligned_positions_trains_and_leaves_the_gaussian_alone(tiny_root, tmp_path):
    import numpy as np

    from bgad_lite import BGADConfig, pipeline

    base = dict(data_dir=str(tiny_root), category="brick", image_size=64, n_anomalies=2, n_cutpaste=2,
                epochs_phase1=2, epochs_phase2=1, n_blocks=2, cond_dim=16, cache_dir=str(tmp_path / "cache"))
    variants = ("gaussian", "bgad")
    plain = pipeline.run(BGADConfig(**base, align_positions="off", out_dir=str(tmp_path / "plain")), progress=False,
                         variants=variants)
    aligned = pipeline.run(BGADConfig(**base, align_positions="on", out_dir=str(tmp_path / "aligned")), progress=False,
                           variants=variants)
    assert aligned["results"]["gaussian"] == plain["results"]["gaussian"]
    a, p = aligned["results"]["bgad"]["all"], plain["results"]["bgad"]["all"]
    assert all(np.isfinite(v) for v in a.values())
    assert a != p  # the flows saw other features
    alphas = aligned["data"]["align_alpha"]
    assert len(alphas) == 3 and all(0.0 <= x <= 1.0 for x in alphas) and "align_alpha" not in plain["data"]
    assert aligned["data"]["aligned_levels"] == [True, True, True]
    # the checkpoint carries the map its flows expect: applied to the backbone's features, it gives theirs
    from bgad_lite.checkpoint import load_checkpoint

    prep = pipeline.prepare(BGADConfig(**base, align_positions="on"), progress=False)
    _, _, payload = load_checkpoint(tmp_path / "aligned" / "checkpoints" / "bgad")
    assert [a.alpha for a in payload["alignment"]] == [a.alpha for a in prep.alignment]
    for saved, raw, flows_see in zip(payload["alignment"], prep.raw_features("test"), prep.test_features):
        torch.testing.assert_close(align.apply_level(saved, raw), flows_see)
    assert load_checkpoint(tmp_path / "plain" / "checkpoints" / "bgad")[2]["alignment"] is None
