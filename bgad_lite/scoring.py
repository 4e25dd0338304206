"""Step 6 — from log-likelihoods to anomaly maps and image scores.

Per level l the flow gives logp_l (N, H_l, W_l). BGAD turns it into a likelihood
map p_l = exp(logp_l − m_l), upsamples it bilinearly to the image size, sums the
levels into S = Σ_l p_l, and calls A = max(S) − S the anomaly map; the image
score is the maximum of its map.

Where m_l and max(S) come from is the difference between a paper and a product:

- ``"test"`` (the paper's code): m_l is the maximum logp over the *whole test
  set* and A = max_test(S) − S. A score then depends on which other images are
  being tested, and a single image cannot be scored.
- ``"train"`` (default, deployable): m_l is the maximum logp over the normal
  *training* fibers, saved with the model, and A = L − S (L levels: the value S
  would take if every level sat at its training maximum). A score depends on
  the image alone.

Both are monotone in each level's logp; they rank images differently only
through how the levels are weighted (m_l).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import BGADError
from .flow import flow_logp


def level_logps(flows, features: list[torch.Tensor], pos: list[torch.Tensor],
                device: str = "cpu") -> list[torch.Tensor]:
    """Per-dimension logp of every fiber of every level: L tensors (N, H_l, W_l)."""
    return [flow_logp(f, x, p, device=device) for f, x, p in zip(flows, features, pos)]


def normalisation_stats(train_logps: list[torch.Tensor]) -> list[float]:
    """m_l: the maximum logp of each level over the normal training fibers."""
    return [float(t.max()) for t in train_logps]


def anomaly_maps(logps: list[torch.Tensor], image_size: int, level_max: list[float] | None = None) -> np.ndarray:
    """Anomaly maps (N, image_size, image_size) float32 from per-level logps.

    ``level_max``: the saved m_l ("train" normalisation); None = the paper's
    test-set normalisation (needs the whole test set at once).
    """
    if level_max is not None and len(level_max) != len(logps):
        raise BGADError(f"got {len(logps)} levels but {len(level_max)} normalisation values.")
    total = None
    for l, lp in enumerate(logps):
        lp = lp.double()
        m = lp.max() if level_max is None else level_max[l]
        p = torch.exp(lp - m)[:, None]  # (N, 1, H_l, W_l)
        p = F.interpolate(p, size=(image_size, image_size), mode="bilinear", align_corners=False)[:, 0]
        total = p if total is None else total + p  # S, (N, S, S)
    ref = total.max() if level_max is None else float(len(logps))
    return (ref - total).float().numpy()


def image_scores(maps: np.ndarray) -> np.ndarray:
    """Image anomaly score = the maximum of its anomaly map: (N, H, W) -> (N,)."""
    return maps.reshape(len(maps), -1).max(1)
