"""The per-position Gaussian reference: Ledoit–Wolf against scikit-learn, logp against scipy,
and its place in the pipeline (same scoring as the flows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.covariance import LedoitWolf

from bgad_lite import BGADError
from bgad_lite.gaussian import GaussianModel, fit_level, ledoit_wolf, level_logp


def test_ledoit_wolf_matches_scikit_learn_for_every_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 25, 10)) @ rng.normal(size=(10, 10))  # correlated, n = 25 > C = 10
    x[3] = rng.normal(size=(25, 10)) * 3.0  # an isotropic set: shrinkage near 1
    sigma, alpha = ledoit_wolf(torch.from_numpy(x))
    for b in range(4):
        ref = LedoitWolf().fit(x[b])
        np.testing.assert_allclose(sigma[b].numpy(), ref.covariance_, atol=1e-10)
        assert float(alpha[b]) == pytest.approx(ref.shrinkage_, abs=1e-10)
    assert float(alpha[3]) > float(alpha[:3].max())


def test_ledoit_wolf_keeps_few_samples_invertible():
    x = torch.randn(2, 8, 30, dtype=torch.float64)  # n = 8 samples of C = 30: S has rank ≤ 7
    sigma, alpha = ledoit_wolf(x)
    assert torch.all(alpha > 0)
    assert torch.all(torch.linalg.eigvalsh(sigma) > 0)


def test_level_logp_is_the_gaussian_density_per_dimension_at_each_position():
    rng = np.random.default_rng(1)
    feats = torch.from_numpy(rng.normal(size=(40, 6, 2, 3)) * 2 + 1).float()  # (N, C, H, W)
    level = fit_level(feats)
    test = feats[:5] + 0.5
    logp = level_logp(level, test)  # (5, H, W)
    assert logp.shape == (5, 2, 3)
    for h, w in [(0, 0), (1, 2), (0, 1)]:
        ref = LedoitWolf().fit(feats[:, :, h, w].double().numpy())
        expected = multivariate_normal(ref.location_, ref.covariance_).logpdf(test[:, :, h, w].double().numpy()) / 6
        np.testing.assert_allclose(logp[:, h, w].numpy(), expected, rtol=1e-5)


def test_a_shifted_fiber_is_less_likely_and_shapes_must_match():
    feats = torch.randn(30, 4, 3, 3)
    model = GaussianModel.fit([feats])
    probe = feats[:2].clone()
    probe[1, :, 1, 1] += 6.0  # one fiber far from its position's mean
    (logp,) = model.level_logps([probe])
    (before,) = model.level_logps([feats[:2]])
    assert logp[1, 1, 1] < before[1, 1, 1] - 1.0
    other = torch.ones(3, 3, dtype=torch.bool)
    other[1, 1] = False
    assert torch.equal(logp[1][other], before[1][other])  # the other positions are untouched
    with pytest.raises(BGADError, match="do not match"):
        model.level_logps([torch.randn(2, 4, 2, 2)])
    with pytest.raises(BGADError, match="levels"):
        model.level_logps([feats, feats])
    with pytest.raises(BGADError, match="2 samples"):
        fit_level(torch.randn(1, 4, 2, 2))


def test_unit_gaussian_hand_value():
    # Many samples of N(0, I): Σ ≈ I, μ ≈ 0, so logp(0) ≈ -½·log(2π) per dimension.
    feats = torch.randn(20000, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    logp = level_logp(fit_level(feats), torch.zeros(1, 3, 1, 1))
    assert float(logp) == pytest.approx(-0.5 * math.log(2 * math.pi), abs=0.02)
