"""Tests for bgad_lite.compute_boundaries: b_n = sorted(normal logp)[floor(beta * N_normal)] / N, b_a = b_n - tau."""

from __future__ import annotations

import math

import pytest
import torch

from bgad_lite import BGADError, compute_boundaries


def _perm(values: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return values[torch.randperm(len(values), generator=g)]


def test_hand_case_arange_200():
    # 200 normal logps 0..199 (shuffled), beta = 0.01 -> index floor(0.01 * 200) = 2 -> logp 2 -> b_n = 2 / 10
    logp = _perm(torch.arange(200, dtype=torch.float32))
    b_n, b_a = compute_boundaries(logp, torch.zeros(200, dtype=torch.bool), beta=0.01, tau=0.1, normalizer=10.0)
    assert b_n.item() == pytest.approx(0.2, abs=1e-7)
    assert b_a.item() == pytest.approx(0.1, abs=1e-7)


@pytest.mark.parametrize("beta, n, idx", [(0.05, 200, 10), (0.01, 99, 0), (0.5, 7, 3), (0.999, 10, 9), (0.3, 10, 3)])
def test_index_is_floor_of_beta_times_n_normal(beta, n, idx):
    # values -100 * k (k = 0..n-1), reversed order; sorted ascending the value at idx is -100 * (n - 1 - idx)
    logp = _perm(-100.0 * torch.arange(n, dtype=torch.float32), seed=n)
    b_n, _ = compute_boundaries(logp, torch.zeros(n, dtype=torch.bool), beta=beta, tau=0.5, normalizer=4.0)
    assert b_n.item() == pytest.approx(-100.0 * (n - 1 - idx) / 4.0, abs=1e-5)


def test_anomalies_never_move_b_n():
    normal = _perm(torch.arange(200, dtype=torch.float32) - 50.0)
    is_a = torch.zeros(200, dtype=torch.bool)
    ref_n, ref_a = compute_boundaries(normal, is_a, 0.05, 0.1, 10.0)
    g = torch.Generator().manual_seed(1)
    for anomalies in (torch.full((30,), -1e6), torch.full((30,), 1e6), 1000 * torch.randn(30, generator=g),
                      torch.linspace(-60, 160, 500)):
        logp = torch.cat([anomalies[: len(anomalies) // 2], normal, anomalies[len(anomalies) // 2:]])
        mask = torch.cat([torch.ones(len(anomalies) // 2, dtype=torch.bool), is_a,
                          torch.ones(len(anomalies) - len(anomalies) // 2, dtype=torch.bool)])
        b_n, b_a = compute_boundaries(logp, mask, 0.05, 0.1, 10.0)
        assert b_n.item() == ref_n.item()
        assert b_a.item() == ref_a.item()


@pytest.mark.parametrize("tau", [0.1, 0.25, 3.0])
def test_b_a_is_b_n_minus_tau(tau):
    logp = torch.randn(57, generator=torch.Generator().manual_seed(3)) * 20
    mask = torch.zeros(57, dtype=torch.bool)
    mask[::5] = True
    b_n, b_a = compute_boundaries(logp, mask, 0.02, tau, 10.0)
    assert b_a.item() == (b_n - tau).item()
    assert b_n.item() - b_a.item() == pytest.approx(tau, abs=1e-6)


def test_boundaries_are_detached_scalars():
    logp = torch.randn(20, requires_grad=True)
    b_n, b_a = compute_boundaries(logp, torch.zeros(20, dtype=torch.bool), 0.1, 0.1, 10.0)
    assert b_n.dim() == 0 and b_a.dim() == 0
    assert not b_n.requires_grad and not b_a.requires_grad


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5])
def test_bad_beta_raises(beta):
    with pytest.raises(BGADError, match="beta"):
        compute_boundaries(torch.arange(10.0), torch.zeros(10, dtype=torch.bool), beta, 0.1, 10.0)


@pytest.mark.parametrize("tau", [0.0, -0.1, math.nan])
def test_bad_tau_raises(tau):
    with pytest.raises(BGADError, match="tau"):
        compute_boundaries(torch.arange(10.0), torch.zeros(10, dtype=torch.bool), 0.05, tau, 10.0)


def test_all_anomalous_raises():
    with pytest.raises(BGADError):
        compute_boundaries(torch.arange(10.0), torch.ones(10, dtype=torch.bool), 0.05, 0.1, 10.0)
    with pytest.raises(BGADError):
        compute_boundaries(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 0.05, 0.1, 10.0)


def test_index_floor_is_exact_for_decimal_beta():
    n = 100
    logp = torch.arange(n, dtype=torch.float32)
    b_n, _ = compute_boundaries(logp, torch.zeros(n, dtype=torch.bool), beta=0.29, tau=0.1, normalizer=1.0)
    assert b_n.item() == 29.0


def test_no_mask_means_every_entry_is_normal_and_defaults_are_the_papers():
    logp = torch.linspace(-30.0, 10.0, 300)
    with_mask = compute_boundaries(logp, torch.zeros(300, dtype=torch.bool), 0.01, 0.1, 10.0)
    assert compute_boundaries(logp) == with_mask  # β = 0.01, τ = 0.1, N = 10
    assert compute_boundaries(logp, None, 0.2, 0.5, 1.0) == compute_boundaries(
        logp, torch.zeros(300, dtype=torch.bool), 0.2, 0.5, 1.0)
    # index ⌊0.01 · 300⌋ = 3 of the sorted values, divided by N
    assert float(with_mask[0]) == pytest.approx(float(logp[3]) / 10.0)
