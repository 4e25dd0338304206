"""Step 6 — from log-likelihoods to anomaly maps and image scores.

Per level j the flow gives logp_j (n, H_j, W_j), and m_j is a reference logp. The fiber's *deficit*
d_j = m_j − logp_j says how many nats per channel it lies below the reference; p_j = exp(−d_j) =
exp(logp_j − m_j) is its likelihood relative to the reference. Each level is upsampled bilinearly to
the image size and the levels are summed. How they are summed is where bgad-lite differs from the paper:

- the paper's (:func:`likelihood_maps`): the likelihoods are summed, S = Σ_j p_j, and the anomaly map is
  A = max(S) − S. A level contributes at most 1, so a level far below its reference (a pit the
  coarsest level sees clearly) counts no more than one just below it.
- bgad-lite's (:func:`anomaly_maps`, the score): the deficits are summed, A = Σ_j d_j = −log Π_j p_j,
  the negative log of the product of the levels' likelihood ratios: every nat counts, at every level.
  Chosen by accuracy on every data set (``docs/design.md``, "The image score").

Where m_j comes from is the difference between a paper and a product:

- the paper's code (:func:`likelihood_maps` with ``level_ref=None``): m_j is the maximum logp over the
  *whole test set* and A = max_test(S) − S. A score then depends on which other images are being
  tested, and a single image cannot be scored.
- bgad-lite's (a run's, deployable): m_j(h, w) is the *mean training logp at each position*, saved
  with the model (``level_ref``); A is 0 where every level sits at its training mean. A score depends
  on the image alone. The per-position reference also removes a bias that a single global m_j keeps:
  fibers at the image border (zero padding in the CNN) are more varied, so their density is lower
  even on normal images, and with a global reference every border glows. On the embedded grass set
  this lifts the unsupervised image AUROC from about 0.58 to 0.80.

``level_ref`` holds either a number per level or a (H_j, W_j) map per level. The image score is the
mean of the map's highest pixels (:data:`SCORE_TOP`; 0 gives the official maximum).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import BGADError
from .data.images import as_hw
from .flow import flow_logp

#: the image score: the mean of the top 1 % of an anomaly map's pixels (``docs/design.md``)
SCORE_TOP = 0.01


def level_logps(flows, features: list[torch.Tensor], pos: list[torch.Tensor],
                device: str = "cpu") -> list[torch.Tensor]:
    """Per-dimension logp of every fiber of every level: L tensors (N, H_l, W_l)."""
    return [flow_logp(f, x, p, device=device) for f, x, p in zip(flows, features, pos)]


def normalisation_stats(train_logps: list[torch.Tensor]) -> list[torch.Tensor]:
    """m_j(h, w): the mean logp at each position over the normal training images, (H_j, W_j) per level."""
    return [t.double().mean(0) for t in train_logps]


def anomaly_maps(logps: list[torch.Tensor], image_size: int | tuple[int, int], level_ref) -> np.ndarray:
    """bgad-lite's anomaly maps (N, h, w) float32: A = Σ_j up(m_j − logp_j), the levels' deficits in nats.

    ``image_size``: (h, w), or one side. ``level_ref``: the saved m_j, one number or one (H_j, W_j) map
    per level. A level far below its reference counts in full (the paper's sum caps it at 1:
    :func:`likelihood_maps`).
    """
    _check_levels(logps, level_ref)
    return _upsampled_sum([_ref(m) - lp.double() for lp, m in zip(logps, level_ref)], image_size).float().numpy()


def likelihood_maps(logps: list[torch.Tensor], image_size: int | tuple[int, int], level_ref=None) -> np.ndarray:
    """The paper's anomaly maps (N, h, w) float32: S = Σ_j up(exp(logp_j − m_j)), A = max(S) − S.

    ``level_ref=None``: the official code's test-set normalisation, m_j and max(S) over the whole
    batch (it needs the whole test set at once). With the saved m_j instead, max(S) is replaced by
    the number of levels J, the S of an image at its training mean everywhere: A = J − S. Not the
    score (:func:`anomaly_maps`); kept to compare with the paper (notebook 02, ``evaluate``).
    """
    if level_ref is not None:
        _check_levels(logps, level_ref)
    refs = [lp.double().max() for lp in logps] if level_ref is None else level_ref
    total = _upsampled_sum([torch.exp(lp.double() - _ref(m)) for lp, m in zip(logps, refs)], image_size)  # S
    ref = total.max() if level_ref is None else float(len(logps))
    return (ref - total).float().numpy()


def _check_levels(logps: list[torch.Tensor], level_ref) -> None:
    if level_ref is None:
        raise BGADError("anomaly_maps needs level_ref, the reference m_j of each level (evaluate's "
                        "'level_ref', saved with the model); for the official code's test-set "
                        "normalisation call likelihood_maps(logps, image_size).")
    if len(level_ref) != len(logps):
        raise BGADError(f"got {len(logps)} levels but {len(level_ref)} normalisation values.")


def _ref(m) -> torch.Tensor:
    """m_j as float64: a number or an (H_j, W_j) map."""
    return torch.as_tensor(m, dtype=torch.float64)


def _upsampled_sum(level_maps: list[torch.Tensor], image_size: int | tuple[int, int]) -> torch.Tensor:
    """Σ_j up(x_j): J x (N, H_j, W_j) -> (N, h, w), each level upsampled bilinearly to the image size."""
    hw = as_hw(image_size)
    return sum(F.interpolate(x[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]  # (N, h, w)
               for x in level_maps)


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
