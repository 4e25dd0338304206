"""Step 6 — from log-likelihoods to anomaly maps and image scores.

Per level j the flow gives logp_j (n, H_j, W_j). BGAD turns it into a likelihood
map p_j = exp(logp_j − m_j), upsamples it bilinearly to the image size, sums the
levels into S = Σ_l p_l, and calls A = max(S) − S the anomaly map; the image
score is the mean of its highest pixels (:data:`SCORE_TOP`; 0 gives the official maximum).

Where the reference m_j comes from is the difference between a paper and a product:

- the paper's code (``level_ref=None`` here): m_j is the maximum logp over the *whole test
  set* and A = max_test(S) − S. A score then depends on which other images are
  being tested, and a single image cannot be scored.
- bgad-lite's (a run's, deployable): m_j(h, w) is the *mean training logp at
  each position*, saved with the model, and A = J − S (J levels: 0 where every
  level sits at its training mean). A score depends on the image alone. The
  per-position reference also removes a bias that a single global m_j keeps:
  fibers at the image border (zero padding in the CNN) are more varied, so
  their density is lower even on normal images, and with a global reference
  every border glows. On the embedded grass set this lifts the unsupervised
  image AUROC from about 0.58 to 0.80.

``anomaly_maps`` accepts either a number per level or a (H_l, W_l) map per level.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import BGADError
from .data.images import as_hw

#: the image score: the mean of the top 1 % of an anomaly map's pixels (``docs/design.md``)
SCORE_TOP = 0.01
from .flow import flow_logp


def level_logps(flows, features: list[torch.Tensor], pos: list[torch.Tensor],
                device: str = "cpu") -> list[torch.Tensor]:
    """Per-dimension logp of every fiber of every level: L tensors (N, H_l, W_l)."""
    return [flow_logp(f, x, p, device=device) for f, x, p in zip(flows, features, pos)]


def normalisation_stats(train_logps: list[torch.Tensor]) -> list[torch.Tensor]:
    """m_j(h, w): the mean logp at each position over the normal training images, (H_j, W_j) per level."""
    return [t.double().mean(0) for t in train_logps]


def anomaly_maps(logps: list[torch.Tensor], image_size: int | tuple[int, int], level_ref=None) -> np.ndarray:
    """Anomaly maps (N, h, w) float32 from per-level logps; ``image_size``: (h, w), or one side.

    ``level_ref``: the saved m_j, one number or one (H_j, W_j) map per level
    ("train" normalisation); None = the paper's test-set normalisation (needs
    the whole test set at once).
    """
    if level_ref is not None and len(level_ref) != len(logps):
        raise BGADError(f"got {len(logps)} levels but {len(level_ref)} normalisation values.")
    refs = [lp.double().max() for lp in logps] if level_ref is None else level_ref
    total = _upsampled_sum([torch.exp(lp.double() - _ref(m)) for lp, m in zip(logps, refs)], image_size)  # S
    ref = total.max() if level_ref is None else float(len(logps))
    return (ref - total).float().numpy()


def _ref(m) -> torch.Tensor:
    """m_j as float64: a number or an (H_j, W_j) map."""
    return torch.as_tensor(m, dtype=torch.float64)


def _upsampled_sum(level_maps: list[torch.Tensor], image_size: int | tuple[int, int]) -> torch.Tensor:
    """Σ_l up(x_l): J x (N, H_l, W_l) -> (N, h, w), each level upsampled bilinearly to the image size."""
    hw = as_hw(image_size)
    return sum(F.interpolate(x[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]  # (N, h, w)
               for x in level_maps)


def deficit_maps(logps: list[torch.Tensor], image_size: int | tuple[int, int], level_ref) -> np.ndarray:
    """The levels' deficits summed in nats, D = Σ_l up(m_l − logp_l): (N, h, w) float32. Not the score.

    In A = J − Σ_l exp(logp_l − m_l) a level far below its reference counts no more than 1, as much as one
    a few nats below; in D every nat counts. A diagnostic beside A (``evaluate.nats_sum_aurocs``), for a
    choice still open (``docs/experiments.md``, 2026-12-04 evening).
    """
    if len(level_ref) != len(logps):
        raise BGADError(f"got {len(logps)} levels but {len(level_ref)} normalisation values.")
    return _upsampled_sum([_ref(m) - lp.double() for lp, m in zip(logps, level_ref)], image_size).float().numpy()


def image_scores(maps: np.ndarray, top: float = 0.0) -> np.ndarray:
    """Image anomaly score from its anomaly map: (N, H, W) -> (N,).

    ``top = 0``: the maximum of the map. ``top > 0``: the mean of its k = max(1, round(top·H·W))
    highest pixels — a defect raises a patch of the map, while a normal image's maximum is
    often one noisy cell, so the mean of the top 1 % separates them better than the maximum.
    """
    if not 0.0 <= top <= 1.0:
        raise BGADError(f"top must lie in [0, 1] (a fraction of the map's pixels), got {top}.")
    flat = maps.reshape(len(maps), -1)  # (N, H·W)
    if top == 0.0:
        return flat.max(1)
    k = max(1, int(round(top * flat.shape[1])))
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(1)  # the k largest, in any order
