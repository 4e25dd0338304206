"""Step 7 — the margin, measured: which test fibers and images lie where, with numbers only.

The explicit boundaries come from the normal training fibers of one level: with
l = logp / N, b_n is their β-quantile and b_a = b_n − τ (:func:`bgad_lite.compute_boundaries`).
This module answers, without drawing anything:

- **which group** a test fiber or image belongs to: ``"normal"``, ``"seen"`` (a defect of a
  type the labelled anomalies come from) or ``"unseen"`` (a type never labelled) —
  :func:`image_groups`, :func:`fiber_groups`, :func:`fiber_l_by_group`. This is the one
  place in the library where that grouping is made;
- **where the boundaries are** for any β, τ: :func:`~bgad_lite.boundary.boundaries_from_normals` (compute_boundaries on
  the training normals of one level);
- **how many lie where**: :func:`margin_fractions` (l < b_a, b_a ≤ l ≤ b_n, l > b_n) and,
  for a threshold t on the image score, :func:`rates_at` (FPR, TPR on seen and unseen);
- **how phase 2 moves them**, epoch by epoch: :class:`EpochRecorder`, an ``on_epoch_end``
  callback for :func:`bgad_lite.pipeline.fit_variant` that keeps :class:`Snapshot` s;
- **one l-axis** that shows every group: :func:`l_range`, :func:`boundary_range`, :func:`epoch_xlim` (the axis rule
  of every histogram in :mod:`bgad_lite.explore.plots`).

Pure numpy / torch: no matplotlib and no ipywidgets (drawing is :mod:`bgad_lite.explore.plots`, the
interactive explorer :mod:`bgad_lite.explore.widgets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ..flow import fiber_labels, flow_logp, positional_encoding_2d, to_fibers

NORMAL, SEEN, UNSEEN = "normal", "seen", "unseen"
GROUPS = (NORMAL, SEEN, UNSEEN)


# ---------------------------------------------------------------------------
# Test images and fibers, grouped normal / seen / unseen
# ---------------------------------------------------------------------------


def image_groups(prep) -> np.ndarray:
    """The group of every test image: (N_test,) of "normal" / "seen" / "unseen".

    ``prep`` needs ``test_types`` (N_test,) ("good" for a normal image) and
    ``split.seen_types``; every other defect type is unseen.
    """
    t = np.asarray(prep.test_types)
    seen = np.isin(t, prep.split.seen_types)
    return np.where(t == "good", NORMAL, np.where(seen, SEEN, UNSEEN)).astype(object)


def fiber_groups(prep, height: int, width: int) -> np.ndarray:
    """The group of every test fiber of a (height x width) level: (N_test, H, W) of
    "normal" / "seen" / "unseen". A fiber is a defect fiber when training would label it
    anomalous (:func:`bgad_lite.flow.fiber_labels`); it takes its image's group.

    ``prep`` needs what :func:`image_groups` needs and ``test_masks`` (N_test, h, w) bool.
    """
    masks = fiber_labels(torch.from_numpy(np.asarray(prep.test_masks)), height, width)[0].numpy()  # (N, H, W)
    per_image = image_groups(prep)[:, None, None]  # (N, 1, 1)
    return np.where(masks, per_image, NORMAL).astype(object)  # (N, H, W)


def fiber_l_by_group(prep, logps, normalizer: float) -> dict[str, np.ndarray]:
    """One level's test logps (N_test, H, W) -> {group: l = logp / N of its fibers}, in GROUPS order."""
    logps = logps.numpy() if isinstance(logps, torch.Tensor) else np.asarray(logps)
    groups = fiber_groups(prep, logps.shape[1], logps.shape[2])  # (N, H, W)
    l = logps.astype(np.float64) / normalizer  # (N, H, W)
    return {g: l[groups == g] for g in GROUPS}


# ---------------------------------------------------------------------------
# Boundaries, and what lies on either side
# ---------------------------------------------------------------------------


def margin_fractions(l: np.ndarray, b_n: float, b_a: float) -> dict[str, float]:
    """Fractions of l below the margin (l < b_a), inside it (b_a ≤ l ≤ b_n) and above b_n
    (l > b_n); NaN for no values."""
    l = np.asarray(l)
    if not len(l):
        return {"below_ba": float("nan"), "margin": float("nan"), "above_bn": float("nan")}
    return {"below_ba": float((l < b_a).mean()), "margin": float(((l >= b_a) & (l <= b_n)).mean()),
            "above_bn": float((l > b_n).mean())}


def rates_at(scores: np.ndarray, groups: np.ndarray, threshold: float) -> dict[str, float]:
    """Flag images with score ≥ threshold t: FPR on normals, TPR on seen and on unseen anomalies
    (NaN for an empty group), and the counts behind them (``n_<group>``, ``flagged_<group>``)."""
    flagged = scores >= threshold
    out = {}
    for g, key in ((NORMAL, "fpr"), (SEEN, "tpr_seen"), (UNSEEN, "tpr_unseen")):
        sel = groups == g
        out[key] = float(flagged[sel].mean()) if sel.any() else float("nan")
        out[f"n_{g}"] = int(sel.sum())
        out[f"flagged_{g}"] = int(flagged[sel].sum())
    return out


# ---------------------------------------------------------------------------
# One l-axis for every group
# ---------------------------------------------------------------------------


def l_range(groups, lo_pct: float = 1.0, hi_pct: float = 99.9) -> tuple[float, float]:
    """An l-axis that shows every group: the lowest low percentile and the highest high
    percentile over the groups (normal fibers outnumber anomalous ones by 100 to 1, so
    percentiles of all fibers together would cut the anomalies off), padded by 3%.
    Empty groups are skipped."""
    groups = [np.asarray(v) for v in groups if len(v)]
    lo = min(float(np.percentile(v, lo_pct)) for v in groups)
    hi = max(float(np.percentile(v, hi_pct)) for v in groups)
    pad = 0.03 * (hi - lo) + 1e-9
    return lo - pad, hi + pad


def boundary_range(groups, b_n: float, b_a: float, margins: float = 4.0) -> tuple[float, float]:
    """:func:`l_range`, cut at ``margins`` margins τ = b_n − b_a below b_a and above b_n.

    A pushed anomaly can sit at l = −5 (BGAD) or −2000 (the naive push, whose unbounded
    push also throws some fibers far *above* the normals); an axis that reaches them
    squeezes the normals, b_n and b_a into one bar. The eye needs the boundary region; the
    far tails stay counted, clipped into the edge bars (which
    :func:`bgad_lite.explore.plots.plot_fiber_histogram` labels). An end is not cut when nothing
    would be left between it and the other end.
    """
    lo, hi = l_range(groups)
    tau = b_n - b_a
    lo_cut, hi_cut = max(lo, b_a - margins * tau), min(hi, b_n + margins * tau)
    return (lo_cut if lo_cut < hi else lo), (hi_cut if hi_cut > lo else hi)


# ---------------------------------------------------------------------------
# Recording phase 2, epoch by epoch
# ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    """l = logp / N of fixed fibers of one level after one epoch (epoch 0: before phase 2)."""

    epoch: int
    l_test: np.ndarray  # (M,) test fibers, their groups in EpochRecorder.groups
    l_train: np.ndarray  # (K,) normal training fibers: where b_n comes from

    def l_by_group(self, groups: np.ndarray) -> dict[str, np.ndarray]:
        """{group: l of its test fibers}, with ``groups`` (M,) the recorder's."""
        return {g: self.l_test[groups == g] for g in GROUPS}


class EpochRecorder:
    """An ``on_epoch_end`` callback for :func:`bgad_lite.pipeline.fit_variant` that records
    how the log-likelihood distributions move during phase 2.

    At every epoch it evaluates one level's flow on a fixed random subset of test fibers
    (all groups, at most ``max_fibers`` per group) and of normal training fibers, with
    :func:`bgad_lite.flow.flow_logp`, and keeps l = logp / N. Call :meth:`record` once
    with the phase-1 flows first to get epoch 0::

        rec = EpochRecorder(prep, cfg.normalizer, cfg.cond_dim, level=1)
        rec.record(0, phase1_flows)
        flows, history, _ = pipeline.fit_variant(prep, phase1_flows, "bgad", on_epoch_end=rec)
    """

    def __init__(self, prep, normalizer: float, cond_dim: int, level: int = 1, max_fibers: int = 6000, seed: int = 0):
        self.level = level
        self.normalizer = normalizer
        feats = prep.test_features[level]  # (N, C, H, W)
        _, _, h, w = feats.shape
        pos = positional_encoding_2d(cond_dim, h, w)  # (P, H, W)
        x, c, _ = to_fibers(feats, pos)  # (N·H·W, C), (N·H·W, P)
        groups = fiber_groups(prep, h, w).reshape(-1)  # (N·H·W,)
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:max_fibers] for g in GROUPS])
        keep.sort()
        self.groups = groups[keep]  # (M,)
        self._test = (x[keep], c[keep])
        xt, ct, _ = to_fibers(prep.train_features[level], pos)
        keep_t = np.sort(rng.permutation(len(xt))[:2 * max_fibers])
        self._train = (xt[keep_t], ct[keep_t])
        self.snapshots: list[Snapshot] = []

    def _l(self, flow, x: torch.Tensor, c: torch.Tensor) -> np.ndarray:
        # flow_logp takes feature maps: the M fibers are passed as one 1 x M "image",
        # x (M, C) -> (1, C, 1, M), c (M, P) -> (P, 1, M). Evaluate where the flow lives,
        # so that recording in the middle of training never moves it to another device.
        device = next(flow.parameters()).device
        logp = flow_logp(flow, x.T[None, :, None, :], c.T[:, None, :], device=str(device))  # (1, 1, M)
        return (logp.reshape(-1) / self.normalizer).numpy()

    def record(self, epoch: int, flows) -> Snapshot:
        """Evaluate ``flows[level]`` now and keep the result as the snapshot of ``epoch``."""
        flow = flows[self.level]
        snap = Snapshot(epoch, self._l(flow, *self._test), self._l(flow, *self._train))
        self.snapshots.append(snap)
        return snap

    def __call__(self, epoch: int, flows) -> None:
        """The ``on_epoch_end`` hook: ``epoch`` counts from 0, the snapshot from 1."""
        self.record(epoch + 1, flows)

    def fiber_auroc(self) -> dict[str, list[float]]:
        """Per snapshot, the AUROC of −l separating normal test fibers from seen / unseen ones."""
        out = {SEEN: [], UNSEEN: []}
        for s in self.snapshots:
            for g in out:
                sel = (self.groups == NORMAL) | (self.groups == g)
                y = self.groups[sel] == g
                out[g].append(float(roc_auc_score(y, -s.l_test[sel])) if 0 < y.sum() < len(y) else float("nan"))
        return out


def epoch_xlim(snapshots: list[Snapshot], groups: np.ndarray | None = None) -> tuple[float, float]:
    """One l-axis for every epoch, so that movement is visible (:func:`l_range` over the
    training normals and each group of test fibers of every snapshot)."""
    parts = [s.l_train for s in snapshots]
    for s in snapshots:
        parts += [s.l_test] if groups is None else list(s.l_by_group(groups).values())
    return l_range(parts)
