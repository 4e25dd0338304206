"""margins: groups, boundaries, fractions and rates on tiny hand-built cases (no model)."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bgad_lite import compute_boundaries
from bgad_lite.boundary import boundaries_from_normals
from bgad_lite.explore import margins
from bgad_lite.explore.margins import NORMAL, SEEN, UNSEEN


@pytest.fixture
def prep():
    """Three 4 x 4 test images: a normal one, a seen-type defect in the top-left 2 x 2 cell
    block, an unseen-type defect covering one pixel of the bottom-right block (a quarter: below
    the half that makes a 2 x 2 level's fiber anomalous, but a region of its own, which keeps the
    cell it covers most) and half of the top-right block."""
    masks = np.zeros((3, 4, 4), bool)
    masks[1, :2, :2] = True  # seen: the whole top-left cell
    masks[2, 3, 3] = True  # unseen: 1 of 4 pixels of the bottom-right cell, a region alone -> kept
    masks[2, 0, 2:] = True  # unseen: 2 of 4 pixels of the top-right cell -> anomalous fiber
    return SimpleNamespace(test_types=np.array(["good", "scratch", "hole"]), test_masks=masks,
                           split=SimpleNamespace(seen_types=("scratch",)))


def test_image_groups_by_hand(prep):
    assert list(margins.image_groups(prep)) == [NORMAL, SEEN, UNSEEN]
    prep.split.seen_types = ("scratch", "hole")
    assert list(margins.image_groups(prep)) == [NORMAL, SEEN, SEEN]


def test_fiber_groups_by_hand(prep):
    g = margins.fiber_groups(prep, 2, 2)  # (3, 2, 2)
    assert g.shape == (3, 2, 2)
    expected = np.full((3, 2, 2), NORMAL, dtype=object)
    expected[1, 0, 0] = SEEN
    expected[2, 0, 1] = UNSEEN  # half the cell: anomalous
    expected[2, 1, 1] = UNSEEN  # a quarter, but the lone pixel's region keeps its cell (fiber_labels)
    assert (g == expected).all()
    # one 1 x 1 level: the whole image is one cell; 1/4 and 3/16 of it are defect, below half,
    # but each defect keeps the one cell there is
    assert list(margins.fiber_groups(prep, 1, 1).reshape(-1)) == [NORMAL, SEEN, UNSEEN]


def test_fiber_l_by_group_splits_logp_over_n(prep):
    logps = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2)  # (N, H, W): fiber k has logp k
    out = margins.fiber_l_by_group(prep, logps, 10.0)
    assert list(out) == [NORMAL, SEEN, UNSEEN]
    assert out[SEEN].tolist() == [0.4]  # image 1, fiber (0, 0): logp 4
    assert out[UNSEEN].tolist() == pytest.approx([0.9, 1.1])  # image 2, fibers (0, 1) and (1, 1): logp 9, 11
    assert sorted(out[NORMAL].tolist()) == pytest.approx([k / 10 for k in (0, 1, 2, 3, 5, 6, 7, 8, 10)])


def test_rates_at_by_hand():
    scores = np.array([0.1, 0.5, 0.9, 0.7, 0.2, 0.6])
    groups = np.array([NORMAL, NORMAL, SEEN, SEEN, UNSEEN, NORMAL], dtype=object)
    r = margins.rates_at(scores, groups, 0.5)  # flagged: 0.5, 0.9, 0.7, 0.6 (≥ t)
    assert r["fpr"] == pytest.approx(2 / 3) and r["tpr_seen"] == 1.0 and r["tpr_unseen"] == 0.0
    assert (r["n_normal"], r["flagged_normal"], r["n_seen"], r["flagged_seen"], r["n_unseen"], r["flagged_unseen"]) \
        == (3, 2, 2, 2, 1, 0)
    r = margins.rates_at(scores[:4], groups[:4], 0.8)  # no unseen image: NaN, not 0
    assert np.isnan(r["tpr_unseen"]) and r["n_unseen"] == 0 and r["tpr_seen"] == 0.5 and r["fpr"] == 0.0


def test_margin_fractions_on_the_lines():
    # b_a = -0.75 and b_n = -0.5 belong to the margin: one value below, three inside, one above
    f = margins.margin_fractions(np.array([-1.0, -0.75, -0.625, -0.5, -0.25]), -0.5, -0.75)
    assert f == {"below_ba": 0.2, "margin": 0.6, "above_bn": 0.2}
    assert all(np.isnan(v) for v in margins.margin_fractions(np.array([]), 0.0, -1.0).values())


def test_train_boundaries_is_compute_boundaries_on_all_training_normals():
    l = np.arange(100, dtype=np.float64)[::-1] / 10  # 9.9 .. 0.0, unsorted order
    b_n, b_a = boundaries_from_normals(l, beta=0.05, tau=0.25, normalizer=1.0)  # ⌊0.05·100⌋ = 5th smallest: 0.5
    assert (b_n, b_a) == pytest.approx((0.5, 0.25))
    logp = torch.randn(4, 3, 3)  # (n_train, H, W) logp, N = 10
    want = compute_boundaries(logp.reshape(-1), None, 0.1, 0.3, 10.0)
    assert boundaries_from_normals(logp, 0.1, 0.3, 10.0) == (float(want[0]), float(want[1]))


def test_l_range_shows_every_group():
    normal, anomalous = np.linspace(0, 1, 1001), np.array([-5.0, -4.0])
    lo, hi = margins.l_range([normal, anomalous, np.array([])])  # an empty group is skipped
    assert lo < -4.9 and hi > 0.99  # the 2 anomalies are not cut off by the 1001 normals
    pad = 0.03 * (np.percentile(normal, 99.9) - np.percentile(anomalous, 1.0))
    assert lo == pytest.approx(np.percentile(anomalous, 1.0) - pad, abs=1e-6)
    assert hi == pytest.approx(np.percentile(normal, 99.9) + pad, abs=1e-6)


def test_boundary_range_cuts_the_far_tails_at_four_margins_from_the_boundary():
    normal, pushed = np.linspace(-0.4, -0.2, 1001), np.array([-2000.0, -50.0, 70.0])
    lo, hi = margins.boundary_range([normal, pushed], b_n=-0.35, b_a=-0.45)  # τ = 0.1
    assert (lo, hi) == pytest.approx((-0.45 - 4 * 0.1, -0.35 + 4 * 0.1))
    near = np.array([-0.5])  # everything within the cuts: l_range unchanged
    assert margins.boundary_range([normal, near], -0.35, -0.45) == margins.l_range([normal, near])
    assert margins.boundary_range([normal, pushed], -0.35, -0.45, margins=1.0) == pytest.approx((-0.55, -0.25))
    # everything below the lower cut: that end is not cut (an axis must hold something)
    far = [np.array([-9.0, -8.0])]
    assert margins.boundary_range(far, -0.35, -0.45)[0] == margins.l_range(far)[0]


def test_snapshots_and_epoch_xlim():
    groups = np.array([NORMAL, NORMAL, SEEN, UNSEEN], dtype=object)
    s0 = margins.Snapshot(0, np.array([1.0, 2.0, 0.5, 0.4]), np.array([1.5, 2.5]))
    s1 = margins.Snapshot(1, np.array([1.1, 2.1, -3.0, -2.0]), np.array([1.6, 2.6]))
    assert {g: v.tolist() for g, v in s1.l_by_group(groups).items()} == {NORMAL: [1.1, 2.1], SEEN: [-3.0],
                                                                        UNSEEN: [-2.0]}
    lo, hi = margins.epoch_xlim([s0, s1], groups)
    assert lo < -3.0 and hi > 2.6  # every epoch fits on the one axis


def test_margins_imports_no_drawing_and_no_widgets():
    code = ("import sys, bgad_lite.explore.margins; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'ipywidgets', 'plotly')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fiber_auroc_by_hand():
    rec = object.__new__(margins.EpochRecorder)  # no flows: hand-made snapshots
    rec.groups = np.array([NORMAL, NORMAL, SEEN, SEEN, UNSEEN, UNSEEN], dtype=object)
    rec.snapshots = [margins.Snapshot(0, np.array([1.0, 2.0, -1.0, -2.0, 1.5, 0.5]), np.zeros(3)),
                     margins.Snapshot(1, np.array([1.0, 2.0, 1.5, 3.0, 0.0, -1.0]), np.zeros(3))]
    # epoch 0: both seen below both normals -> 1; unseen 1.5 is between (1 of 2 pairs right), 0.5 below
    #          both -> (1 + 2) / 4. Epoch 1: seen 1.5 beats normal 1.0 only, 3.0 none -> 1 / 4; unseen -> 1
    assert rec.fiber_auroc() == {SEEN: [1.0, 0.25], UNSEEN: [0.75, 1.0]}
