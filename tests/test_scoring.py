"""Tests for bgad_lite.scoring: anomaly_maps (deficits in nats), likelihood_maps (the paper's sum) and
image_scores: hand values, locality, train vs test normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bgad_lite import BGADError
from bgad_lite.scoring import anomaly_maps, image_scores, likelihood_maps

S = 32  # image size


def test_constant_single_level_test_mode_is_zero_map():
    maps = likelihood_maps([torch.full((2, 4, 4), -3.0)], S)
    assert maps.shape == (2, S, S) and maps.dtype == np.float32
    assert np.all(maps == maps.flat[0])
    assert np.allclose(maps, 0.0, atol=1e-7)


def test_constant_levels_hand_values():
    # one level, logp = c, saved reference m: the deficit m − c = 2 nats everywhere; the paper's sum 1 − exp(c − m)
    one = [torch.full((1, 4, 4), -3.0)]
    maps = anomaly_maps(one, S, level_ref=[-1.0])
    assert maps.shape == (1, S, S) and maps.dtype == np.float32
    assert np.allclose(maps, 2.0, atol=1e-6)
    assert np.allclose(likelihood_maps(one, S, level_ref=[-1.0]), 1 - math.exp(-2.0), atol=1e-6)
    # two levels of different resolution: (−1 − (−2)) + (1 − 0.5) = 1.5 nats; the paper's 2 − e^{−1} − e^{−0.5}
    two = [torch.full((1, 8, 8), -2.0), torch.full((1, 4, 4), 0.5)]
    assert np.allclose(anomaly_maps(two, S, level_ref=[-1.0, 1.0]), 1.5, atol=1e-6)
    assert np.allclose(likelihood_maps(two, S, level_ref=[-1.0, 1.0]), 2 - math.exp(-1.0) - math.exp(-0.5), atol=1e-6)


def test_per_position_reference_and_a_far_level_count_in_full():
    """A per-position m_j is subtracted where it sits, and a level's deficit counts however large it is."""
    lp0 = torch.full((2, 2, 2), -1.0)
    lp0[1] = -7.0  # image 1 is 6 nats further out at level 0
    lp1 = torch.full((2, 1, 1), 0.5)
    ref1 = torch.tensor([[2.0]])  # (H_1, W_1) per-position reference
    d = anomaly_maps([lp0, lp1], (4, 4), [0.0, ref1])
    np.testing.assert_allclose(d[0], 1.0 + 1.5)  # (0 − (−1)) + (2 − 0.5)
    np.testing.assert_allclose(d[1], 7.0 + 1.5)
    paper = likelihood_maps([lp0, lp1], (4, 4), [0.0, ref1])  # level 0 adds at most 1: 1 − e^{-1} against 1 − e^{-7}
    np.testing.assert_allclose(paper[1] - paper[0], math.exp(-1) - math.exp(-7), atol=1e-6)


def test_level_ref_missing_or_of_the_wrong_length_raises():
    two = [torch.zeros(1, 4, 4), torch.zeros(1, 2, 2)]
    for maps_of in (anomaly_maps, likelihood_maps):
        with pytest.raises(BGADError, match="2 levels but 1"):
            maps_of(two, S, level_ref=[0.0])
    with pytest.raises(BGADError, match="likelihood_maps"):  # no test-set normalisation for the score
        anomaly_maps(two, S, None)


CASES = [(likelihood_maps, None), (likelihood_maps, [0.0]), (anomaly_maps, [0.0])]


@pytest.mark.parametrize("maps_of, level_ref", CASES)
@pytest.mark.parametrize("row, col", [(1, 2), (0, 0), (3, 3), (2, 0)])
def test_single_low_fiber_gives_max_in_its_cell(maps_of, level_ref, row, col):
    lp = torch.zeros(1, 4, 4)
    lp[0, row, col] = -5.0
    maps = maps_of([lp], S, level_ref=level_ref)[0]
    cell = S // 4
    hits = np.argwhere(maps == maps.max())
    assert len(hits) >= 1
    for r, c in hits:
        assert row * cell <= r < (row + 1) * cell and col * cell <= c < (col + 1) * cell, (r, c)
    # far away from the fiber the map is flat at its minimum
    assert maps.max() > maps.min() + 0.5
    assert image_scores(maps[None])[0] == maps.max()


def test_image_scores_is_per_image_max():
    maps = np.zeros((3, 5, 5), dtype=np.float32)
    maps[0, 1, 1] = 2.0
    maps[1, 4, 0] = -1.0
    maps[2] = 0.5
    maps[2, 2, 2] = 7.0
    np.testing.assert_array_equal(image_scores(maps), [2.0, 0.0, 7.0])


def test_image_scores_top_fraction_is_the_mean_of_the_highest_pixels():
    maps = np.zeros((2, 4, 5), dtype=np.float32)  # 20 pixels per map
    maps[0, 0, :4] = [4.0, 3.0, 2.0, 1.0]
    maps[1] = np.arange(20, dtype=np.float32).reshape(4, 5)[::-1]  # 19 .. 0, not in order
    np.testing.assert_allclose(image_scores(maps, top=0.1), [3.5, 18.5])  # k = 2: (4 + 3) / 2, (19 + 18) / 2
    np.testing.assert_allclose(image_scores(maps, top=0.2), [2.5, 17.5])  # k = 4
    np.testing.assert_allclose(image_scores(maps, top=0.01), [4.0, 19.0])  # k rounds to 0 -> at least 1: the max
    np.testing.assert_allclose(image_scores(maps, top=1.0), maps.reshape(2, -1).mean(1))
    np.testing.assert_array_equal(image_scores(maps, top=0.0), image_scores(maps))
    with pytest.raises(BGADError, match="fraction"):
        image_scores(maps, top=1.5)


def _random_levels(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 8, 8, generator=g) - 2.0, torch.randn(n, 4, 4, generator=g) - 1.0]


def test_train_normalisation_scores_each_image_independently():
    a = _random_levels(1, 0)
    b = _random_levels(3, 1)
    b[0][1, 2, 2] = 9.0  # another image with a much higher logp than any of a's
    level_ref = [0.5, 0.7]
    for maps_of in (anomaly_maps, likelihood_maps):
        alone = maps_of(a, S, level_ref=level_ref)
        batch = maps_of([torch.cat([b[l][:1], a[l], b[l][1:]]) for l in range(2)], S, level_ref=level_ref)
        np.testing.assert_allclose(batch[1], alone[0], rtol=0, atol=1e-6)
        assert image_scores(batch)[1] == pytest.approx(image_scores(alone)[0], abs=1e-6)


def test_test_normalisation_depends_on_the_other_images():
    a = _random_levels(1, 0)
    b = _random_levels(1, 1)
    b[0][0, 2, 2] = 9.0  # raises the test-set max of level 0
    alone = likelihood_maps(a, S)
    batch = likelihood_maps([torch.cat([a[l], b[l]]) for l in range(2)], S)
    assert not np.allclose(batch[0], alone[0], atol=1e-3)


@pytest.mark.parametrize("maps_of, level_ref", [(likelihood_maps, None), (likelihood_maps, [0.0, 0.0]),
                                                (anomaly_maps, [0.0, 0.0])])
def test_lowering_a_fiber_logp_raises_the_map_there(maps_of, level_ref):
    lv = _random_levels(2, 3)
    lv[0][0, 0, 0] = 3.0  # keep the level maxima away from the changed fiber
    lv[1][0, 0, 0] = 3.0
    base = maps_of(lv, S, level_ref=level_ref)
    low = [t.clone() for t in lv]
    low[1][1, 2, 1] -= 1.5  # level 1 (4x4): image 1, row 2, col 1 -> pixels rows 16..23, cols 8..15
    maps = maps_of(low, S, level_ref=level_ref)
    cell = maps[1, 16:24, 8:16] - base[1, 16:24, 8:16]
    assert (cell > 0).all()
    # nowhere does the map go down, and the other image is untouched
    assert (maps - base >= -1e-6).all()
    np.testing.assert_allclose(maps[0], base[0], atol=1e-6)
    assert image_scores(maps)[1] >= image_scores(base)[1]


def test_non_square_maps_keep_each_cell_in_place():
    # two levels of 2 x 4 and 1 x 2 cells upsampled to an 8 x 16 image; the fiber at row 0, column 3
    # of level 0 sits one nat below its reference: A = 1 + 0 at that cell's centre
    lp0 = torch.zeros(1, 2, 4)
    lp0[0, 0, 3] = -1.0
    maps = anomaly_maps([lp0, torch.zeros(1, 1, 2)], (8, 16), [0.0, 0.0])
    assert maps.shape == (1, 8, 16)
    assert maps[0, 0, 15] == pytest.approx(1.0, abs=1e-6) == pytest.approx(maps[0].max())
    row, col = np.unravel_index(maps[0].argmax(), (8, 16))
    assert row < 4 and col >= 12  # the peak lies in that cell's 4 x 4 block, the top-right one
    assert np.abs(maps[0, :, :10]).max() < 1e-7  # bilinear reaches one cell to the left, no further
    with pytest.raises(BGADError, match=r"\(height, width\) pair"):
        anomaly_maps([lp0], (8, 16, 3), [0.0])


def test_each_level_alone_gets_its_own_image_auroc():
    """Level 0 lowers the logp of every anomalous image (AUROC 1), level 1 of every normal one
    (AUROC 0); seen and unseen are each scored against the normals."""
    from types import SimpleNamespace

    from bgad_lite.evaluate import level_image_aurocs

    types = np.array(["good", "good", "hole", "crack"])  # hole seen, crack unseen
    prep = SimpleNamespace(image_hw=(8, 8), test_labels=np.array([0, 0, 1, 1]), test_types=types,
                           split=SimpleNamespace(seen_types=("hole",)))
    low = torch.tensor([0.0, 0.0, -3.0, -2.0])[:, None, None]  # (N, 1, 1): one value per image
    level0 = torch.zeros(4, 2, 2) + low  # anomalies less likely
    level1 = torch.zeros(4, 4, 4) - low  # normals less likely
    out = level_image_aurocs([level0, level1], [0.0, 0.0], prep)
    assert out == [{"all": 1.0, "seen": 1.0, "unseen": 1.0}, {"all": 0.0, "seen": 0.0, "unseen": 0.0}]


def test_nats_rank_one_level_far_out_above_two_just_out():
    """Image 2 (anomalous) is 6 nats out at one level, image 1 (normal) 1 nat out at both: the score
    (deficits in nats) counts 6 against 2 and ranks them right (AUROC 1); the paper's likelihood sum
    counts 0.998 against 1.26 and ranks that normal one higher (AUROC 0.5: one of the two normals above)."""
    from types import SimpleNamespace

    from bgad_lite.evaluate import likelihood_sum_aurocs
    from bgad_lite.metrics import image_auroc
    from bgad_lite.scoring import SCORE_TOP

    prep = SimpleNamespace(image_hw=(4, 4), test_labels=np.array([0, 0, 1]),
                           test_types=np.array(["good", "good", "hole"]), split=SimpleNamespace(seen_types=("hole",)))
    lp0 = torch.tensor([0.0, -1.0, -6.0])[:, None, None].expand(3, 2, 2).clone()  # (N, 2, 2)
    lp1 = torch.tensor([0.0, -1.0, 0.0])[:, None, None].expand(3, 2, 2).clone()
    scores = image_scores(anomaly_maps([lp0, lp1], (4, 4), [0.0, 0.0]), SCORE_TOP)
    np.testing.assert_allclose(scores, [0.0, 2.0, 6.0], atol=1e-6)
    assert image_auroc(scores, prep.test_labels) == 1.0
    paper = image_scores(likelihood_maps([lp0, lp1], (4, 4), [0.0, 0.0]), SCORE_TOP)
    assert paper[1] > paper[2]  # 2 − 2e⁻¹ = 1.26 against 2 − e⁻⁶ − 1 = 0.998
    assert likelihood_sum_aurocs([lp0, lp1], [0.0, 0.0], prep) == {"all": 0.5, "seen": 0.5}
