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

import math
from typing import Callable, Iterator

import torch
from torch import nn

from .boundary import compute_boundaries
from .config import BGADError
from .flow import LevelData, Standardized, build_flow, log_likelihood, to_fibers
from .losses import bg_spp_loss, focal_weights, ml_loss, naive_push_loss
from .runtime import progress_bar

OBJECTIVES = ("ml", "unsupervised", "bgad", "naive_push")
#: images per mini-batch, and fibers per optimizer step within it (the official design)
BATCH_IMAGES = 32
FIBER_CHUNK = 4096


def make_flows(channels: list[int], cond_dim: int, n_blocks: int, seed: int) -> nn.ModuleList:
    """One conditional flow per level on standardised inputs (:class:`~bgad_lite.flow.Standardized`;
    its μ, σ are set by :func:`set_input_statistics`), reproducible from ``seed`` (level j: seed + j)."""
    return nn.ModuleList(Standardized(build_flow(c, cond_dim, n_blocks, seed=seed + j), c)
                         for j, c in enumerate(channels))


def set_input_statistics(flows: nn.ModuleList, features: list[torch.Tensor]) -> None:
    """μ, σ of every channel over the normal training fibers."""
    for flow, f in zip(flows, features):
        flow.set_statistics(f.transpose(0, 1).reshape(f.shape[1], -1).T)  # (N, C, H, W) -> (N·H·W, C)


def objective_terms(logp: torch.Tensor, is_anomaly: torch.Tensor, objective: str, normalizer: float = 10.0,
                    lam: float = 1.0, focal: bool = False, b_n: torch.Tensor | None = None,
                    b_a: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loss of one chunk of fibers, with its named terms; ``"loss"`` is the total:
    L_ml alone, L_ml + λ·(pull + push) for "bgad", L_ml + λ·push for "naive_push"."""
    normal = ~is_anomaly
    w = focal_weights(logp, is_anomaly, normalizer) if focal else None
    terms = {"ml": ml_loss(logp[normal], None if w is None else w[normal])}
    if objective == "bgad":
        pull, push = bg_spp_loss(logp, is_anomaly, b_n, b_a, normalizer, w)
        terms.update(pull=pull, push=push)
        terms["loss"] = terms["ml"] + lam * (pull + push)
    elif objective == "naive_push":
        terms["push"] = naive_push_loss(logp, is_anomaly, normalizer)
        terms["loss"] = terms["ml"] + lam * terms["push"]
    else:
        terms["loss"] = terms["ml"]
    return terms


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 1% of the base lr."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def steps_per_epoch(levels: list[LevelData], batch_images: int = BATCH_IMAGES, chunk: int = FIBER_CHUNK) -> int:
    """The chunks of one epoch, counting every fiber of every level: the length of the lr schedule
    (:func:`lr_factor`; a chunk left without normal fibers is skipped, but still counted here)."""
    n = len(levels[0].features)
    steps = 0
    for s in range(0, n, batch_images):
        b = min(batch_images, n - s)
        steps += sum(math.ceil(b * lv.features.shape[2] * lv.features.shape[3] / chunk) for lv in levels)
    return steps


def shuffle_generator(seed: int, objective: str) -> torch.Generator:
    """The generator every shuffle of :func:`train_flows` draws from: one per run, seeded from
    ``seed`` and the objective (so that the variants of phase 2 walk different orders)."""
    return torch.Generator().manual_seed(seed + 7919 * (1 + OBJECTIVES.index(objective)))


def epoch_chunks(levels: list[LevelData], batch_images: int, fiber_chunk: int, normal_only: bool,
                 gen: torch.Generator, load: set[int] | None = None
                 ) -> Iterator[tuple[int, torch.Tensor | None, torch.Tensor | None, torch.Tensor]]:
    """One epoch's chunks of fibers, in training order: (level j, x, c, is_anomaly).

    The images are shuffled into mini-batches of ``batch_images``; for each batch and each
    level the batch's fibers (minus those ``ignore`` leaves out, minus the anomalous ones
    when ``normal_only``) are shuffled and cut into chunks of ``fiber_chunk``: one
    optimizer step each (the official design). x (M, C), c (M, P), is_anomaly (M,) bool.

    ``load``: the levels whose fibers are gathered; the others yield x = c = None and their
    labels only. The shuffles are drawn for every level all the same, so a process that trains
    some of the levels walks the very sequence of one that trains them all.
    """
    n_img = len(levels[0].features)
    for s in torch.randperm(n_img, generator=gen).split(batch_images):
        for j, lv in enumerate(levels):
            m = lv.masks[s].reshape(-1)  # (B·H·W,) in to_fibers' order
            keep = torch.ones_like(m) if lv.ignore is None else ~lv.ignore[s].reshape(-1)  # (B·H·W,)
            if normal_only:
                keep &= ~m
            kept = keep.nonzero().squeeze(1)  # (M,) the fibers trained on, in order
            x = c = None
            if load is None or j in load:
                x, c, _ = to_fibers(lv.features[s], lv.pos)  # (B·H·W, C), (B·H·W, P)
                x, c = x[kept], c[kept]  # (M, C), (M, P)
            m = m[kept]  # (M,)
            for idx in torch.randperm(len(kept), generator=gen).split(fiber_chunk):
                yield j, (None if x is None else x[idx]), (None if c is None else c[idx]), m[idx]


def train_step(flow: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, c: torch.Tensor,
               is_anomaly: torch.Tensor, objective: str, beta: float = 0.01, tau: float = 0.1,
               normalizer: float = 10.0, lam: float = 1.0, focal: bool = False,
               boundaries: tuple | None = None) -> dict[str, torch.Tensor] | None:
    """One optimizer step of ``flow`` on one chunk; returns its loss terms, or None when
    the chunk holds no normal fiber (no ML term, no boundary: nothing to step).

    For "bgad" the terms include the b_n, b_a used: ``boundaries`` when given (a fixed
    boundary), else those of the chunk's own normal fibers (β, τ, N: :func:`compute_boundaries`).
    A non-finite loss raises :class:`FloatingPointError` before anything is stepped.
    """
    if not (~is_anomaly).any():
        return None
    z, ljd = flow(x, c=[c])
    logp = log_likelihood(z, ljd)  # (M,)
    b_n = b_a = None
    if objective == "bgad":
        b_n, b_a = boundaries if boundaries is not None else compute_boundaries(logp, is_anomaly, beta, tau,
                                                                                normalizer)
    terms = objective_terms(logp, is_anomaly, objective, normalizer, lam, focal, b_n, b_a)
    if not torch.isfinite(terms["loss"]):
        raise FloatingPointError({k: float(v.detach()) for k, v in terms.items()})
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    if b_n is not None:
        as_number = lambda v: torch.as_tensor(float(v), dtype=torch.float64)  # noqa: E731  exact for a Python float
        terms.update(b_n=as_number(b_n), b_a=as_number(b_a))
    return terms


def train_flows(flows: nn.ModuleList, levels: list[LevelData], objective: str, epochs: int, lr: float,
                seed: int = 0, device: str = "cpu", beta: float = 0.01, tau: float = 0.1,
                normalizer: float = 10.0, lam: float = 1.0, focal: bool = False, fixed_boundaries=None,
                warmup_epochs: int = 0, batch_images: int = BATCH_IMAGES, fiber_chunk: int = FIBER_CHUNK,
                on_epoch_end: Callable[[int, nn.ModuleList], None] | None = None,
                progress: bool = True, desc: str = "train", train_levels: set[int] | None = None
                ) -> list[dict[str, float]]:
    """Train ``flows`` in place; returns one dict of mean loss terms per epoch
    (``"<term>/<level>"``: ml, pull, push, loss, and b_n, b_a for "bgad").

    ``objective``: "ml" (phase 1), "unsupervised", "bgad" or "naive_push". For "bgad",
    ``fixed_boundaries`` (one (b_n, b_a) per level, :func:`~bgad_lite.boundary.boundaries_from_normals`)
    fixes the boundary; without it b_n, b_a are recomputed from each chunk's normal fibers
    (the official code). The learning rate ``lr`` warms up over ``warmup_epochs`` and then
    follows a cosine (:func:`lr_factor`). Shuffling draws from a generator seeded from ``seed``
    and the objective. A loss that turns non-finite stops training with a :class:`BGADError`.

    ``train_levels``: train only these levels' flows (the others are left as they are), with the
    shuffles and the learning-rate schedule of a run that trains every level: the same numbers,
    so that the levels can train in separate processes (``pipeline.fit_phase1``).
    """
    if objective not in OBJECTIVES:
        raise BGADError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    fixed = objective == "bgad" and fixed_boundaries is not None
    flows.to(device).train()
    opts = [torch.optim.Adam(f.parameters(), lr=lr) for f in flows]
    per_epoch = steps_per_epoch(levels, batch_images, fiber_chunk)
    total, warmup = per_epoch * epochs, per_epoch * warmup_epochs
    gen = shuffle_generator(seed, objective)
    normal_only = objective in ("ml", "unsupervised")
    history, step = [], 0
    bar = progress_bar(total=total, desc=desc, disable=not progress, leave=False)
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for j, x, c, m in epoch_chunks(levels, batch_images, fiber_chunk, normal_only, gen, train_levels):
            if x is None:  # another process trains this level: count its step, as train_step would
                step += int(bool((~m).any()))
                continue
            for g in opts[j].param_groups:
                g["lr"] = lr * lr_factor(step, total, warmup)
            try:
                terms = train_step(flows[j], opts[j], x.to(device), c.to(device), m.to(device), objective, beta, tau,
                                   normalizer, lam, focal, fixed_boundaries[j] if fixed else None)
            except FloatingPointError as e:
                raise BGADError(f"{desc}: the loss turned non-finite at epoch {epoch + 1}, level {j}, step {step}: "
                                f"{e.args[0]}. Training stopped (nothing was stepped); lower lr, or "
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
