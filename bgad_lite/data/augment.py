"""Training anomalies for phase 2: BGAD's "repeated utilization" of the k labelled anomalies.

:func:`synthesise_anomalies` turns the k labelled anomalies into phase 2's anomaly set:
the labelled images, their horizontal flips (:func:`flip_augment`) and
``n_cutpaste`` RandAugmented CutPastes (:func:`cutpaste`) of their defects onto
normal training images. Every image keeps a pixel mask, from which each level's
fiber labels are made (:func:`bgad_lite.flow.fiber_labels`).
"""

from __future__ import annotations

import logging

import numpy as np

from ..config import BGADError

log = logging.getLogger(__name__)



def synthesise_anomalies(train_images: np.ndarray, labelled_images: np.ndarray, labelled_masks: np.ndarray,
                         n_cutpaste: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """"Repeated utilization" of the k labelled anomalies: the images, their horizontal flips and
    ``n_cutpaste`` RandAugmented CutPastes of their defects onto normal images (drawn from a
    generator seeded with ``seed``) -> (images, masks, kind of each: "labelled" | "flip" | "cutpaste")."""
    rng = np.random.default_rng(seed)
    fi, fm = flip_augment(labelled_images, labelled_masks)
    images, masks = [labelled_images, fi], [labelled_masks, fm]
    kinds = ["labelled"] * len(labelled_images) + ["flip"] * len(fi)
    cp_i, cp_m = [], []
    # A tiny defect can vanish when its mask is resized (nearest neighbour): such an anomaly
    # still counts as labelled, but has nothing to cut.
    sources = np.flatnonzero(labelled_masks.reshape(len(labelled_masks), -1).any(1))
    if n_cutpaste and not len(sources):
        log.warning("no labelled anomaly has a non-empty mask at %d x %d px: no CutPaste images",
                    *labelled_masks.shape[1:])
    for _ in range(n_cutpaste if len(sources) else 0):
        a = sources[rng.integers(len(sources))]
        n = rng.integers(len(train_images))
        img, m = cutpaste(train_images[n], labelled_images[a], labelled_masks[a], rng)
        cp_i.append(img)
        cp_m.append(m)
    if cp_i:
        images.append(np.stack(cp_i))
        masks.append(np.stack(cp_m))
        kinds += ["cutpaste"] * len(cp_i)
    return np.concatenate(images).astype(np.float32), np.concatenate(masks).astype(bool), kinds


# ---------------------------------------------------------------------------
# Augmentations of labelled anomalies
# ---------------------------------------------------------------------------


def _check_image_and_mask(name: str, image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise BGADError(f"cutpaste: {name} image must have shape (H, W, 3), got {image.shape}.")
    if mask.shape != image.shape[:2]:
        raise BGADError(f"cutpaste: {name} mask has shape {mask.shape} but its image is {image.shape[:2]}.")


def cutpaste(
    normal: np.ndarray, anomaly: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """RandAugmented CutPaste: paste an augmented real defect onto a normal image.

    The bounding box of ``mask`` is cut from ``anomaly``; image and mask are
    mirrored and rotated by a random multiple of 90 degrees together, the
    image part gets a small brightness/contrast jitter, and the piece is
    pasted at a random place of ``normal``, replacing only the pixels where
    the (augmented) mask is True. BGAD's code applies RandAugment to the
    piece; this is the simple, explicit version of that idea.

    Args:
        normal: float ``(H, W, 3)`` normal image in [0, 1].
        anomaly: float ``(H, W, 3)`` anomalous image in [0, 1].
        mask: bool ``(H, W)`` mask of the anomaly; must not be empty.
        rng: the random generator.

    Returns:
        ``(image, mask)``: float32 ``(H, W, 3)`` and bool ``(H, W)``; the mask is
        non-empty and outside it the image equals ``normal``. The inputs are
        not modified.

    Raises:
        BGADError: shapes do not match, or the mask is empty.
    """
    normal = np.asarray(normal)
    anomaly = np.asarray(anomaly)
    mask = np.asarray(mask).astype(bool)
    _check_image_and_mask("normal", normal, normal[..., 0])
    _check_image_and_mask("anomaly", anomaly, mask)
    if normal.shape != anomaly.shape:
        raise BGADError(f"cutpaste: normal image {normal.shape} and anomaly image {anomaly.shape} differ in shape.")
    if not mask.any():
        raise BGADError("cutpaste: the anomaly mask is empty; pass an anomaly with a non-empty mask.")

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    piece = anomaly[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    piece_mask = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    if rng.random() < 0.5:
        piece, piece_mask = piece[:, ::-1], piece_mask[:, ::-1]
    if rng.random() < 0.5:
        piece, piece_mask = piece[::-1], piece_mask[::-1]
    height, width = normal.shape[:2]
    fitting = [k for k in range(4) if _fits(piece.shape[:2], k, (height, width))]
    k = fitting[int(rng.integers(len(fitting)))]
    piece, piece_mask = np.rot90(piece, k), np.rot90(piece_mask, k)

    contrast = rng.uniform(0.9, 1.1)
    brightness = rng.uniform(-0.05, 0.05)
    mean = float(piece[piece_mask].mean())
    piece = np.clip((piece - mean) * contrast + mean + brightness, 0.0, 1.0)

    ph, pw = piece_mask.shape
    top = int(rng.integers(0, height - ph + 1))
    left = int(rng.integers(0, width - pw + 1))
    out = normal.astype(np.float32, copy=True)
    new_mask = np.zeros((height, width), dtype=bool)
    window = out[top : top + ph, left : left + pw]
    window[piece_mask] = piece[piece_mask]
    new_mask[top : top + ph, left : left + pw] = piece_mask
    return out, new_mask


def _fits(shape_hw: tuple[int, int], k: int, bounds_hw: tuple[int, int]) -> bool:
    """Whether a ``shape_hw`` piece rotated by ``k`` quarter turns fits in ``bounds_hw``."""
    h, w = shape_hw if k % 2 == 0 else shape_hw[::-1]
    return h <= bounds_hw[0] and w <= bounds_hw[1]


def flip_augment(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontally mirrored copies of labelled anomalies ("repeated utilization").

    Args:
        images: ``(N, H, W, C)`` array.
        masks: ``(N, H, W)`` array.

    Returns:
        Only the mirrored copies, ``(images, masks)`` with the input shapes
        and dtypes; concatenate them with the originals yourself.

    Raises:
        BGADError: the shapes do not fit together.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if images.ndim != 4 or masks.ndim != 3 or images.shape[:3] != masks.shape:
        raise BGADError(
            f"flip_augment needs images (N, H, W, C) and masks (N, H, W) with equal N, H, W; "
            f"got {images.shape} and {masks.shape}."
        )
    return np.ascontiguousarray(images[:, :, ::-1]), np.ascontiguousarray(masks[:, :, ::-1])
