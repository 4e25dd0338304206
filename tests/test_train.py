"""Training (bgad_lite.train): one step against a hand-written step, fixed boundaries, focal weights,
left-out fibers, the learning-rate schedule, determinism, and the anomaly set without flips."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from bgad_lite import BGADError
from bgad_lite.flow import log_likelihood, positional_encoding_2d, to_fibers
from bgad_lite.losses import bg_spp_loss, focal_weights, ml_loss
from bgad_lite.data.augment import synthesise_anomalies
from bgad_lite.flow import LevelData
from bgad_lite.train import epoch_chunks, lr_factor, make_flows, objective_terms, train_flows, train_step

COND_DIM = 8
#: one level's training: one image batch of ≤ 4 images, one chunk of every fiber
KW = dict(lr=1e-3, seed=3, batch_images=4, fiber_chunk=10_000, progress=False)


def _flows(seed: int = 3):
    return make_flows([6], cond_dim=COND_DIM, n_blocks=2, seed=seed)


def _level(n=4, c=6, h=3, w=3, anomalous=(), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i, r, col in anomalous:
        masks[i, r, col] = True
        feats[i, :, r, col] += 4.0  # anomalous fibers lie away from the normal ones
    return LevelData(feats, masks, positional_encoding_2d(COND_DIM, h, w).to(dtype))


def _params(flows):
    return [p.detach().clone() for p in flows.parameters()]


def test_one_phase1_step_equals_a_hand_written_step():
    level = _level()
    flows = _flows().double()
    by_hand = copy.deepcopy(flows[0]).train()
    # one image batch (batch_images = n) and one chunk (fiber_chunk ≥ n·H·W): exactly one step at lr
    train_flows(flows, [level], "ml", epochs=1, **KW)
    opt = torch.optim.Adam(by_hand.parameters(), lr=KW["lr"])
    x, c, _ = to_fibers(level.features, level.pos)
    z, ljd = by_hand(x, c=[c])
    loss = ml_loss(log_likelihood(z, ljd))
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = 0
    for a, b, p0 in zip(flows[0].parameters(), by_hand.parameters(), _flows().double()[0].parameters()):
        assert torch.allclose(a, b, atol=1e-12), "train_flows and the hand step differ"
        moved += int(not torch.allclose(a, p0))
    assert moved > 0  # the step changed the weights


def test_fixed_boundaries_are_used_as_given():
    level = _level(anomalous=[(0, 1, 1), (2, 0, 2)])
    flows = _flows().double()
    # b_n far above every normal: every normal is pulled by (b_n − l); b_a far below every anomaly
    hist = train_flows(flows, [level], "bgad", epochs=1, fixed_boundaries=[(5.0, -50.0)], **KW)
    assert hist[0]["b_n/0"] == 5.0 and hist[0]["b_a/0"] == -50.0
    fresh = _flows().double()
    with torch.no_grad():
        x, c, m = to_fibers(level.features, level.pos, level.masks)
        l = log_likelihood(*fresh[0](x, c=[c])) / 10.0  # N
    assert hist[0]["pull/0"] == pytest.approx(float((5.0 - l[~m]).mean()), rel=1e-9)
    assert hist[0]["push/0"] == pytest.approx(float((l[m] - (-50.0)).mean()), rel=1e-9)


def test_focal_weights_change_the_loss_as_the_formula_says():
    logp = torch.tensor([-1.0, -3.0, -15.0, 1.0, -8.0, -30.0], dtype=torch.float64)
    is_anomaly = torch.tensor([False, False, False, True, True, True])
    b_n, b_a = torch.tensor(-0.25, dtype=torch.float64), torch.tensor(-0.35, dtype=torch.float64)
    terms = objective_terms(logp, is_anomaly, "bgad", normalizer=10.0, lam=1.0, focal=True, b_n=b_n, b_a=b_a)
    l = logp / 10
    # hand weights: normal 1 if l > −0.2 else 11.7·(1 − eˡ)^0.5·|l|; anomalous 1 if l ≤ −1 else 0.53·(1 + eˡ)²/|l|
    w = torch.tensor([1.0, 11.7 * math.sqrt(1 - math.exp(-0.3)) * 0.3, 11.7 * math.sqrt(1 - math.exp(-1.5)) * 1.5,
                      0.53 * (1 + math.exp(0.1)) ** 2 / 0.1, 0.53 * (1 + math.exp(-0.8)) ** 2 / 0.8, 1.0],
                     dtype=torch.float64)
    assert torch.allclose(focal_weights(logp, is_anomaly, 10.0), w)
    ml = (-torch.nn.functional.logsigmoid(logp[:3]) * w[:3]).mean()
    pull = ((b_n - l[1:3]) * w[1:3]).mean()  # normals at or below b_n = −0.25: l = −0.3, −1.5
    push = ((l[3:4] - b_a) * w[3:4]).mean()  # anomalies at or above b_a = −0.35: only l = 0.1
    assert float(terms["ml"]) == pytest.approx(float(ml))
    assert float(terms["pull"]) == pytest.approx(float(pull))
    assert float(terms["push"]) == pytest.approx(float(push))
    plain = objective_terms(logp, is_anomaly, "bgad", b_n=b_n, b_a=b_a)
    assert float(plain["loss"]) != pytest.approx(float(terms["loss"]))
    assert float(plain["pull"]) == pytest.approx(float(bg_spp_loss(logp, is_anomaly, b_n, b_a, 10.0)[0]))


def test_left_out_fibers_take_no_part():
    level = _level(anomalous=[(0, 1, 1), (1, 2, 2)])
    ignored = LevelData(level.features, level.masks, level.pos, ignore=level.masks.clone())
    flows_a, flows_b = _flows().double(), _flows().double()
    hist = train_flows(flows_a, [ignored], "bgad", epochs=1, **KW)
    assert hist[0]["push/0"] == 0.0  # every anomalous fiber was left out
    # the same as training on the normal fibers only (the anomalous cells replaced by nothing)
    normal_only = LevelData(level.features, torch.zeros_like(level.masks), level.pos, ignore=level.masks.clone())
    train_flows(flows_b, [normal_only], "bgad", epochs=1, **KW)
    assert all(torch.equal(a, b) for a, b in zip(flows_a.parameters(), flows_b.parameters()))


def test_learning_rate_schedule_by_hand():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)  # linear warm-up: (step + 1) / warmup
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)  # cosine starts at 1
    assert lr_factor(55, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way: the mean of 1 and 0.01
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)  # ends at 1 % of the base lr
    assert lr_factor(500, 100, 10) == pytest.approx(0.01)  # and stays there
    assert lr_factor(0, 10, 0) == pytest.approx(1.0)


def test_training_is_deterministic_by_seed():
    level = _level(dtype=torch.float32, anomalous=[(0, 0, 0)])
    runs = []
    for seed in (3, 3, 4):
        flows = _flows(seed)
        train_flows(flows, [level], "bgad", epochs=2, **{**KW, "seed": seed, "batch_images": 2, "fiber_chunk": 7})
        runs.append(_params(flows))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_synthesised_anomalies_are_the_labelled_their_flips_and_cutpastes():
    rng = np.random.default_rng(0)
    train = rng.random((5, 32, 32, 3)).astype(np.float32)
    labelled = rng.random((2, 32, 32, 3)).astype(np.float32)
    masks = np.zeros((2, 32, 32), bool)
    masks[:, 10:16, 8:20] = True
    images, out_masks, kinds = synthesise_anomalies(train, labelled, masks, n_cutpaste=3, seed=1)
    assert kinds == ["labelled"] * 2 + ["flip"] * 2 + ["cutpaste"] * 3 and len(images) == len(out_masks) == 7
    np.testing.assert_array_equal(images[2], labelled[0][:, ::-1])  # a horizontal flip, mask with it
    np.testing.assert_array_equal(out_masks[2], masks[0][:, ::-1])


def test_epoch_chunks_visit_every_kept_fiber_once_per_epoch():
    level = _level(n=5, h=4, w=4, anomalous=[(1, 0, 0), (3, 2, 2)])
    level.ignore = torch.zeros(5, 4, 4, dtype=torch.bool)
    level.ignore[2, 1, 1] = True
    x_all, _, m_all = to_fibers(level.features, level.pos, level.masks)  # (80, C), (80,)
    keep = ~level.ignore.reshape(-1)
    for normal_only in (False, True):
        chunks = list(epoch_chunks([level], 2, 7, normal_only, torch.Generator().manual_seed(0)))
        assert all(j == 0 and 0 < len(x) <= 7 for j, x, _, _ in chunks)
        seen = torch.cat([x for _, x, _, _ in chunks])
        expected = x_all[keep & ~m_all] if normal_only else x_all[keep]
        # the same fibers, each once (rows compared as sorted tuples)
        assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, expected.tolist()))
        n_anom = int(torch.cat([m for _, _, _, m in chunks]).sum())
        assert n_anom == (0 if normal_only else 2)


def test_train_step_skips_a_chunk_without_normals_and_refuses_a_non_finite_loss():
    level = _level()
    flows = _flows().double()
    opt = torch.optim.Adam(flows[0].parameters(), lr=1e-3)
    x, c, _ = to_fibers(level.features, level.pos, level.masks)
    before = _params(flows)
    assert train_step(flows[0], opt, x, c, torch.ones(len(x), dtype=torch.bool), "bgad") is None
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        train_step(flows[0], opt, bad, c, torch.zeros(len(x), dtype=torch.bool), "ml")
    assert all(torch.equal(a, b) for a, b in zip(before, _params(flows)))  # nothing was stepped
    terms = train_step(flows[0], opt, x, c, torch.zeros(len(x), dtype=torch.bool), "bgad", boundaries=(-0.3, -0.4))
    assert float(terms["b_n"]) == -0.3 and float(terms["b_a"]) == -0.4
    assert not all(torch.equal(a, b) for a, b in zip(before, _params(flows)))


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    level = _level()
    level.features[0, 0, 0, 0] = float("nan")
    flows = _flows().double()
    with pytest.raises(BGADError, match="non-finite at epoch 1, level 0"):
        train_flows(flows, [level], "ml", 1, **KW)
