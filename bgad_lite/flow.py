"""Step 2 — a conditional normalizing flow per feature level.

A flow f is an invertible network that maps a fiber x (C numbers) to z = f(x | c)
with z ~ N(0, I). The change of variables gives the exact log-likelihood

    log p(x) = log N(z; 0, I) + log|det J| = -C/2·log(2π) - ½‖z‖² + log|det ∂z/∂x|.

BGAD uses the per-dimension value ``logp = log p(x) / C`` everywhere, so levels
with different C are comparable. The condition c is a 2-D sin/cos positional
encoding of the fiber's (row, col), so the flow can learn position-dependent
densities (CFLOW-AD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from .config import BGADError
from .runtime import seeded

#: affine_clamping of every coupling (the official value)
CLAMP = 1.9


def positional_encoding_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """Sin/cos encoding of (row, col): returns (dim, height, width).

    The first dim/2 channels encode the column x, the last dim/2 the row y, as
    interleaved pairs ``sin(x·ω_k), cos(x·ω_k)`` with ω_k = 10000^(-2k/(dim/2)),
    k = 0 .. dim/4 - 1 (the transformer encoding, applied per axis).
    """
    if dim % 4:
        raise BGADError(f"positional encoding needs dim divisible by 4 (sin and cos for x and y), got {dim}.")
    half = dim // 2
    omega = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))  # (half/2,)
    x = torch.arange(width, dtype=torch.float32)[:, None] * omega  # (W, half/2)
    y = torch.arange(height, dtype=torch.float32)[:, None] * omega  # (H, half/2)
    pe = torch.zeros(dim, height, width)
    pe[0:half:2] = torch.sin(x).T[:, None, :].expand(-1, height, -1)  # (half/2, H, W)
    pe[1:half:2] = torch.cos(x).T[:, None, :].expand(-1, height, -1)
    pe[half::2] = torch.sin(y).T[:, :, None].expand(-1, -1, width)
    pe[half + 1::2] = torch.cos(y).T[:, :, None].expand(-1, -1, width)
    return pe


def _subnet(c_in: int, c_out: int) -> nn.Module:
    """The coupling subnet of BGAD/CFLOW: Linear(c, 2c) -> ReLU -> Linear(2c, out)."""
    return nn.Sequential(nn.Linear(c_in, 2 * c_in), nn.ReLU(), nn.Linear(2 * c_in, c_out))


def build_flow(in_channels: int, cond_dim: int, n_blocks: int, clamp: float = CLAMP, seed: int = 0):
    """A FrEIA ``SequenceINN`` of ``n_blocks`` conditional ``AllInOneBlock`` s.

    Each block: affine coupling conditioned on c (``cond_shape=(cond_dim,)``),
    clamped by ``affine_clamping=clamp``, a SOFTPLUS global affine, and a soft
    (random orthogonal) permutation. FrEIA draws that permutation from NumPy's
    global RNG; we draw it (and the subnet weights) under ``seed`` and restore both
    global RNG states, so building a flow is reproducible and has no side effect.
    """
    with seeded(seed):  # permutations: NumPy's RNG; subnet weights: torch's; both restored after
        flow = Ff.SequenceINN(in_channels)
        for _ in range(n_blocks):
            flow.append(Fm.AllInOneBlock, cond=0, cond_shape=(cond_dim,), subnet_constructor=_subnet,
                        affine_clamping=clamp, global_affine_type="SOFTPLUS", permute_soft=True)
    return flow


class Standardized(nn.Module):
    """A flow on standardised inputs: x̃ = (x − μ) / σ per channel, then z = f(x̃ | c).

    μ and σ are fixed buffers (set from the normal training fibers before training,
    saved with the weights). The standardisation is itself an invertible map, so
    the change of variables still gives the density of the *raw* fiber:

        log|det ∂z/∂x| = log|det ∂z/∂x̃| − Σ_c log σ_c

    It changes no optimum, only where training starts: backbone channels have
    standard deviations of 2–10 and means up to ±10, and a flow that starts near
    the identity must first learn that scale through clamped couplings.
    """

    def __init__(self, flow: nn.Module, channels: int):
        super().__init__()
        self.flow = flow
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    @torch.no_grad()
    def set_statistics(self, x: torch.Tensor) -> None:
        """μ, σ per channel from fibers x (M, C)."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor, c: list[torch.Tensor]):
        z, log_jac_det = self.flow((x - self.mean) / self.std, c=c)
        return z, log_jac_det - self.std.log().sum()


def log_likelihood(z: torch.Tensor, log_jac_det: torch.Tensor) -> torch.Tensor:
    """Per-dimension log-likelihood, (N, C) and (N,) -> (N,).

        logp = ( -C/2·log(2π) - ½‖z‖² + log|det J| ) / C
    """
    c = z.shape[1]
    return (-0.5 * c * math.log(2 * math.pi) - 0.5 * (z ** 2).sum(1) + log_jac_det) / c


def to_fibers(features: torch.Tensor, pos: torch.Tensor, masks: torch.Tensor | None = None):
    """Flatten a feature map into fibers: the one helper used by training and scoring.

    features (N, C, H, W), pos (P, H, W), masks (N, H, W) bool or None
    -> x (N·H·W, C), c (N·H·W, P), m (N·H·W,) bool (all False when masks is None).
    Fiber i is image i // (H·W), row (i % (H·W)) // W, col i % W.
    """
    n, ch, h, w = features.shape
    x = features.permute(0, 2, 3, 1).reshape(n * h * w, ch)  # (N, H, W, C) -> (NHW, C)
    c = pos.permute(1, 2, 0).reshape(1, h * w, -1).expand(n, -1, -1).reshape(n * h * w, -1)  # (NHW, P)
    m = torch.zeros(n * h * w, dtype=torch.bool) if masks is None else masks.reshape(n * h * w)
    return x, c, m


def fiber_labels(masks: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training labels of fibers from (n, S, S) bool pixel masks -> (anomalous, ignore), each (n, height, width) bool.

    - anomalous: at least half of the fiber's cell is defect (area pooling; the official code's
      nearest-neighbour sampling behaves alike), and a defect region (a connected component of the
      mask) that reaches half in no cell still marks the one cell it covers most — so a 5-px pit
      keeps a fiber at every level instead of vanishing from the coarse ones;
    - ignore: cells that a defect touches but that are not anomalous. They are neither clean
      normals (the ML and pull terms would raise their likelihood) nor anomalies, so training
      leaves them out.
    """
    frac = F.adaptive_avg_pool2d(masks.float()[:, None], (height, width))[:, 0]  # (n, H, W) defect fraction
    anomalous = frac >= 0.5
    for i in range(len(masks)):
        regions, n = ndimage.label(masks[i].numpy())
        for r in range(1, n + 1):
            region = torch.from_numpy(regions == r).float()[None, None]  # (1, 1, S, S)
            f = F.adaptive_avg_pool2d(region, (height, width))[0, 0]  # (H, W)
            if not (f >= 0.5).any():
                anomalous[i].view(-1)[int(f.argmax())] = True
    return anomalous, (frac > 0) & ~anomalous


@dataclass
class LevelData:
    """Everything the flow of one level trains on."""

    features: torch.Tensor  # (N, C, H, W) cached backbone features
    masks: torch.Tensor  # (N, H, W) bool, True = anomalous fiber
    pos: torch.Tensor  # (P, H, W) positional encoding
    ignore: torch.Tensor | None = None  # (N, H, W) bool, True = left out of training


def make_levels(features: list[torch.Tensor], masks: list[torch.Tensor], cond_dim: int,
                ignore: list[torch.Tensor] | None = None) -> list[LevelData]:
    """Bundle per-level features and fiber masks with their positional encodings."""
    ignore = ignore or [None] * len(features)
    return [LevelData(f, m, positional_encoding_2d(cond_dim, f.shape[2], f.shape[3]), ig)
            for f, m, ig in zip(features, masks, ignore)]


@torch.no_grad()
def flow_logp(flow, features: torch.Tensor, pos: torch.Tensor, chunk: int = 16384,
              device: str = "cpu") -> torch.Tensor:
    """Per-dimension log-likelihood of every fiber: (n, C, H, W) -> (n, H, W).

    No side effect: the flow is evaluated in eval mode on ``device`` and handed back in the
    mode and on the device it came in.
    """
    n, _, h, w = features.shape
    x, c, _ = to_fibers(features, pos)
    was_training = flow.training
    home = next((p.device for p in flow.parameters()), None)  # None: a flow without parameters
    flow.to(device).eval()
    try:
        out = []
        for s in range(0, len(x), chunk):
            z, ljd = flow(x[s:s + chunk].to(device), c=[c[s:s + chunk].to(device)])
            out.append(log_likelihood(z, ljd).cpu())
    finally:
        flow.to(home or device).train(was_training)
    return torch.cat(out).reshape(n, h, w)  # (nHW,) -> (n, H, W)
