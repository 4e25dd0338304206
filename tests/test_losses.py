"""Tests for bgad_lite.losses: ML loss, BG-SPP (pull, push), the naive push baseline, focal weights.

Every expected value is computed by hand (in comments) or with ``math`` from METHOD.md's formulas.
"""

from __future__ import annotations

import math

import pytest
import torch

from bgad_lite import bg_spp_loss, focal_weights, ml_loss, naive_push_loss

N = 10.0


def _t(values, grad: bool = True) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def _mask(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    return g


# ---------------------------------------------------------------- BG-SPP: hand cases
# logp = [-5, -1, 2, -20, -3], N = 10  ->  l = [-0.5, -0.1, 0.2, -2.0, -0.3]
# b_n = -0.2, b_a = -0.3
LOGP = [-5.0, -1.0, 2.0, -20.0, -3.0]


@pytest.mark.parametrize("b_as_tensor", [False, True])
def test_bg_spp_hand_case_a(b_as_tensor):
    # is_anomaly = [F, F, T, T, F]
    # normals  l = -0.5, -0.1, -0.3 ; below b_n = -0.2: -0.5 and -0.3
    #   pull = mean(-0.2 - (-0.5), -0.2 - (-0.3)) = mean(0.3, 0.1) = 0.2
    # anomalies l = 0.2, -2.0 ; above b_a = -0.3: only 0.2
    #   push = mean(0.2 - (-0.3)) = 0.5
    logp = _t(LOGP)
    b_n, b_a = (torch.tensor(-0.2), torch.tensor(-0.3)) if b_as_tensor else (-0.2, -0.3)
    pull, push = bg_spp_loss(logp, _mask([0, 0, 1, 1, 0]), b_n, b_a, N)
    assert pull.item() == pytest.approx(0.2, abs=1e-6)
    assert push.item() == pytest.approx(0.5, abs=1e-6)
    # d pull / d logp_i = -1 / (N * 2) for the 2 selected normals; d push / d logp_i = +1 / (N * 1)
    g_pull = _grad(pull, logp)
    g_push = _grad(push, logp)
    torch.testing.assert_close(g_pull, torch.tensor([-0.05, 0.0, 0.0, 0.0, -0.05]))
    torch.testing.assert_close(g_push, torch.tensor([0.0, 0.0, 0.1, 0.0, 0.0]))


def test_bg_spp_hand_case_b():
    # is_anomaly = [T, F, T, F, T]
    # normals  l = -0.1, -2.0 ; below b_n: -2.0 -> pull = -0.2 + 2.0 = 1.8
    # anomalies l = -0.5, 0.2, -0.3 ; above b_a = -0.3: 0.2 (0.5) and -0.3 (0.0, float32 -3/10 == -0.3)
    #   push = mean(0.5, 0.0) = 0.25
    logp = _t(LOGP)
    pull, push = bg_spp_loss(logp, _mask([1, 0, 1, 0, 1]), -0.2, -0.3, N)
    assert pull.item() == pytest.approx(1.8, abs=1e-6)
    assert push.item() == pytest.approx(0.25, abs=1e-6)


def test_bg_spp_fibers_exactly_at_boundary_are_selected_with_zero_value():
    # N = 4 (exact in binary): normals logp = [-2, -1] -> l = [-0.5, -0.25], b_n = -0.25 (exactly on it)
    #   pull = mean(-0.25 + 0.5, -0.25 + 0.25) = mean(0.25, 0) = 0.125 (the boundary fiber counts, with 0)
    # anomalies logp = [-2, 0] -> l = [-0.5, 0.0], b_a = -0.5 (exactly on it)
    #   push = mean(0, 0.5) = 0.25
    logp = _t([-2.0, -1.0, -2.0, 0.0])
    pull, push = bg_spp_loss(logp, _mask([0, 0, 1, 1]), -0.25, -0.5, 4.0)
    assert pull.item() == pytest.approx(0.125, abs=1e-7)
    assert push.item() == pytest.approx(0.25, abs=1e-7)


def test_bg_spp_weights_multiply():
    # case a with weights w = [2, 7, 11, 13, 3]:
    #   pull = mean(2 * 0.3, 3 * 0.1) = mean(0.6, 0.3) = 0.45 ; push = 11 * 0.5 = 5.5
    logp = _t(LOGP)
    w = torch.tensor([2.0, 7.0, 11.0, 13.0, 3.0])
    pull, push = bg_spp_loss(logp, _mask([0, 0, 1, 1, 0]), -0.2, -0.3, N, weights=w)
    assert pull.item() == pytest.approx(0.45, abs=1e-6)
    assert push.item() == pytest.approx(5.5, abs=1e-5)
    # unit weights change nothing
    pull1, push1 = bg_spp_loss(logp, _mask([0, 0, 1, 1, 0]), -0.2, -0.3, N, weights=torch.ones(5))
    assert pull1.item() == pytest.approx(0.2, abs=1e-6)
    assert push1.item() == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------- BG-SPP: empty selections
@pytest.mark.parametrize(
    "logp, is_anomaly, expect_pull_zero, expect_push_zero",
    [
        # no normal below b_n (all l >= 0 > -0.2), anomaly above b_a
        ([1.0, 5.0, 3.0], [0, 0, 1], True, False),
        # no anomaly above b_a (anomaly l = -2 < -0.3), normal below b_n
        ([-5.0, 1.0, -20.0], [0, 0, 1], False, True),
        # no anomaly at all
        ([-5.0, 1.0, 2.0], [0, 0, 0], False, True),
        # only anomalies (no normal), all below b_a
        ([-20.0, -30.0], [1, 1], True, True),
        # both selections empty
        ([1.0, -20.0], [0, 1], True, True),
        # empty input
        ([], [], True, True),
    ],
)
def test_bg_spp_empty_selections_are_exact_zero_and_backprop(logp, is_anomaly, expect_pull_zero, expect_push_zero):
    x = _t(logp)
    pull, push = bg_spp_loss(x, _mask(is_anomaly), -0.2, -0.3, N)
    for term, expect_zero in ((pull, expect_pull_zero), (push, expect_push_zero)):
        assert term.dim() == 0
        assert torch.isfinite(term)
        if expect_zero:
            assert term.item() == 0.0
        else:
            assert term.item() > 0.0
    g = _grad(pull + push, x)
    assert g.shape == x.shape
    assert torch.isfinite(g).all()
    if expect_pull_zero and expect_push_zero:
        assert torch.equal(g, torch.zeros_like(x))


def test_bg_spp_empty_with_weights_and_tensor_boundaries():
    x = _t([1.0, -20.0])
    pull, push = bg_spp_loss(x, _mask([0, 1]), torch.tensor(-0.2), torch.tensor(-0.3), N, weights=torch.tensor([3.0, 4.0]))
    assert pull.item() == 0.0 and push.item() == 0.0
    assert torch.equal(_grad(pull + push, x), torch.zeros(2))


# ---------------------------------------------------------------- BG-SPP: gradient signs
def test_pull_raises_normal_logp_below_boundary():
    # normals with l <= b_n: d pull / d logp < 0, so gradient descent raises their logp
    x = _t([-9.0, -4.0, -2.5, 3.0, 0.0])  # l = -0.9, -0.4, -0.25, 0.3, 0.0 ; b_n = -0.2
    pull, _ = bg_spp_loss(x, _mask([0] * 5), -0.2, -0.3, N)
    g = _grad(pull, x)
    assert (g[:3] < 0).all()
    assert (g[3:] == 0).all()
    # one descent step moves the selected normals up and leaves pull smaller
    with torch.no_grad():
        x2 = x - 1.0 * g
    assert (x2[:3] > x[:3]).all()
    pull2, _ = bg_spp_loss(x2, _mask([0] * 5), -0.2, -0.3, N)
    assert pull2.item() < pull.item()


def test_push_lowers_anomalous_logp_above_boundary_only():
    x = _t([5.0, -1.0, -2.9, -3.5, -50.0])  # l = 0.5, -0.1, -0.29, -0.35, -5.0 ; b_a = -0.3
    _, push = bg_spp_loss(x, _mask([1] * 5), -0.2, -0.3, N)
    g = _grad(push, x)
    assert (g[:3] > 0).all()  # descent lowers their logp
    assert (g[3:] == 0).all()  # below b_a: never pushed further
    # anomalies never feed the pull and normals never feed the push
    pull, _ = bg_spp_loss(x, _mask([1] * 5), -0.2, -0.3, N)
    assert pull.item() == 0.0


def test_bg_spp_push_is_bounded_below_b_a():
    # however low an anomaly's logp goes, the push term is exactly 0 with zero gradient
    for v in (-3.5, -10.0, -100.0, -1e4):
        x = _t([v])
        _, push = bg_spp_loss(x, _mask([1]), -0.2, -0.3, N)
        assert push.item() == 0.0
        assert _grad(push, x).item() == 0.0


# ---------------------------------------------------------------- ML loss
def _softplus_neg(v: float) -> float:
    # -log sigmoid(v) = -log(1 / (1 + e^-v)) = log(1 + e^-v)
    return -math.log(1.0 / (1.0 + math.exp(-v)))


def test_ml_loss_matches_hand_formula():
    vals = [-3.0, -0.5, 0.0, 1.0, 4.0]
    expected = sum(_softplus_neg(v) for v in vals) / len(vals)
    assert ml_loss(_t(vals, grad=False)).item() == pytest.approx(expected, rel=1e-6)
    # -log sigmoid(0) = log 2
    assert ml_loss(_t([0.0], grad=False)).item() == pytest.approx(math.log(2.0), rel=1e-7)


def test_ml_loss_weights_multiply():
    vals = [-3.0, 0.0, 2.0]
    w = [2.0, 0.5, 4.0]
    expected = sum(wi * _softplus_neg(v) for v, wi in zip(vals, w)) / 3
    assert ml_loss(_t(vals, grad=False), torch.tensor(w)).item() == pytest.approx(expected, rel=1e-6)


def test_ml_loss_gradient_raises_logp_and_empty_is_zero():
    x = _t([-3.0, 0.0, 2.0])
    g = _grad(ml_loss(x), x)
    # d/dv log(1 + e^-v) = -sigmoid(-v), divided by 3 for the mean
    expected = torch.tensor([-1 / (1 + math.exp(-3.0)) / 3, -0.5 / 3, -1 / (1 + math.exp(2.0)) / 3])
    torch.testing.assert_close(g, expected)
    e = _t([])
    loss = ml_loss(e)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    assert _grad(loss, e).numel() == 0


# ---------------------------------------------------------------- naive push (baseline)
def test_naive_push_matches_documented_formula():
    # mean over anomalous fibers of -log sigmoid(-l), l = logp / N
    logp = [-5.0, 3.0, 20.0, -40.0]
    is_a = [0, 1, 1, 1]
    expected = sum(-math.log(1.0 / (1.0 + math.exp(v / N))) for v, a in zip(logp, is_a) if a) / 3
    assert naive_push_loss(_t(logp, grad=False), _mask(is_a), N).item() == pytest.approx(expected, rel=1e-6)


def test_naive_push_has_no_boundary_unlike_bg_spp():
    # Anomalies far below b_a: BG-SPP's push is 0 with zero gradient, the naive push keeps pushing.
    prev = None
    for v in (-5.0, -10.0, -20.0, -40.0):  # l = -0.5 ... -4, all below b_a = -0.3
        x = _t([v])
        naive = naive_push_loss(x, _mask([1]), N)
        g = _grad(naive, x)
        assert g.item() > 0.0  # descent lowers logp further
        _, push = bg_spp_loss(_t([v]), _mask([1]), -0.2, -0.3, N)
        assert push.item() == 0.0
        if prev is not None:
            assert naive.item() < prev  # lower logp always lowers the loss: no minimum reached
        prev = naive.item()


def test_naive_push_ignores_normals_and_empty_is_zero():
    x = _t([-5.0, 30.0])
    loss = naive_push_loss(x, _mask([0, 0]), N)
    assert loss.item() == 0.0
    assert torch.equal(_grad(loss, x), torch.zeros(2))


def _w_normal(l: float) -> float:
    return 1.0 if l > -0.2 else 11.7 * (1 - math.exp(l)) ** 0.5 * abs(l)


def _w_anom(l: float) -> float:
    return 1.0 if l <= -1 else 0.53 * (1 + math.exp(l)) ** 2 / abs(l)


# logp values chosen around the thresholds (normalizer 10): l = logp / 10
NORMAL_LOGP = [5.0, 0.0, -1.0, -1.99, -2.0, -2.01, -5.0, -30.0]  # l > -0.2 | l = -0.2 (formula) | below
ANOM_LOGP = [-30.0, -10.0, -9.99, -5.0, -1.0, 3.0, 20.0]  # l <= -1 -> 1 | l = -1 -> 1 | above


def test_focal_weights_normal_side():
    logp = torch.tensor(NORMAL_LOGP)
    w = focal_weights(logp, torch.zeros(len(NORMAL_LOGP), dtype=torch.bool), normalizer=10.0)
    # exact float32 l values, so the threshold comparison is the library's own
    ls = (logp / 10.0).tolist()
    expected = [_w_normal(l) for l in ls]
    assert w.tolist() == pytest.approx(expected, rel=1e-5)
    # spot checks by hand: l = -0.5 -> 11.7 * sqrt(1 - e^-0.5) * 0.5 = 3.6761...
    assert w[6].item() == pytest.approx(11.7 * math.sqrt(1 - math.exp(-0.5)) * 0.5, rel=1e-5)
    assert w[0].item() == 1.0 and w[1].item() == 1.0 and w[2].item() == 1.0 and w[3].item() == 1.0
    assert w[4].item() != 1.0  # l = -0.2 exactly is not "> -0.2": formula branch
    assert w[7].item() == pytest.approx(11.7 * math.sqrt(1 - math.exp(-3.0)) * 3.0, rel=1e-5)


def test_focal_weights_anomalous_side():
    logp = torch.tensor(ANOM_LOGP)
    w = focal_weights(logp, torch.ones(len(ANOM_LOGP), dtype=torch.bool), normalizer=10.0)
    ls = (logp / 10.0).tolist()
    assert w.tolist() == pytest.approx([_w_anom(l) for l in ls], rel=1e-5)
    assert w[0].item() == 1.0 and w[1].item() == 1.0  # l = -3, l = -1 (<= -1)
    # l = -0.5 -> 0.53 * (1 + e^-0.5)^2 / 0.5 = 2.7362...
    assert w[3].item() == pytest.approx(0.53 * (1 + math.exp(-0.5)) ** 2 / 0.5, rel=1e-5)
    # l = 2 -> 0.53 * (1 + e^2)^2 / 2
    assert w[6].item() == pytest.approx(0.53 * (1 + math.exp(2.0)) ** 2 / 2.0, rel=1e-5)


def test_focal_weights_mixed_batch_normalizer_and_detached():
    # the same logp gets the normal or the anomalous weight according to its label
    logp = torch.tensor([-5.0, -5.0, 2.0, 2.0], requires_grad=True)
    w = focal_weights(logp, _mask([0, 1, 0, 1]), normalizer=10.0)
    assert not w.requires_grad
    assert w.tolist() == pytest.approx([_w_normal(-0.5), _w_anom(-0.5), 1.0, _w_anom(0.2)], rel=1e-5)
    # normalizer 5: logp -5 -> l = -1 -> anomalous weight 1, normal weight 11.7 sqrt(1 - e^-1)
    w5 = focal_weights(logp, _mask([0, 1, 0, 1]), normalizer=5.0)
    assert w5[0].item() == pytest.approx(_w_normal(-1.0), rel=1e-5)
    assert w5[1].item() == 1.0
    # hard normals (lower l) weigh more; hard anomalies (higher l, above -1 ... ) weigh more near 0
    w_hard = focal_weights(torch.tensor([-3.0, -10.0]), _mask([0, 0]))
    assert w_hard[1] > w_hard[0]


def test_focal_weight_of_anomaly_at_l_zero_is_finite():
    w = focal_weights(torch.tensor([0.0]), _mask([1]))
    assert torch.isfinite(w).all() and w.item() > 0
