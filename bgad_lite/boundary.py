"""Step 3 — the explicit boundary, defined by the normal data alone.

With l = logp / N (N: the normalizer, 10), sort the log-likelihoods of the
n_normal normal fibers in ascending order and take

    b_n = l_(⌊β·n_normal⌋)      (the β-quantile: a fraction β of normals lie below)
    b_a = b_n − τ               (the anomaly boundary, a margin τ below)

Only normals decide where the boundary lies; the few anomalies never move it.
That is what keeps BGAD from being biased towards the anomaly types it saw.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import BGADError


def compute_boundaries(logp: torch.Tensor, is_anomaly: torch.Tensor | None = None, beta: float = 0.01,
                       tau: float = 0.1, normalizer: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(b_n, b_a) from the normal entries of ``logp`` (per-dimension log-likelihoods).

    logp (M,), is_anomaly (M,) bool or None (every entry normal) -> two scalar tensors (detached).
    The defaults of β, τ and N are the paper's (and :class:`~bgad_lite.config.BGADConfig`'s).
    """
    if not 0.0 < beta < 1.0:
        raise BGADError(f"beta must lie in (0, 1), got {beta}.")
    if not tau > 0.0:
        raise BGADError(f"tau must be > 0, got {tau}.")
    normal = logp.detach() if is_anomaly is None else logp.detach()[~is_anomaly.bool()]  # (n_normal,)
    if normal.numel() == 0:
        raise BGADError("the boundary needs normal log-likelihoods, but every entry is anomalous.")
    # ⌊β·n_normal⌋; the epsilon keeps e.g. 0.29·100 = 28.999999999999996 at 29
    idx = min(int(beta * normal.numel() + 1e-9), normal.numel() - 1)
    b_n = torch.sort(normal).values[idx] / normalizer
    return b_n, b_n - tau


def boundaries_from_normals(normal_logp, beta: float = 0.01, tau: float = 0.1,
                            normalizer: float = 10.0) -> tuple[float, float]:
    """(b_n, b_a) of one level from the logp of its normal training fibers: the fixed boundary.

    ``normal_logp``: any shape, e.g. (n_train, H, W); a tensor as it is, anything else in float64.
    Pass l = logp / N with ``normalizer=1``. Every entry counts as normal
    (:func:`compute_boundaries` with no anomalies); returns Python floats.
    """
    if not isinstance(normal_logp, torch.Tensor):
        normal_logp = torch.from_numpy(np.asarray(normal_logp, dtype=np.float64))
    b_n, b_a = compute_boundaries(normal_logp.reshape(-1), None, beta, tau, normalizer)
    return float(b_n), float(b_a)
