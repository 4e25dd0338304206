"""Tests for bgad_lite.metrics: AUROCs against sklearn, AUPRO against hand values and the reference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bgad_lite.config import BGADError
from bgad_lite.metrics import aupro, image_auroc, pixel_auroc
from oracles import aupro_reference


def random_blob_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, size, size) bool masks with 0-3 random discs / rectangles each (some images stay normal)."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            cy, cx = rng.integers(0, size, size=2)
            if rng.random() < 0.5:
                r = rng.integers(1, size // 5)
                masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            else:
                h, w = rng.integers(1, size // 4, size=2)
                masks[i, cy : cy + h, cx : cx + w] = True
    masks[0, 2:5, 2:5] = True  # guarantee at least one anomalous region
    return masks


def random_maps(rng: np.random.Generator, masks: np.ndarray, decimals: int | None = 2) -> np.ndarray:
    """Noisy maps that are somewhat higher on the anomalies; rounded to create ties."""
    maps = rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)
    return np.round(maps, decimals) if decimals is not None else maps


# ---------------------------------------------------------------------------
# AUROC
# ---------------------------------------------------------------------------


def test_image_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    scores = np.round(rng.normal(size=200) + 0.5 * labels, 1)  # with ties
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_auroc(scores, labels.astype(bool)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_hand_cases():
    labels = np.array([0, 0, 1, 1])
    assert image_auroc([0.1, 0.2, 0.8, 0.9], labels) == 1.0  # perfect separation
    assert image_auroc([0.9, 0.8, 0.2, 0.1], labels) == 0.0  # reversed
    assert image_auroc([0.5, 0.5, 0.5, 0.5], labels) == 0.5  # all tied
    # one of the 4 (anomalous, normal) pairs is mis-ordered -> 3/4
    assert image_auroc([0.1, 0.6, 0.5, 0.9], labels) == 0.75


def test_pixel_auroc_matches_sklearn():
    rng = np.random.default_rng(1)
    masks = random_blob_masks(rng, 4, 32)
    maps = random_maps(rng, masks)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
    assert pixel_auroc(maps, masks.astype(np.uint8)) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_hand_cases():
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 1, 1] = masks[1, 0, :] = True
    assert pixel_auroc(masks.astype(float), masks) == 1.0
    assert pixel_auroc(1.0 - masks, masks) == 0.0
    assert pixel_auroc(np.ones(masks.shape), masks) == 0.5


# ---------------------------------------------------------------------------
# AUPRO: hand-computed values
# ---------------------------------------------------------------------------


def test_aupro_perfect_map_is_one():
    masks = random_blob_masks(np.random.default_rng(2), 3, 32)
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)
    assert aupro(masks.astype(float), masks, fpr_limit=1.0) == pytest.approx(1.0, abs=1e-12)


def test_aupro_constant_map():
    # Every pixel ties, so there is a single threshold and the curve jumps from
    # (0, 0) straight to (1, 1). Interpolated at FPR = 0.3 it gives PRO = 0.3;
    # area = 0.3 * 0.3 / 2 = 0.045; normalised by 0.3 -> 0.15.
    masks = random_blob_masks(np.random.default_rng(3), 3, 32)
    maps = np.full(masks.shape, 0.7)
    assert aupro(maps, masks) == pytest.approx(0.15, abs=1e-12)
    assert aupro_reference(maps, masks) == pytest.approx(0.15, abs=1e-12)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)


def test_aupro_tiny_hand_case():
    # One 1x8 image. Region A = column 0 (1 pixel), region B = columns 2-4
    # (3 pixels); columns 1, 5, 6, 7 are the 4 normal pixels.
    #   column:  0    1    2    3    4    5    6    7
    #   mask:    A    .    B    B    B    .    .    .
    #   score:  0.9  0.5  0.8  0.4  0.4  0.1  0.2  0.0
    # Thresholds, descending -> (FPR, PRO), PRO = mean(fraction of A, fraction of B):
    #   start      (0,    0)
    #   t = 0.9    (0,    (1 + 0) / 2   = 1/2)
    #   t = 0.8    (0,    (1 + 1/3) / 2 = 2/3)
    #   t = 0.5    (1/4,  2/3)        one normal pixel flagged
    #   t = 0.4    (1/4,  1)          the two tied B pixels enter together
    #   t = 0.2    (1/2,  1)
    #   t = 0.1    (3/4,  1)
    #   t = 0.0    (1,    1)
    # fpr_limit = 0.3: area = 1/4 * 2/3 + (0.3 - 1/4) * 1 = 13/60 (PRO at 0.3 is
    # interpolated between (1/4, 1) and (1/2, 1): 1); normalised: 13/60 / 0.3 = 13/18.
    # fpr_limit = 1.0: area = 1/4 * 2/3 + 3/4 * 1 = 11/12.
    masks = np.array([[[1, 0, 1, 1, 1, 0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.8, 0.4, 0.4, 0.1, 0.2, 0.0]]])
    for fn in (aupro, aupro_reference):
        assert fn(maps, masks) == pytest.approx(13 / 18, abs=1e-12)
        assert fn(maps, masks, fpr_limit=1.0) == pytest.approx(11 / 12, abs=1e-12)
        # fpr_limit exactly on a curve point (no interpolation): area = 1/4 * 2/3 up to the
        # vertical step at FPR 1/4 -> (1/6) / (1/4) = 2/3.
        assert fn(maps, masks, fpr_limit=0.25) == pytest.approx(2 / 3, abs=1e-12)


def test_aupro_diagonal_pixels_are_one_region():
    # 8-connectivity: the two diagonally touching pixels form ONE region.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # one diagonal region of 2 pixels
    masks[0, 3, 3] = True  # a second region of 1 pixel
    maps = np.zeros((1, 4, 4))
    maps[0, 3, 3] = 1.0  # flag only the single-pixel region
    # 2 regions: curve (0,0) -> (0, 1/2) -> (1, 1); PRO(0.3) = 0.5 + 0.5 * 0.3 = 0.65;
    # area = 0.3 * (0.5 + 0.65) / 2; normalised 0.575.
    # (4-connectivity would give 3 regions, PRO 1/3 at FPR 0, and 0.4333 instead.)
    assert aupro(maps, masks) == pytest.approx(0.575, abs=1e-12)
    assert aupro_reference(maps, masks) == pytest.approx(0.575, abs=1e-12)


def test_aupro_regions_count_separately_not_by_pixels():
    # One image with a small region (2x2 = 4 px) and a large one (10x10 = 100 px).
    masks = np.zeros((1, 32, 32), dtype=bool)
    masks[0, 2:4, 2:4] = True
    masks[0, 15:25, 15:25] = True
    # Both maps flag exactly 4 anomalous pixels and nothing else, so their pixel AUROC is equal.
    finds_small = np.zeros(masks.shape)
    finds_small[0, 2:4, 2:4] = 1.0
    finds_part_of_large = np.zeros(masks.shape)
    finds_part_of_large[0, 15:17, 15:17] = 1.0
    assert pixel_auroc(finds_small, masks) == pytest.approx(pixel_auroc(finds_part_of_large, masks))
    # finds_small: curve (0,0) -> (0, 1/2) -> (1, 1); PRO(0.3) = 0.65; normalised area 0.575.
    # finds_part_of_large: (0,0) -> (0, 0.5 * 4/100 = 0.02) -> (1, 1); PRO(0.3) = 0.314;
    #   normalised area (0.02 + 0.314) / 2 = 0.167. A pixel-weighted overlap would score
    #   both maps the same (4 / 104 of the anomalous pixels found).
    assert aupro(finds_small, masks) == pytest.approx(0.575, abs=1e-12)
    assert aupro(finds_part_of_large, masks) == pytest.approx(0.167, abs=1e-12)
    assert aupro_reference(finds_small, masks) == pytest.approx(0.575, abs=1e-12)
    assert aupro_reference(finds_part_of_large, masks) == pytest.approx(0.167, abs=1e-12)


def test_aupro_regions_in_different_images_are_not_merged():
    # Image 0 has a 2x2 region, image 1 a 4x4 region at an overlapping place: a labelling
    # that connected pixels across the image axis would merge them into one 20-pixel region.
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 3:5, 3:5] = True
    masks[1, 2:6, 2:6] = True
    maps = np.zeros(masks.shape)
    maps[0, 3:5, 3:5] = 1.0  # find the region of image 0 only
    # 2 regions: (0,0) -> (0, 1/2) -> (1, 1) -> 0.575.
    # (Merged: PRO 4/20 = 0.2 at FPR 0 -> (0.2 + 0.44) / 2 = 0.32.)
    assert aupro(maps, masks) == pytest.approx(0.575, abs=1e-12)
    assert aupro_reference(maps, masks) == pytest.approx(0.575, abs=1e-12)


# ---------------------------------------------------------------------------
# AUPRO: fast vs reference, properties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_matches_reference_with_ties(seed, fpr_limit):
    rng = np.random.default_rng(seed)
    masks = random_blob_masks(rng, 4, 32)
    maps = random_maps(rng, masks, decimals=2)  # ~160 distinct values: many ties
    assert aupro(maps, masks, fpr_limit) == pytest.approx(aupro_reference(maps, masks, fpr_limit), abs=1e-9)


@pytest.mark.parametrize("seed", [10, 11])
def test_aupro_matches_reference_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    masks = random_blob_masks(rng, 3, 16)
    maps = random_maps(rng, masks, decimals=None)  # every score distinct
    assert aupro(maps, masks) == pytest.approx(aupro_reference(maps, masks), abs=1e-9)


def test_aupro_matches_reference_coarse_ties():
    # Only 3 distinct score values: large tied groups spanning normal and anomalous pixels.
    rng = np.random.default_rng(5)
    masks = random_blob_masks(rng, 4, 32)
    maps = rng.integers(0, 3, size=masks.shape).astype(float) + masks
    for limit in (0.3, 0.9):
        assert aupro(maps, masks, limit) == pytest.approx(aupro_reference(maps, masks, limit), abs=1e-9)


def test_aupro_invariant_to_increasing_transform():
    rng = np.random.default_rng(6)
    masks = random_blob_masks(rng, 4, 32)
    maps = random_maps(rng, masks, decimals=2)
    value = aupro(maps, masks)
    assert 0.15 < value < 1.0  # informative map: better than random
    assert aupro(np.exp(maps), masks) == pytest.approx(value, abs=1e-12)
    assert aupro(3.0 * maps - 7.0, masks) == pytest.approx(value, abs=1e-12)


def test_aupro_random_map_is_about_half_the_limit():
    rng = np.random.default_rng(7)
    masks = random_blob_masks(rng, 20, 64)
    maps = rng.random(masks.shape)  # independent of the masks
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(0.15, abs=0.03)


def test_aupro_accepts_uint8_masks_and_normal_images():
    rng = np.random.default_rng(8)
    masks = random_blob_masks(rng, 3, 32)
    masks[1] = False  # a fully normal image is fine
    maps = random_maps(rng, masks)
    assert aupro(maps, masks.astype(np.uint8) * 255) == pytest.approx(aupro(maps, masks), abs=1e-15)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_one_class_labels_raise():
    with pytest.raises(BGADError, match="no anomalous"):
        image_auroc([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(BGADError, match="no normal"):
        image_auroc([0.1, 0.2, 0.3], [1, 1, 1])
    assert issubclass(BGADError, ValueError)


def test_masks_without_anomalies_or_normals_raise():
    maps = np.random.default_rng(9).random((2, 8, 8))
    for fn in (pixel_auroc, aupro, aupro_reference):
        with pytest.raises(BGADError, match="no anomalous"):
            fn(maps, np.zeros(maps.shape, dtype=bool))
        with pytest.raises(BGADError, match="no normal"):
            fn(maps, np.ones(maps.shape, dtype=bool))


def test_shape_mismatch_raises_and_names_both_shapes():
    maps = np.zeros((2, 8, 8))
    masks = np.zeros((2, 8, 7), dtype=bool)
    masks[0, 0, 0] = True
    for fn in (pixel_auroc, aupro, aupro_reference):
        with pytest.raises(BGADError, match=r"\(2, 8, 8\).*\(2, 8, 7\)"):
            fn(maps, masks)
    with pytest.raises(BGADError, match=r"\(3,\).*\(2,\)"):
        image_auroc([0.1, 0.2, 0.3], [0, 1])


@pytest.mark.parametrize("bad_limit", [0.0, -0.1, 1.5, float("nan")])
def test_bad_fpr_limit_raises(bad_limit):
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    for fn in (aupro, aupro_reference):
        with pytest.raises(BGADError, match="fpr_limit"):
            fn(np.zeros(masks.shape), masks, fpr_limit=bad_limit)


def test_non_finite_scores_and_wrong_ndim_raise():
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    maps = np.zeros(masks.shape)
    maps[0, 1, 1] = np.nan
    with pytest.raises(BGADError, match="NaN"):
        aupro(maps, masks)
    with pytest.raises(BGADError, match=r"\(N, H, W\)"):
        aupro(np.zeros((4, 4)), masks[0])
