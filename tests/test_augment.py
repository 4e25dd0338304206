"""Tests of bgad_lite.data.augment: CutPaste and flips of the labelled anomalies."""

from __future__ import annotations

import numpy as np
import pytest

from bgad_lite.data.augment import cutpaste, flip_augment
from bgad_lite.config import BGADError


def _pair(h: int = 48, w: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    normal = rng.uniform(0.2, 0.4, (h, w, 3)).astype(np.float32)
    anomaly = rng.uniform(0.2, 0.4, (h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w), dtype=bool)
    mask[5:12, 20:35] = True
    mask[8, 10:20] = True  # an L shape, so flips and rotations matter
    anomaly[mask] = 0.9
    return normal, anomaly, mask


def test_cutpaste() -> None:
    normal, anomaly, mask = _pair()
    copies = [a.copy() for a in (normal, anomaly, mask)]
    for seed in range(20):
        image, new_mask = cutpaste(normal, anomaly, mask, np.random.default_rng(seed))
        assert image.shape == normal.shape and image.dtype == np.float32
        assert new_mask.shape == mask.shape and new_mask.dtype == bool
        assert new_mask.sum() == mask.sum()  # flips and quarter turns keep the area
        assert np.array_equal(image[~new_mask], normal[~new_mask])
        assert np.all(image[new_mask] > 0.7)  # the pasted defect (0.9 +- jitter)
    for a, b in zip((normal, anomaly, mask), copies):
        assert np.array_equal(a, b)  # inputs untouched
    first = cutpaste(normal, anomaly, mask, np.random.default_rng(1))
    again = cutpaste(normal, anomaly, mask, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(first, again))


def test_cutpaste_large_piece_on_non_square_image() -> None:
    normal, anomaly, _ = _pair(h=20, w=60)
    mask = np.zeros((20, 60), dtype=bool)
    mask[2:5, 0:50] = True  # 3 x 50: cannot be turned by 90 degrees in a 20 x 60 image
    for seed in range(10):
        _, new_mask = cutpaste(normal, anomaly, mask, np.random.default_rng(seed))
        assert new_mask.sum() == mask.sum()


def test_cutpaste_errors() -> None:
    normal, anomaly, mask = _pair()
    rng = np.random.default_rng(0)
    with pytest.raises(BGADError, match="mask is empty"):
        cutpaste(normal, anomaly, np.zeros_like(mask), rng)
    with pytest.raises(BGADError, match="differ in shape"):
        cutpaste(normal[:40], anomaly, mask, rng)
    with pytest.raises(BGADError, match="anomaly mask has shape"):
        cutpaste(normal, anomaly, mask[:, :30], rng)
    with pytest.raises(BGADError, match=r"must have shape \(H, W, 3\)"):
        cutpaste(normal[..., 0], anomaly, mask, rng)


def test_flip_augment() -> None:
    normal, anomaly, mask = _pair()
    images = np.stack([normal, anomaly])
    masks = np.stack([np.zeros_like(mask), mask])
    flipped, flipped_masks = flip_augment(images, masks)
    assert flipped.shape == images.shape and flipped_masks.dtype == bool
    assert np.array_equal(flipped[1, :, 0], anomaly[:, -1])
    assert np.array_equal(flipped_masks[1], mask[:, ::-1])
    twice = flip_augment(flipped, flipped_masks)
    assert np.array_equal(twice[0], images) and np.array_equal(twice[1], masks)
    with pytest.raises(BGADError, match="flip_augment needs"):
        flip_augment(images, masks[:1])
