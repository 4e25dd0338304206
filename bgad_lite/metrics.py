"""Evaluation metrics for anomaly detection: image AUROC, pixel AUROC, AUPRO.

All functions take NumPy arrays (anything ``np.asarray`` accepts) and return a
plain ``float``. Higher scores mean "more anomalous"; in labels and masks
1 / True means anomalous and 0 / False means normal.

* ``image_auroc`` -- one score per image. The area under the ROC curve is the
  probability that a randomly drawn anomalous image scores higher than a
  randomly drawn normal one (ties count one half). It measures detection:
  "is something wrong with this image?".
* ``pixel_auroc`` -- the same AUROC, but over every pixel of every image,
  pooled. It measures segmentation, but each *pixel* counts once, so one large
  defect outweighs many small ones: a map that finds a big stain and misses
  every scratch can still reach a high pixel AUROC.
* ``aupro`` -- the MVTec AD "area under the per-region-overlap curve". Every
  connected component of a ground-truth mask is a *region*, and each region
  counts equally, whatever its size: at a threshold, PRO is the mean over all
  regions of the fraction of the region that is flagged. PRO is plotted
  against the false positive rate on normal pixels and integrated only over
  the low-FPR part (by default FPR <= 0.3), where a usable detector must work.
  This is why AUPRO matters: small defects count as much as large ones, and a
  map that only finds the big defects is penalised.
The tests check :func:`aupro` against a slow, literal implementation of the same
definition (``tests/oracles.py``).

Every function raises :class:`bgad_lite.config.BGADError` (a ``ValueError``)
with a message that says what is wrong and what to do.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from .config import BGADError

__all__ = ["image_auroc", "pixel_auroc", "aupro"]


# ---------------------------------------------------------------------------
# input checks (shared)
# ---------------------------------------------------------------------------


def _check_same_shape(scores: np.ndarray, truth: np.ndarray, score_name: str, truth_name: str) -> None:
    if scores.shape != truth.shape:
        raise BGADError(
            f"{score_name} has shape {scores.shape} but {truth_name} has shape {truth.shape}; "
            f"they must match element for element (one score per label / per mask pixel)."
        )


def _check_finite(scores: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(scores)):
        raise BGADError(
            f"{name} contains NaN or infinite values; check the model output "
            f"(e.g. a diverged flow) before computing metrics."
        )


def _check_both_classes(truth: np.ndarray, what: str) -> None:
    """Raise unless ``truth`` (bool) holds at least one True and one False."""
    if not truth.any():
        raise BGADError(
            f"{what} contain no anomalous (1) entry, so the metric is undefined; "
            f"evaluate on a set that includes at least one anomalous sample/pixel."
        )
    if truth.all():
        raise BGADError(
            f"{what} contain no normal (0) entry, so the metric is undefined; "
            f"evaluate on a set that includes at least one normal sample/pixel."
        )


def _check_maps_and_masks(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (maps as float64 (N, H, W), masks as bool (N, H, W)) after checking them."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks) != 0
    _check_same_shape(maps, masks, "maps", "masks")
    if maps.ndim != 3:
        raise BGADError(
            f"maps and masks must have shape (N, H, W), got {maps.shape}; "
            f"add a leading axis for a single image (maps[None])."
        )
    _check_finite(maps, "maps")
    _check_both_classes(masks, "masks")
    return maps, masks


def _check_fpr_limit(fpr_limit: float) -> float:
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise BGADError(f"fpr_limit must lie in (0, 1], got {fpr_limit}; MVTec AD uses 0.3.")
    return fpr_limit


# ---------------------------------------------------------------------------
# AUROC
# ---------------------------------------------------------------------------


def _auroc(scores: ArrayLike, truth: ArrayLike, score_name: str, truth_name: str) -> float:
    """AUROC of every entry of ``scores`` against the same-shaped 0/1 ``truth``, pooled."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth) != 0
    _check_same_shape(scores, truth, score_name, truth_name)
    _check_finite(scores, score_name)
    _check_both_classes(truth, truth_name)
    return float(roc_auc_score(truth.ravel(), scores.ravel()))


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-level AUROC of ``scores`` (N,) against ``labels`` (N,), 1 = anomalous."""
    return _auroc(scores, labels, "scores", "labels")


def pixel_auroc(maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel-level AUROC: every pixel of ``maps`` (N, H, W) against ``masks`` (N, H, W), pooled."""
    return _auroc(maps, masks, "maps", "masks")


# ---------------------------------------------------------------------------
# AUPRO
# ---------------------------------------------------------------------------


def _label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 8-connected components of every mask; labels are unique across images.

    One ``ndimage.label`` call on the whole (N, H, W) stack: the 3x3x3 structure
    has ones only in its middle slice, so pixels connect within an image (3x3
    ones = 8-connectivity) but never across images.
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, n_regions = ndimage.label(masks, structure=structure)
    return labels, int(n_regions)


def normalised_area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Area under the PRO-vs-FPR curve on [0, fpr_limit], divided by fpr_limit.

    ``fpr`` and ``pro`` are the curve's points in order of decreasing threshold:
    they start at (0, 0), ``fpr`` never decreases, and the curve reaches
    FPR >= fpr_limit at its last point. Several points may share an FPR (a
    vertical step). Points up to FPR = fpr_limit are kept; if no point lies
    exactly there, PRO at fpr_limit is interpolated linearly between the last
    point below and the first point above. The area is the trapezoid rule.
    """
    n_inside = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit
    x = fpr[:n_inside]
    y = pro[:n_inside]
    if x[-1] < fpr_limit:  # the next point lies beyond the limit: interpolate
        x0, y0 = fpr[n_inside - 1], pro[n_inside - 1]
        x1, y1 = fpr[n_inside], pro[n_inside]
        y_at_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x = np.append(x, fpr_limit)
        y = np.append(y, y_at_limit)
    area = np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)
    return float(area / fpr_limit)


def aupro(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap (PRO) curve, up to ``fpr_limit``.

    The MVTec AD segmentation metric. The regions are the connected components
    (8-connectivity) of every ground-truth mask. A pixel is flagged at
    threshold t when its score is >= t. At each t:

    * PRO(t) is the mean, over all regions of all images, of the fraction of
      the region that is flagged -- every defect counts equally, however small;
    * FPR(t) is the fraction of normal pixels (mask == 0, over all images) that
      are flagged.

    Lowering t from +inf to the smallest score traces a curve from (0, 0) to
    (1, 1). Its area over FPR in [0, fpr_limit] (trapezoid rule, PRO linearly
    interpolated at FPR = fpr_limit) divided by fpr_limit is returned: a perfect
    map gives 1.0, a random map about fpr_limit / 2.

    This implementation is exact: every distinct score value is a threshold.
    The official MVTec AD / BGAD evaluation code instead samples 1000
    thresholds and runs ``skimage.measure.regionprops`` in a Python loop for
    each one, so it is both approximate and slow. Here everything is one sort
    and a few cumulative sums:

    1. sort all pixels by score, descending;
    2. give each region pixel the weight 1 / (|region| * n_regions), so the
       running sum of weights is PRO, and count normal pixels, so the running
       count / n_normal is FPR;
    3. of each run of equal scores keep only the last index, so tied pixels
       enter the curve together (a threshold cannot separate them).

    Args:
        maps: (N, H, W) anomaly scores, higher = more anomalous.
        masks: (N, H, W) ground truth, nonzero / True = anomalous. Images
            without any anomaly are allowed (they contribute normal pixels).
        fpr_limit: upper end of the FPR integration range, in (0, 1].

    Raises:
        BGADError: mismatched shapes, not (N, H, W), non-finite scores, no
            anomalous pixel, no normal pixel, or fpr_limit outside (0, 1].
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    maps, masks = _check_maps_and_masks(maps, masks)
    labels, n_regions = _label_regions(masks)

    scores = maps.ravel()
    labels = labels.ravel()
    is_normal = labels == 0
    n_normal = int(np.count_nonzero(is_normal))
    region_size = np.bincount(labels)  # region_size[0] counts the normal pixels (unused)

    # Only the curve up to the first point past fpr_limit matters. Every threshold above the
    # (k+1)-th highest normal score, k = floor(fpr_limit * n_normal), flags at most k normal
    # pixels (FPR <= limit), and that score itself flags k+1 (FPR > limit): pixels scoring
    # below it never change the area. np.partition finds it in O(n); the sort sees the rest.
    k = int(np.floor(fpr_limit * n_normal))
    if k < n_normal:
        normal_scores = scores[is_normal]
        cut = np.partition(normal_scores, n_normal - k - 1)[n_normal - k - 1]
        keep = scores >= cut
        scores, labels, is_normal = scores[keep], labels[keep], is_normal[keep]
    pro_weight = np.where(is_normal, 0.0, 1.0 / (region_size[labels] * n_regions))

    order = np.argsort(-scores)  # descending score; ties are grouped below, so no stable sort is needed
    sorted_scores = scores[order]
    pro = np.cumsum(pro_weight[order])
    # FPR from an integer count (equivalent to summing weights 1 / n_normal,
    # but exact, so comparisons with fpr_limit do not suffer rounding).
    fpr = np.cumsum(is_normal[order]) / n_normal

    last_of_run = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    fpr = np.concatenate(([0.0], fpr[last_of_run]))
    pro = np.concatenate(([0.0], pro[last_of_run]))
    return normalised_area(fpr, pro, fpr_limit)
