"""Step 8 — an operating point chosen from normal images only.

A detector on a production line needs a threshold t on the image score, and it must be set
before any defect has been seen: from normal images alone, at a stated false-alarm rate α
(:data:`FALSE_ALARMS`, 1 % of normal images).

The training normals cannot set it: the flows (and the per-position reference m_j) were fitted
to them, so their scores are lower than those of new normals and a threshold at their
(1 − α)-quantile raises more false alarms than α. So :func:`calibration_split` holds out a share
(:data:`CALIBRATION`) of the normal training images from every fit; the model scores them
like test images, and t is their (1 − α)-quantile (:func:`normal_threshold`), rounded up to an
observed score. With n held-out normals and n·α < 1 that is the highest of them.

Then, at t, a run reports the false-alarm rate on the test normals and the recall on the seen and on
the unseen defect types (:func:`bgad_lite.explore.margins.rates_at`). No test label reaches t.

The official code reports an F1-optimal threshold chosen on the test set itself; that threshold
uses the labels it is judged on and cannot be set on a line (``docs/design.md``).
"""

from __future__ import annotations

import numpy as np

from .config import BGADError

#: α, the share of normal images allowed above the threshold
FALSE_ALARMS = 0.01
#: the share of the normal training images held out of every fit to set the threshold
#: (measured: ``docs/experiments.md``, 2026-12-04)
CALIBRATION = 0.2
#: fewer training images than this left after the hold-out: nothing is held out
MIN_FIT = 4


def calibration_split(n_images: int, seed: int, share: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, calibration) of ``n_images`` normal training images: round(share · n) of them
    (``share`` default :data:`CALIBRATION`), drawn under ``seed``, are held out for the threshold;
    both index arrays sorted. Too few images to spare one and keep :data:`MIN_FIT`: none is held
    out (the threshold then comes from the training normals, and :func:`bgad_lite.evaluate.evaluate`
    says it is optimistic)."""
    share = CALIBRATION if share is None else share
    if not 0.0 <= share < 1.0:
        raise BGADError(f"the held-out share must lie in [0, 1), got {share}.")
    n_cal = int(round(share * n_images))
    if n_cal < 1 or n_images - n_cal < MIN_FIT:
        n_cal = 0
    order = np.random.default_rng(seed).permutation(n_images)
    return np.sort(order[n_cal:]), np.sort(order[:n_cal])


def normal_threshold(normal_scores: np.ndarray, false_alarms: float = FALSE_ALARMS) -> float:
    """t: just above the (1 − α)-quantile of normal images' scores, rounded up to an observed
    score (``method="higher"``): an image is flagged when its score is ≥ t, so at most a share α
    of these normals is flagged."""
    s = np.asarray(normal_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise BGADError("a threshold needs the scores of at least one normal image.")
    if not 0.0 <= false_alarms < 1.0:
        raise BGADError(f"the false-alarm rate must lie in [0, 1), got {false_alarms}.")
    return float(np.nextafter(np.quantile(s, 1.0 - false_alarms, method="higher"), np.inf))
