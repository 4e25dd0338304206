"""The reference a flow must beat — one Gaussian per feature position (PaDiM-style).

For every level and every position (h, w), the fibers of the N normal training
images give a mean μ(h, w) and a covariance Σ(h, w) (C × C). With N ≈ 100 images
and C up to 112 channels the sample covariance S is singular or nearly so, so it
is *shrunk* towards a multiple of the identity (Ledoit & Wolf, 2004):

    Σ = (1 − α)·S + α·(tr S / C)·I,     α ∈ [0, 1] chosen from the data,

exactly as ``sklearn.covariance.LedoitWolf`` does, for all positions at once.
A fiber x is scored by its Mahalanobis distance d² = (x − μ)ᵀ Σ⁻¹ (x − μ), written
as a per-dimension Gaussian log-likelihood so that the same scoring as the flows'
(``scoring.anomaly_maps``: m_j − logp, upsampled, summed over levels) applies:

    logp = ( −C/2·log(2π) − ½·log|Σ| − ½·d² ) / C

Nothing is trained: fitting is one pass over the features (seconds). A flow
differs in two ways: it shares one network across positions (the position enters
as a condition), and its density need not be Gaussian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import BGADError


def centred_sets(x: torch.Tensor, who: str) -> torch.Tensor:
    """B sets of n samples of C features, x (B, n, C), centred on each set's mean, as float64."""
    if x.dim() != 3:
        raise BGADError(f"{who} expects (sets, samples, channels), got shape {tuple(x.shape)}.")
    if x.shape[1] < 2:
        raise BGADError(f"a covariance needs at least 2 samples per position (2 training images), "
                        f"got {x.shape[1]}.")
    x = x.double()
    return x - x.mean(1, keepdim=True)


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ledoit–Wolf shrunk covariance of B independent sample sets.

    x (B, n, C): n samples of C features for each of B sets -> (Σ (B, C, C), α (B,)).
    The samples are centred on their mean; S = XᵀX / n (the maximum-likelihood
    estimate, as in scikit-learn), α = min(β̂, δ̂) / δ̂ with

        μ = tr S / C,   δ̂ = ‖S − μI‖²_F / C,   β̂ = (1 / (n²·C)) Σ_k ‖x_k x_kᵀ − S‖²_F .
    """
    x = centred_sets(x, "ledoit_wolf")  # (B, n, C)
    b, n, c = x.shape
    s = x.transpose(1, 2) @ x / n  # (B, C, C)
    mu = s.diagonal(dim1=1, dim2=2).sum(1) / c  # (B,)
    eye = torch.eye(c, dtype=s.dtype)
    delta = ((s - mu[:, None, None] * eye) ** 2).sum((1, 2)) / c  # (B,)
    # Σ_k ‖x_k x_kᵀ − S‖²_F = Σ_k ‖x_k‖⁴ − n·‖S‖²_F
    beta = ((x ** 2).sum(2) ** 2).sum(1) - n * (s ** 2).sum((1, 2))  # (B,)
    beta = torch.minimum(beta / (n * n * c), delta)
    alpha = torch.where(delta > 0, beta / delta.clamp_min(1e-300), torch.zeros_like(delta))
    sigma = (1 - alpha)[:, None, None] * s + (alpha * mu)[:, None, None] * eye
    return sigma, alpha


@dataclass
class GaussianLevel:
    """μ and the Cholesky factor of Σ⁻¹-solves for one level, at every position."""

    mean: torch.Tensor  # (H·W, C)
    chol: torch.Tensor  # (H·W, C, C) lower-triangular L with Σ = L Lᵀ
    logdet: torch.Tensor  # (H·W,) log|Σ|
    height: int
    width: int


def fit_level(features: torch.Tensor) -> GaussianLevel:
    """A Gaussian at every position of one level: features (N, C, H, W) of normal images."""
    n, c, h, w = features.shape
    x = samples_by_position(features)  # (H·W, N, C)
    sigma, _ = ledoit_wolf(x)
    chol = torch.linalg.cholesky(sigma)  # (H·W, C, C)
    logdet = 2 * chol.diagonal(dim1=1, dim2=2).log().sum(1)  # (H·W,)
    return GaussianLevel(x.mean(1), chol, logdet, h, w)


def samples_by_position(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (H·W, N, C) float64: the N training fibers of each position, a sample set each."""
    n, c, h, w = features.shape
    return features.double().permute(2, 3, 0, 1).reshape(h * w, n, c)


def check_fitted_shape(features: torch.Tensor, channels: int, height: int, width: int) -> None:
    """Raise unless features (N, C, H, W) have the (C, H, W) a per-position model was fitted on."""
    c, h, w = features.shape[1:]
    if (c, h, w) != (channels, height, width):
        raise BGADError(f"features of shape (C, H, W) = {(c, h, w)} do not match the fitted "
                        f"{(channels, height, width)}; fit on the same backbone and size.")


def fibers_by_position(features: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """(N, C, H, W) -> (H·W, C, N) float64: the N fibers of each position as columns, once (C, H, W)
    is checked against the (channels, height, width) a per-position model was fitted on."""
    check_fitted_shape(features, channels, height, width)
    n, c, h, w = features.shape
    return features.double().permute(2, 3, 1, 0).reshape(h * w, c, n)  # (N, C, H, W) -> (H·W, C, N)


def level_logp(level: GaussianLevel, features: torch.Tensor) -> torch.Tensor:
    """Per-dimension Gaussian log-likelihood of every fiber: (N, C, H, W) -> (N, H, W)."""
    n, c, h, w = features.shape
    x = fibers_by_position(features, level.mean.shape[1], level.height, level.width)  # (H·W, C, N)
    diff = x - level.mean[:, :, None]  # (H·W, C, N)
    y = torch.linalg.solve_triangular(level.chol, diff, upper=False)  # L⁻¹(x − μ), (H·W, C, N)
    d2 = (y ** 2).sum(1)  # (H·W, N) squared Mahalanobis distance
    logp = (-0.5 * c * math.log(2 * math.pi) - 0.5 * level.logdet[:, None] - 0.5 * d2) / c
    return logp.T.reshape(n, h, w).float()  # (N, H·W) -> (N, H, W)


class GaussianModel:
    """One :class:`GaussianLevel` per feature level; ``level_logps`` mirrors ``scoring.level_logps``."""

    def __init__(self, levels: list[GaussianLevel]):
        self.levels = levels

    @classmethod
    def fit(cls, train_features: list[torch.Tensor]) -> "GaussianModel":
        return cls([fit_level(f) for f in train_features])

    def level_logps(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.levels):
            raise BGADError(f"got {len(features)} feature levels, the model has {len(self.levels)}.")
        return [level_logp(g, f) for g, f in zip(self.levels, features)]
