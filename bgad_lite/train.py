"""Step 5 — training the flows on cached fibers.

Phase 1 (unsupervised): normal fibers only, L = L_ml.
Phase 2, one of three objectives on the same batches (only the loss differs):

- ``"unsupervised"``: L = L_ml(normal fibers) — phase 1 continued;
- ``"bgad"``:         L = L_ml(normal fibers) + λ·(pull + push)   (BG-SPP);
- ``"naive_push"``:   L = L_ml(normal fibers) + mean −log σ(−l) over anomalous fibers.

Each epoch walks the images in shuffled mini-batches; for every level the
batch's fibers are shuffled and fed in chunks, one optimizer step per chunk per
level (the official design).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .boundary import compute_boundaries
from .config import BGADConfig, BGADError
from .flow import Standardized, build_flow, flow_logp, log_likelihood, positional_encoding_2d, to_fibers
from .losses import bg_spp_loss, focal_weights, ml_loss, naive_push_loss

log = logging.getLogger(__name__)

OBJECTIVES = ("ml", "unsupervised", "bgad", "naive_push")


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


def make_flows(channels: list[int], cfg: BGADConfig) -> nn.ModuleList:
    """One conditional flow per level, reproducible from ``cfg.seed``; with
    ``cfg.standardize`` each is wrapped in :class:`~bgad_lite.flow.Standardized`
    (its μ, σ are set by :func:`set_input_statistics`)."""
    flows = [build_flow(c, cfg.cond_dim, cfg.n_blocks, cfg.clamp, seed=cfg.seed + j) for j, c in enumerate(channels)]
    if cfg.standardize:
        flows = [Standardized(f, c) for f, c in zip(flows, channels)]
    return nn.ModuleList(flows)


def set_input_statistics(flows: nn.ModuleList, features: list[torch.Tensor]) -> None:
    """μ, σ of every channel over the normal training fibers, for standardised flows."""
    for flow, f in zip(flows, features):
        if isinstance(flow, Standardized):
            flow.set_statistics(f.transpose(0, 1).reshape(f.shape[1], -1).T)  # (N, C, H, W) -> (N·H·W, C)


def objective_terms(logp: torch.Tensor, is_anomaly: torch.Tensor, objective: str, cfg: BGADConfig,
                    b_n: torch.Tensor | None = None, b_a: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loss of one chunk of fibers, with its named terms; ``"loss"`` is the total."""
    normal = ~is_anomaly
    w = focal_weights(logp, is_anomaly, cfg.normalizer) if cfg.focal_weighting else None
    terms = {"ml": ml_loss(logp[normal], None if w is None else w[normal])}
    if objective == "bgad":
        pull, push = bg_spp_loss(logp, is_anomaly, b_n, b_a, cfg.normalizer, w)
        terms.update(pull=pull, push=push)
        terms["loss"] = terms["ml"] + cfg.bgspp_lambda * (pull + push)
    elif objective == "naive_push":
        terms["push"] = naive_push_loss(logp, is_anomaly, cfg.normalizer)
        terms["loss"] = terms["ml"] + cfg.bgspp_lambda * terms["push"]
    else:
        terms["loss"] = terms["ml"]
    return terms


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 1% of the base lr."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _steps_per_epoch(levels: list[LevelData], batch_images: int, chunk: int) -> int:
    n = len(levels[0].features)
    steps = 0
    for s in range(0, n, batch_images):
        b = min(batch_images, n - s)
        steps += sum(math.ceil(b * lv.features.shape[2] * lv.features.shape[3] / chunk) for lv in levels)
    return steps


@torch.no_grad()
def level_boundaries(flows: nn.ModuleList, levels: list[LevelData], cfg: BGADConfig):
    """Fixed boundaries: (b_n, b_a) per level from all normal training fibers."""
    out = []
    for flow, lv in zip(flows, levels):
        logp = flow_logp(flow, lv.features, lv.pos, device=cfg.device).reshape(-1)
        out.append(compute_boundaries(logp, lv.masks.reshape(-1), cfg.beta, cfg.tau, cfg.normalizer))
    return out


def epoch_chunks(levels: list[LevelData], batch_images: int, fiber_chunk: int, normal_only: bool,
                 gen: torch.Generator) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch's chunks of fibers, in training order: (level j, x, c, is_anomaly).

    The images are shuffled into mini-batches of ``batch_images``; for each batch and each
    level the batch's fibers (minus those ``ignore`` leaves out, minus the anomalous ones
    when ``normal_only``) are shuffled and cut into chunks of ``fiber_chunk``: one
    optimizer step each (the official design). x (M, C), c (M, P), is_anomaly (M,) bool.
    """
    n_img = len(levels[0].features)
    for s in torch.randperm(n_img, generator=gen).split(batch_images):
        for j, lv in enumerate(levels):
            x, c, m = to_fibers(lv.features[s], lv.pos, lv.masks[s])  # (B·H·W, C), (B·H·W, P), (B·H·W,)
            if lv.ignore is not None:
                keep = ~lv.ignore[s].reshape(-1)  # (B·H·W,)
                x, c, m = x[keep], c[keep], m[keep]
            if normal_only:
                x, c, m = x[~m], c[~m], m[~m]
            for idx in torch.randperm(len(x), generator=gen).split(fiber_chunk):
                yield j, x[idx], c[idx], m[idx]


def train_step(flow: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, c: torch.Tensor,
               is_anomaly: torch.Tensor, objective: str, cfg: BGADConfig,
               boundaries: tuple | None = None) -> dict[str, torch.Tensor] | None:
    """One optimizer step of ``flow`` on one chunk; returns its loss terms, or None when
    the chunk holds no normal fiber (no ML term, no boundary: nothing to step).

    For "bgad" the terms include the b_n, b_a used: ``boundaries`` when given
    (``cfg.boundary == "fixed"``), else those of the chunk's own normal fibers.
    A non-finite loss raises :class:`FloatingPointError` before anything is stepped.
    """
    if not (~is_anomaly).any():
        return None
    z, ljd = flow(x, c=[c])
    logp = log_likelihood(z, ljd)  # (M,)
    b_n = b_a = None
    if objective == "bgad":
        b_n, b_a = boundaries if boundaries is not None else compute_boundaries(
            logp, is_anomaly, cfg.beta, cfg.tau, cfg.normalizer)
    terms = objective_terms(logp, is_anomaly, objective, cfg, b_n, b_a)
    if not torch.isfinite(terms["loss"]):
        raise FloatingPointError({k: float(v.detach()) for k, v in terms.items()})
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    if b_n is not None:
        as_number = lambda v: torch.as_tensor(float(v), dtype=torch.float64)  # noqa: E731  exact for a Python float
        terms.update(b_n=as_number(b_n), b_a=as_number(b_a))
    return terms


def train_flows(flows: nn.ModuleList, levels: list[LevelData], cfg: BGADConfig, objective: str,
                epochs: int, warmup_epochs: int = 0, fixed_boundaries=None,
                on_epoch_end: Callable[[int, nn.ModuleList], None] | None = None,
                progress: bool = True, desc: str = "train", lr: float | None = None) -> list[dict[str, float]]:
    """Train ``flows`` in place; returns one dict of mean loss terms per epoch
    (``"<term>/<level>"``: ml, pull, push, loss, and b_n, b_a for "bgad").

    ``objective``: "ml" (phase 1), "unsupervised", "bgad" or "naive_push".
    For "bgad", ``cfg.boundary`` chooses b_n, b_a: "per_batch" recomputes them
    from each chunk's normal fibers (official code), "fixed" takes
    ``fixed_boundaries`` — one (b_n, b_a) per level, from :func:`level_boundaries`.
    The learning rate (``lr``, default ``cfg.lr``) warms up over ``warmup_epochs`` and then
    follows a cosine (:func:`lr_factor`). A loss that turns non-finite stops training with a
    :class:`BGADError`.
    """
    if objective not in OBJECTIVES:
        raise BGADError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    fixed = objective == "bgad" and cfg.boundary == "fixed"
    if fixed and fixed_boundaries is None:
        raise BGADError("boundary='fixed' needs fixed_boundaries from level_boundaries() after phase 1.")
    dev = cfg.device
    flows.to(dev).train()
    base_lr = cfg.lr if lr is None else lr
    opts = [torch.optim.Adam(f.parameters(), lr=base_lr) for f in flows]
    per_epoch = _steps_per_epoch(levels, cfg.batch_images, cfg.fiber_chunk)
    total, warmup = per_epoch * epochs, per_epoch * warmup_epochs
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * (1 + OBJECTIVES.index(objective)))
    normal_only = objective in ("ml", "unsupervised")
    history, step = [], 0
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for j, x, c, m in epoch_chunks(levels, cfg.batch_images, cfg.fiber_chunk, normal_only, gen):
            for g in opts[j].param_groups:
                g["lr"] = base_lr * lr_factor(step, total, warmup)
            try:
                terms = train_step(flows[j], opts[j], x.to(dev), c.to(dev), m.to(dev), objective, cfg,
                                   fixed_boundaries[j] if fixed else None)
            except FloatingPointError as e:
                raise BGADError(f"{desc}: the loss turned non-finite at epoch {epoch + 1}, level {j}, step {step}: "
                                f"{e.args[0]}. Training stopped (nothing was stepped); lower lr or clamp, or "
                                "check the features for NaN.") from None
            if terms is None:
                continue
            step += 1
            bar.update(1)
            for k, v in terms.items():
                sums[f"{k}/{j}"] = sums.get(f"{k}/{j}", 0.0) + float(v.detach())
                counts[f"{k}/{j}"] = counts.get(f"{k}/{j}", 0) + 1
        history.append({k: sums[k] / counts[k] for k in sorted(sums)})
        if on_epoch_end is not None:
            on_epoch_end(epoch, flows)
    bar.close()
    flows.eval()
    return history
