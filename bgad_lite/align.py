"""Step 1b (``align_positions``) — aligning positions before the flows, where they differ.

On an aligned object (a ball screw photographed the same way every time) every
position (h, w) has its own appearance: its fibers follow their own Gaussian
N(μ(h, w), Σ(h, w)). A per-position Gaussian (:mod:`bgad_lite.gaussian`) has
each of them by construction; the flow is one network for all positions and
must learn them from the positional condition. Alignment hands them to the flow:
it maps each position's Gaussian onto the pooled one before the flow sees a fiber,

    x' = A(h, w)·(x − μ̃(h, w)) + μ̄,     A(h, w) = L̄·L(h, w)⁻¹,

with L(h, w) L(h, w)ᵀ = Σ̃(h, w) and L̄ L̄ᵀ = Σ̄ (Cholesky factors; μ̄, Σ̄ are the
mean and the pooled within-position covariance of all training fibers). The
per-position estimates are shrunk toward the pooled ones with one intensity α:

    Σ̃(h, w) = (1 − α)·Σ_LW(h, w) + α·Σ̄,     μ̃(h, w) = (1 − α)·μ(h, w) + α·μ̄,

Σ_LW the Ledoit–Wolf covariance of the position. α comes from the data
(Schäfer & Strimmer, 2005, with the pooled covariance as the target):

    α = Σ_{h,w,i,j} Var̂(s_ij(h, w)) / Σ_{h,w,i,j} (s_ij(h, w) − Σ̄_ij)²,   clipped to [0, 1],

the sampling noise of the per-position covariances s(h, w) over their spread
around the pooled one. Where positions look alike (a texture) the spread is
mostly noise, α is near 1 and the map is nearly the identity (exactly at α = 1);
where they differ (the ball screw: α ≈ 0.06) each position is moved onto the pool.

Which levels are aligned (``cfg.align_positions``): ``"auto"`` (the default) aligns a
level when both

- α < 1/2 (:data:`AUTO_BELOW`): the per-position estimate outweighs the pooled one, because
  the positions differ by more than sampling noise explains; and
- C ≤ n/4 (:data:`AUTO_MAX_RATIO`), n the training images (fibers per position): A(h, w)
  contains L(h, w)⁻¹, a whitening by a covariance estimated from n samples in C dimensions,
  and its smallest sample eigenvalues fall to about (1 − √(C/n))² of the true ones
  (Marchenko–Pastur): a quarter at C = n/4, a sixteenth at the ball screw's level 2
  (C = 112, n = 200), where aligning stopped phase 2 from pushing the labelled fibers below b_a.

The textures (α 0.7–0.9) stay as they are; the ball screw (α ≈ 0.06) is aligned at levels 0
and 1. ``"on"`` aligns every level, ``"off"`` none.

The flow then models the aligned fiber: its logp is the density of x', which is
the density of the raw fiber plus the constant log|det A(h, w)| of the position.
A constant per position drops out of the score (``scoring``: m_j(h, w) is a
per-position mean), and leaving it out keeps one b_n meaningful at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import BGADError
from .gaussian import centred_sets, check_fitted_shape, fibers_by_position, ledoit_wolf, samples_by_position

#: ``"auto"`` aligns a level whose shrinkage intensity α is below this: the per-position
#: estimates then carry more weight than the pooled one.
AUTO_BELOW = 0.5
#: ... and whose channels C are at most this fraction of the training images n (see above).
AUTO_MAX_RATIO = 0.25


@dataclass
class LevelAlignment:
    """The affine map of one level, x' = A(h, w)·(x − μ̃(h, w)) + μ̄, at every position
    (``active`` False: the level is left as it is, only its α is kept)."""

    center: torch.Tensor | None  # (H·W, C) μ̃(h, w)
    matrix: torch.Tensor | None  # (H·W, C, C) A(h, w)
    mean: torch.Tensor  # (C,) μ̄
    alpha: float  # shrinkage toward the pooled Gaussian
    height: int
    width: int
    active: bool = True


def pooled_shrinkage(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """α and the pooled covariance Σ̄ of B sample sets, x (B, n, C) -> (α, Σ̄ (C, C)).

    With x_k the centred samples of one set, w_kij = x_ki·x_kj, s_ij = Σ_k w_kij / (n − 1) and
    Var̂(s_ij) = n / (n − 1)³ · Σ_k (w_kij − w̄_ij)² (Schäfer & Strimmer's unbiased estimate);
    Σ̄ is the mean of the B matrices s. Σ_k (w_kij − w̄_ij)² = Σ_k x_ki²·x_kj² − n·w̄_ij² keeps the
    memory at (B, C, C).
    """
    xc = centred_sets(x, "pooled_shrinkage")  # (B, n, C)
    b, n, c = xc.shape
    s = xc.transpose(1, 2) @ xc / (n - 1)  # (B, C, C)
    pooled = s.mean(0)  # (C, C)
    sq = xc ** 2
    w_bar = s * (n - 1) / n  # (B, C, C) the mean of w_kij over k
    var = n / (n - 1) ** 3 * (sq.transpose(1, 2) @ sq - n * w_bar ** 2)  # (B, C, C) Var̂(s_ij)
    spread = float(((s - pooled) ** 2).sum())
    alpha = 1.0 if spread == 0.0 else min(1.0, max(0.0, float(var.sum()) / spread))
    return alpha, pooled


def fit_level(features: torch.Tensor, alpha: float | None = None, mode: str = "on") -> LevelAlignment:
    """The alignment of one level from the normal training features (N, C, H, W).

    ``alpha``: None estimates it (:func:`pooled_shrinkage`); a number in [0, 1] imposes it.
    ``mode="auto"``: the level is left as it is (``active=False``) unless α < :data:`AUTO_BELOW`
    and C ≤ :data:`AUTO_MAX_RATIO` · N.
    """
    if mode not in ("on", "auto"):
        raise BGADError(f"mode must be 'on' or 'auto', got {mode!r}.")
    n, c, h, w = features.shape
    x = samples_by_position(features)  # (N, C, H, W) -> (H·W, N, C)
    a_hat, pooled = pooled_shrinkage(x)
    if alpha is None:
        alpha = a_hat
    elif not 0.0 <= alpha <= 1.0:
        raise BGADError(f"alpha must lie in [0, 1], got {alpha}.")
    if mode == "auto" and (alpha >= AUTO_BELOW or c > AUTO_MAX_RATIO * n):
        return LevelAlignment(None, None, x.mean((0, 1)), alpha, h, w, active=False)
    pooled = pooled + 1e-9 * float(pooled.trace()) / c * torch.eye(c, dtype=torch.float64)  # PD with few fibers
    mu = x.mean(1)  # (H·W, C) μ(h, w)
    mean = mu.mean(0)  # (C,) μ̄
    lw, _ = ledoit_wolf(x)  # (H·W, C, C)
    eye = torch.eye(c, dtype=torch.float64)
    try:
        l_bar = torch.linalg.cholesky(pooled)
        l_pos = torch.linalg.cholesky((1 - alpha) * lw + alpha * pooled)  # (H·W, C, C)
    except RuntimeError:  # torch.linalg.LinAlgError: a channel without variance
        raise BGADError("aligning positions failed: the training features have a channel without variance. "
                        "Use more training images or set align_positions=False.") from None
    matrix = l_bar @ torch.linalg.solve_triangular(l_pos, eye.expand(h * w, c, c), upper=False)  # L̄·L⁻¹
    center = (1 - alpha) * mu + alpha * mean
    return LevelAlignment(center, matrix, mean, alpha, h, w)


def apply_level(level: LevelAlignment, features: torch.Tensor) -> torch.Tensor:
    """x' = A(h, w)·(x − μ̃(h, w)) + μ̄ for every fiber: (N, C, H, W) -> (N, C, H, W) float32."""
    if not level.active:  # left as it is, once its shape is checked
        check_fitted_shape(features, level.mean.shape[0], level.height, level.width)
        return features
    n, c, h, w = features.shape
    x = fibers_by_position(features, level.mean.shape[0], level.height, level.width)  # (H·W, C, N)
    y = level.matrix @ (x - level.center[:, :, None]) + level.mean[None, :, None]  # (H·W, C, N)
    return y.reshape(h, w, c, n).permute(3, 2, 0, 1).float().contiguous()  # -> (N, C, H, W)


def fit(train_features: list[torch.Tensor], alpha: float | None = None, mode: str = "on") -> list[LevelAlignment]:
    """One :class:`LevelAlignment` per level, from the normal training features (``mode``: see
    :func:`fit_level`)."""
    return [fit_level(f, alpha, mode) for f in train_features]


def apply(alignment: list[LevelAlignment], features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Align the features of every level: J x (N, C_j, H_j, W_j) -> the same shapes."""
    if len(alignment) != len(features):
        raise BGADError(f"got {len(features)} feature levels, the alignment has {len(alignment)}.")
    return [apply_level(a, f) for a, f in zip(alignment, features)]
