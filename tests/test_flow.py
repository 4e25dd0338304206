"""Tests for bgad_lite.flow: positional encoding, the conditional flow, log-likelihood, fibers, mask downsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from bgad_lite import BGADError, build_flow, log_likelihood, positional_encoding_2d
from bgad_lite.flow import Standardized, fiber_labels, to_fibers


# ---------------------------------------------------------------- positional encoding
def _omega(k: int, dim: int) -> float:
    return 10000.0 ** (-2.0 * k / (dim / 2))


def test_positional_encoding_shape_and_axes():
    dim, h, w = 16, 5, 7
    pe = positional_encoding_2d(dim, h, w)
    assert pe.shape == (dim, h, w)
    half = dim // 2
    # x channels vary with the column only, y channels with the row only
    for ch in range(half):
        assert torch.equal(pe[ch], pe[ch, :1].expand(h, w)), ch
    for ch in range(half, dim):
        assert torch.equal(pe[ch], pe[ch, :, :1].expand(h, w)), ch
    # channel 0 = sin(x * 1), channel 1 = cos(x * 1), channel half = sin(y * 1)
    for x in range(w):
        assert pe[0, 0, x].item() == pytest.approx(math.sin(x), abs=1e-6)
        assert pe[1, 0, x].item() == pytest.approx(math.cos(x), abs=1e-6)
    for y in range(h):
        assert pe[half, y, 0].item() == pytest.approx(math.sin(y), abs=1e-6)
        assert pe[half + 1, y, 0].item() == pytest.approx(math.cos(y), abs=1e-6)


@pytest.mark.parametrize("dim", [8, 16, 64])
def test_positional_encoding_exact_values(dim):
    h, w = 9, 11
    pe = positional_encoding_2d(dim, h, w)
    half = dim // 2
    for (y, x) in [(0, 0), (3, 10), (8, 1), (5, 5)]:
        for k in range(dim // 4):
            om = _omega(k, dim)
            assert pe[2 * k, y, x].item() == pytest.approx(math.sin(x * om), abs=1e-5)
            assert pe[2 * k + 1, y, x].item() == pytest.approx(math.cos(x * om), abs=1e-5)
            assert pe[half + 2 * k, y, x].item() == pytest.approx(math.sin(y * om), abs=1e-5)
            assert pe[half + 2 * k + 1, y, x].item() == pytest.approx(math.cos(y * om), abs=1e-5)
    # a hand number: dim 8 -> omega_1 = 10000^(-2/4) = 0.01 -> channel 2 at x = 10 is sin(0.1)
    if dim == 8:
        assert pe[2, 0, 10].item() == pytest.approx(math.sin(0.1), abs=1e-7)
        assert pe[7, 8, 0].item() == pytest.approx(math.cos(0.08), abs=1e-7)


@pytest.mark.parametrize("dim", [2, 6, 10, 130])
def test_positional_encoding_dim_not_multiple_of_4_raises(dim):
    with pytest.raises(BGADError):
        positional_encoding_2d(dim, 4, 4)


# ---------------------------------------------------------------- the flow
C, P = 6, 4


def _perturbed_flow(seed: int = 0, scale: float = 0.4):
    """A flow whose subnets and global affines are moved away from their initial values, so the couplings
    do real work (the permutation matrices are left alone: w_perm_inv must stay the inverse of w_perm)."""
    torch.manual_seed(123)
    flow = build_flow(C, P, 2, clamp=1.9, seed=seed)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if "perm" not in name:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return flow.eval()


def test_flow_is_invertible_with_condition():
    flow = _perturbed_flow()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, C, generator=g)
    c = torch.randn(32, P, generator=g)
    with torch.no_grad():
        z, ljd = flow(x, c=[c])
        x_rec, ljd_rev = flow(z, c=[c], rev=True)
    assert z.shape == (32, C) and ljd.shape == (32,)
    assert not torch.allclose(z, x, atol=1e-2)  # the flow is not the identity
    torch.testing.assert_close(x_rec, x, atol=1e-4, rtol=0)
    # reverse log-det is the negative of the forward one
    torch.testing.assert_close(ljd_rev, -ljd, atol=1e-4, rtol=0)


def test_condition_changes_the_output():
    flow = _perturbed_flow()
    x = torch.randn(4, C, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z1, _ = flow(x, c=[torch.zeros(4, P)])
        z2, _ = flow(x, c=[torch.ones(4, P)])
    assert not torch.allclose(z1, z2, atol=1e-3)


@pytest.mark.parametrize("sample_seed", [0, 1, 2])
def test_log_det_matches_numerical_jacobian(sample_seed):
    flow = _perturbed_flow()
    g = torch.Generator().manual_seed(sample_seed)
    x = torch.randn(1, C, generator=g)
    c = torch.randn(1, P, generator=g)
    with torch.no_grad():
        _, ljd = flow(x, c=[c])
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, C), c=[c])[0].view(C), x.view(C))
    sign, logabsdet = torch.linalg.slogdet(jac.double())
    assert sign.item() != 0
    assert abs(logabsdet.item()) > 1e-2  # a non-trivial volume change, so the check can fail
    assert ljd.item() == pytest.approx(logabsdet.item(), abs=1e-4)


def test_same_seed_same_permutation_and_numpy_state_untouched():
    np.random.seed(2024)
    before = np.random.get_state()
    a = build_flow(C, P, 2, seed=5)
    after = np.random.get_state()
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    b = build_flow(C, P, 2, seed=5)
    other = build_flow(C, P, 2, seed=6)
    sa, sb, so = a.state_dict(), b.state_dict(), other.state_dict()
    perm_keys = [k for k in sa if "w_perm" in k]
    assert perm_keys
    for k in perm_keys:
        assert torch.equal(sa[k], sb[k]), k
    assert any(not torch.equal(sa[k], so[k]) for k in perm_keys)  # the seed matters


def test_same_seed_identical_weights_and_outputs():
    torch.manual_seed(0)
    a = build_flow(C, P, 2, seed=3)
    b = build_flow(C, P, 2, seed=3)  # torch's RNG has moved on in between
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    x = torch.randn(5, C)
    c = torch.randn(5, P)
    with torch.no_grad():
        assert torch.equal(a(x, c=[c])[0], b(x, c=[c])[0])


def test_build_flow_leaves_torch_rng_untouched():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    build_flow(C, P, 2, seed=3)
    assert torch.equal(before, torch.get_rng_state())


# ---------------------------------------------------------------- log-likelihood
def test_log_likelihood_hand_formula():
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 2.0]], dtype=torch.float64)
    ljd = torch.tensor([0.5, -1.5], dtype=torch.float64)
    # row 0: (-3/2 log 2pi - 0 + 0.5) / 3 ; row 1: ||z||^2 = 9 -> (-3/2 log 2pi - 4.5 - 1.5) / 3
    expected = [(-1.5 * math.log(2 * math.pi) + 0.5) / 3, (-1.5 * math.log(2 * math.pi) - 4.5 - 1.5) / 3]
    out = log_likelihood(z, ljd)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx(expected, abs=1e-12)


def test_log_likelihood_equals_scipy_gaussian_per_dim():
    c = 7
    z = torch.randn(10, c, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = log_likelihood(z, torch.zeros(10, dtype=torch.float64))
    ref = multivariate_normal(mean=np.zeros(c), cov=np.eye(c)).logpdf(z.numpy()) / c
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-10)
    # the log-det adds ljd / C
    out2 = log_likelihood(z, torch.full((10,), 3.5, dtype=torch.float64))
    np.testing.assert_allclose(out2.numpy(), ref + 3.5 / c, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- fibers
def test_to_fibers_index_layout():
    n, ch, h, w, p = 3, 4, 5, 6, 8
    nn_, cc, hh, ww = torch.meshgrid(torch.arange(n), torch.arange(ch), torch.arange(h), torch.arange(w), indexing="ij")
    features = (1000 * nn_ + 100 * cc + 10 * hh + ww).float()  # value encodes (n, c, h, w)
    pp, ph, pw = torch.meshgrid(torch.arange(p), torch.arange(h), torch.arange(w), indexing="ij")
    pos = (100 * pp + 10 * ph + pw).float()  # value encodes (p, h, w)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    masks[1, 2, 3] = True
    masks[2, 4, 0] = True
    x, cond, m = to_fibers(features, pos, masks)
    assert x.shape == (n * h * w, ch) and cond.shape == (n * h * w, p) and m.shape == (n * h * w,)
    for i in range(n * h * w):
        img, row, col = i // (h * w), (i % (h * w)) // w, i % w
        assert x[i].tolist() == [1000 * img + 100 * k + 10 * row + col for k in range(ch)], i
        assert cond[i].tolist() == [100 * k + 10 * row + col for k in range(p)], i
        assert bool(m[i]) == bool(masks[img, row, col]), i
    assert m.sum().item() == 2
    _, _, m0 = to_fibers(features, pos)
    assert m0.dtype == torch.bool and not m0.any()


# ---------------------------------------------------------------- fiber labels for training
def test_fiber_labels_need_half_the_cell_and_ignore_what_a_large_defect_only_touches():
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, 0:4, 0:2] = True  # exactly half of cell (0, 0) of a 4x4 grid -> anomalous
    masks[1, 0:8, 0:6] = True  # cells (0..1, 0) whole, (0..1, 1) half -> anomalous; nothing only touched
    masks[2, 0:3, 0:6] = True  # 12/16 of (0, 0), 6/16 of (0, 1) -> (0, 0) anomalous, (0, 1) touched: ignored
    anomalous, ignore = fiber_labels(masks, 4, 4)
    assert anomalous.shape == ignore.shape == (3, 4, 4) and anomalous.dtype == ignore.dtype == torch.bool
    assert anomalous[0].sum() == 1 and anomalous[0, 0, 0] and not ignore[0].any()
    assert anomalous[1, :2, :2].all() and anomalous[1].sum() == 4 and not ignore[1].any()
    assert anomalous[2].sum() == 1 and anomalous[2, 0, 0] and ignore[2].sum() == 1 and ignore[2, 0, 1]
    assert not (anomalous & ignore).any()


# ---------------------------------------------------------------- fiber labels for training
def test_fiber_labels_keep_a_small_defect_and_ignore_touched_cells():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True  # a 2x2 pit: 4/16 of cell (0, 0) -> below half everywhere
    masks[0, 6:14, 8:16] = True  # 8x8 block over cells (1..3, 2..3): rows 6-7 cover half of row 1
    masks[1, 5, 5] = True  # one pixel in cell (1, 1)
    anomalous, ignore = fiber_labels(masks, 4, 4)
    expected = torch.zeros(2, 4, 4, dtype=torch.bool)
    expected[0, 0, 0] = True  # kept: the cell the pit covers most
    expected[0, 1:4, 2:4] = True  # row 1 is exactly half covered (rows 4-7 of which 6-7)
    expected[1, 1, 1] = True
    assert torch.equal(anomalous, expected)
    assert not ignore.any()  # every touched cell is anomalous here


def test_fiber_labels_two_regions_in_one_cell_count_separately():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 0, 0] = True
    masks[0, 0, 3] = True  # two single-pixel regions, both in cell (0, 0) of a 2x2 grid
    masks[0, 4:8, 4:8] = True  # a whole cell
    anomalous, ignore = fiber_labels(masks, 2, 2)
    assert anomalous[0].tolist() == [[True, False], [False, True]]
    assert not ignore.any()


# ---------------------------------------------------------------- standardised flows
def test_standardized_flow_is_the_density_of_the_raw_fiber():
    torch.manual_seed(0)
    c, p = 3, 4
    inner = build_flow(c, p, n_blocks=2, seed=1).double()
    flow = Standardized(inner, c).double()
    raw = torch.randn(200, c, dtype=torch.float64) * torch.tensor([5.0, 0.5, 2.0], dtype=torch.float64) + 3.0
    flow.set_statistics(raw)
    assert torch.allclose(flow.mean, raw.mean(0)) and torch.allclose(flow.std, raw.std(0))
    cond = torch.randn(4, p, dtype=torch.float64)
    x = raw[:4]
    z, ljd = flow(x, c=[cond])
    z_in, ljd_in = inner((x - flow.mean) / flow.std, c=[cond])
    assert torch.allclose(z, z_in)
    assert torch.allclose(ljd, ljd_in - torch.log(flow.std).sum())
    # log|det ∂z/∂x| by autograd, fiber by fiber
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None], c=[cond[i:i + 1]])[0][0], x[i])
        assert float(torch.linalg.slogdet(jac)[1]) == pytest.approx(float(ljd[i].detach()), abs=1e-8)


def test_flow_logp_has_no_side_effect():
    from bgad_lite.flow import flow_logp

    flow = build_flow(4, 8, n_blocks=2, seed=0).train()
    feats, pos = torch.randn(2, 4, 3, 3), positional_encoding_2d(8, 3, 3)
    logp = flow_logp(flow, feats, pos)
    assert flow.training  # handed back in the mode it came in
    x, c, _ = to_fibers(feats, pos)
    with torch.no_grad():
        expected = log_likelihood(*flow.eval()(x, c=[c])).reshape(2, 3, 3)
    assert torch.allclose(logp, expected)
    assert not flow.training and not flow_logp(flow, feats, pos).isnan().any() and not flow.training
