"""Step 7 — explore the margin: interactive views of a trained model.

:func:`margin_explorer` takes any trained flows (phase 1, ``unsupervised``,
``naive_push``, ``bgad``) and the prepared data, and returns a widget with

- sliders for β and τ (and a level selector): the histogram of test-fiber
  log-likelihoods l = logp / N (normal, seen-type and unseen-type anomalous) with
  the explicit boundaries b_n, b_a and the margin between them, computed from the
  *training normals* exactly as :func:`bgad_lite.compute_boundaries` does, and the
  fractions of fibers on each side;
- a decision threshold on the image score and a test-image selector: the image
  scores of normal / seen / unseen test images with the threshold, the selected
  image's anomaly map with the region above the threshold, and what the threshold
  implies (TPR on seen and unseen anomalies, FPR on normals) next to the
  threshold-free AUROCs;
- with ``snapshots`` (an :class:`EpochRecorder` passed to ``fit_variant(...,
  on_epoch_end=...)``), an epoch slider replaying how the normal and anomalous
  distributions separate during phase 2.

Only ipywidgets API common to 7.7 (Colab) and 8 is used. Figures are matplotlib
PNGs shown in ``Image`` widgets; every view is drawn once at construction, and
:meth:`MarginExplorer.static_figure`, :func:`epoch_figure` and
:func:`epoch_animation` give static (matplotlib) and self-contained (plotly) versions
for GitHub and HTML exports, where no kernel runs the sliders.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass

import numpy as np
import torch

from .boundary import compute_boundaries
from .flow import downsample_masks, flow_logp, positional_encoding_2d, to_fibers

NORMAL, SEEN, UNSEEN = "normal", "seen", "unseen"
COLORS = {NORMAL: "tab:blue", SEEN: "tab:red", UNSEEN: "tab:purple", "train": "black", "margin": "gold",
          "threshold": "tab:green"}


# ---------------------------------------------------------------------------
# Fibers of one level, labelled normal / seen / unseen
# ---------------------------------------------------------------------------


def fiber_groups(prep, height: int, width: int) -> np.ndarray:
    """The group of every test fiber of a (height x width) level: (N_test, H, W) of
    "normal" / "seen" / "unseen" (a defect fiber takes its image's defect type)."""
    masks = downsample_masks(torch.from_numpy(prep.test_masks), height, width).numpy()  # (N, H, W)
    seen = np.isin(prep.test_types, prep.split.seen_types)[:, None, None]  # (N, 1, 1)
    out = np.full(masks.shape, NORMAL, dtype=object)
    out[masks & seen] = SEEN
    out[masks & ~seen] = UNSEEN
    return out


def image_groups(prep) -> np.ndarray:
    """The group of every test image: "normal", "seen" or "unseen"."""
    t = prep.test_types
    return np.where(t == "good", NORMAL, np.where(np.isin(t, prep.split.seen_types), SEEN, UNSEEN)).astype(object)


def rates_at(scores: np.ndarray, groups: np.ndarray, threshold: float) -> dict[str, float]:
    """Flag images with score ≥ threshold: FPR on normals, TPR on seen and on unseen anomalies
    (NaN for an empty group), and the counts behind them."""
    flagged = scores >= threshold
    out = {}
    for g, key in ((NORMAL, "fpr"), (SEEN, "tpr_seen"), (UNSEEN, "tpr_unseen")):
        sel = groups == g
        out[key] = float(flagged[sel].mean()) if sel.any() else float("nan")
        out[f"n_{g}"] = int(sel.sum())
        out[f"flagged_{g}"] = int(flagged[sel].sum())
    return out


# ---------------------------------------------------------------------------
# Recording phase 2, epoch by epoch
# ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    """l = logp / N of fixed fibers of one level after one epoch (epoch 0: before phase 2)."""

    epoch: int
    l_test: np.ndarray  # (M,) test fibers, their groups in EpochRecorder.groups
    l_train: np.ndarray  # (K,) normal training fibers: where b_n comes from


class EpochRecorder:
    """An ``on_epoch_end`` callback for :func:`bgad_lite.pipeline.fit_variant` that records
    how the log-likelihood distributions move during phase 2.

    At every epoch it evaluates one level's flow on a fixed random subset of test fibers
    (all groups, at most ``max_fibers`` per group) and of normal training fibers, with
    :func:`bgad_lite.flow.flow_logp`, and keeps l = logp / N. Call :meth:`record` once
    with the phase-1 flows first to get epoch 0::

        rec = EpochRecorder(prep, level=1)
        rec.record(0, phase1_flows)
        flows, history, _ = pipeline.fit_variant(prep, phase1_flows, "bgad", on_epoch_end=rec)
    """

    def __init__(self, prep, level: int = 1, max_fibers: int = 6000, seed: int = 0):
        self.level = level
        self.normalizer = prep.cfg.normalizer
        feats = prep.test_features[level]  # (N, C, H, W)
        _, _, h, w = feats.shape
        pos = positional_encoding_2d(prep.cfg.cond_dim, h, w)  # (P, H, W)
        x, c, _ = to_fibers(feats, pos)  # (N·H·W, C), (N·H·W, P)
        groups = fiber_groups(prep, h, w).reshape(-1)  # (N·H·W,)
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:max_fibers]
                               for g in (NORMAL, SEEN, UNSEEN)])
        keep.sort()
        self.groups = groups[keep]
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
        from sklearn.metrics import roc_auc_score

        out = {SEEN: [], UNSEEN: []}
        for s in self.snapshots:
            for g in out:
                sel = (self.groups == NORMAL) | (self.groups == g)
                y = self.groups[sel] == g
                out[g].append(float(roc_auc_score(y, -s.l_test[sel])) if 0 < y.sum() < len(y) else float("nan"))
        return out


def _boundaries(l_train: np.ndarray, beta: float, tau: float) -> tuple[float, float]:
    """b_n, b_a from normal l = logp / N values (compute_boundaries takes logp, so scale back)."""
    logp = torch.from_numpy(np.asarray(l_train, dtype=np.float64))
    b_n, b_a = compute_boundaries(logp, torch.zeros(len(logp), dtype=torch.bool), beta, tau, 1.0)
    return float(b_n), float(b_a)


# ---------------------------------------------------------------------------
# Drawing (matplotlib, no pyplot state: figures never pop up on their own)
# ---------------------------------------------------------------------------


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=90, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def draw_fiber_histogram(ax, l_by_group: dict[str, np.ndarray], b_n: float | None, b_a: float | None,
                         xlim: tuple[float, float] | None = None, l_train: np.ndarray | None = None,
                         bins: int = 70, title: str | None = None) -> None:
    """Density histograms of l for normal / seen / unseen fibers, with b_n, b_a and the margin."""
    if xlim is None:
        xlim = l_range(list(l_by_group.values()) + ([] if l_train is None else [l_train]))
    edges = np.linspace(xlim[0], xlim[1], bins)
    for g, v in l_by_group.items():
        if len(v):
            ax.hist(np.clip(v, *xlim), edges, density=True, alpha=0.5, color=COLORS[g], label=f"{g} ({len(v)})")
    if l_train is not None and len(l_train):
        ax.hist(np.clip(l_train, *xlim), edges, density=True, histtype="step", color=COLORS["train"], lw=0.8,
                label="train normal")
    if b_n is not None:
        ax.axvspan(b_a, b_n, color=COLORS["margin"], alpha=0.3, label="margin τ")
        ax.axvline(b_n, color=COLORS[NORMAL], ls="--", lw=1.3, label=f"$b_n$ = {b_n:.3f}")
        ax.axvline(b_a, color=COLORS[SEEN], ls="--", lw=1.3, label=f"$b_a$ = {b_a:.3f}")
    ax.set_xlim(*xlim)
    ax.set_xlabel("l = log p / N  (right: more normal)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title)


def draw_scores(ax, scores: np.ndarray, groups: np.ndarray, threshold: float, selected: int | None = None) -> None:
    """Image scores as a strip per group, the threshold, and the selected image circled."""
    rng = np.random.default_rng(0)
    for row, g in enumerate((NORMAL, SEEN, UNSEEN)):
        sel = np.flatnonzero(groups == g)
        y = row + rng.uniform(-0.18, 0.18, len(sel))
        ax.scatter(scores[sel], y, s=14, color=COLORS[g], alpha=0.8)
        if selected is not None and selected in sel:
            ax.scatter([scores[selected]], [y[list(sel).index(selected)]], s=110, facecolors="none",
                       edgecolors="black", lw=1.5)
    ax.axvline(threshold, color=COLORS["threshold"], lw=1.5)
    ax.axvspan(threshold, max(scores.max(), threshold) * 1.02 + 1e-9, color=COLORS["threshold"], alpha=0.08)
    ax.set_yticks([0, 1, 2], ["normal", "seen", "unseen"])
    ax.set_ylim(-0.5, 2.5)
    ax.set_xlabel("image score (max of the anomaly map); right of the line = flagged")


def draw_overlay(ax_img, ax_map, image: np.ndarray, mask: np.ndarray, amap: np.ndarray, threshold: float,
                 vmax: float, title: str) -> None:
    """The image with its true defect (red outline) and the area above the threshold (green),
    and its anomaly map on a fixed colour scale."""
    ax_img.imshow(np.clip(image, 0, 1))
    if mask.any():
        ax_img.contour(mask.astype(float), levels=[0.5], colors=COLORS[SEEN], linewidths=1.0)
    if (amap >= threshold).any():
        ax_img.contour((amap >= threshold).astype(float), levels=[0.5], colors=COLORS["threshold"], linewidths=1.0)
    ax_img.set_title(title, fontsize=8)
    ax_map.imshow(amap, cmap="inferno", vmin=0, vmax=vmax)
    if (amap >= threshold).any():
        ax_map.contour((amap >= threshold).astype(float), levels=[0.5], colors=COLORS["threshold"], linewidths=1.0)
    ax_map.set_title("anomaly map\n(green: ≥ threshold t)", fontsize=8)
    for ax in (ax_img, ax_map):
        ax.set_axis_off()


def l_range(groups, lo_pct: float = 1.0, hi_pct: float = 99.9) -> tuple[float, float]:
    """An l-axis that shows every group: the lowest low percentile and the highest high
    percentile over the groups (normal fibers outnumber anomalous ones by 100 to 1, so
    percentiles of all fibers together would cut the anomalies off), padded by 3%."""
    groups = [np.asarray(v) for v in groups if len(v)]
    lo = min(float(np.percentile(v, lo_pct)) for v in groups)
    hi = max(float(np.percentile(v, hi_pct)) for v in groups)
    pad = 0.03 * (hi - lo) + 1e-9
    return lo - pad, hi + pad


def epoch_xlim(snapshots: list[Snapshot], groups: np.ndarray | None = None) -> tuple[float, float]:
    """One l-axis for every epoch, so that movement is visible."""
    parts = [s.l_train for s in snapshots]
    for s in snapshots:
        parts += [s.l_test] if groups is None else [s.l_test[groups == g] for g in (NORMAL, SEEN, UNSEEN)]
    return l_range(parts)


def epoch_figure(recorder: EpochRecorder, beta: float = 0.01, tau: float = 0.1, epochs=None, ncols: int = 4):
    """Static small multiples: the fiber histograms (with b_n, b_a) at several epochs."""
    snaps = recorder.snapshots
    if epochs is None:
        idx = np.unique(np.linspace(0, len(snaps) - 1, min(ncols, len(snaps))).round().astype(int))
        snaps = [snaps[i] for i in idx]
    else:
        snaps = [s for s in snaps if s.epoch in set(epochs)]
    xlim = epoch_xlim(recorder.snapshots, recorder.groups)
    fig = _figure(3.4 * len(snaps), 2.8)
    axes = fig.subplots(1, len(snaps), squeeze=False, sharey=True)[0]
    for ax, s in zip(axes, snaps):
        b_n, b_a = _boundaries(s.l_train, beta, tau)
        draw_fiber_histogram(ax, {g: s.l_test[recorder.groups == g] for g in (NORMAL, SEEN, UNSEEN)}, b_n, b_a,
                             xlim, title=f"epoch {s.epoch}" + (" (phase 1)" if s.epoch == 0 else ""))
        if ax is not axes[0]:
            ax.get_legend().remove()
    return fig


def epoch_animation(recorder: EpochRecorder, beta: float = 0.01, tau: float = 0.1, bins: int = 60):
    """A plotly figure with a play button and an epoch slider: the fiber histograms of each
    snapshot (pre-binned, so the file stays small) with b_n, b_a and the margin. Plays
    without a kernel: in Colab, JupyterLab and exported HTML alike."""
    import plotly.graph_objects as go

    xlim = epoch_xlim(recorder.snapshots, recorder.groups)
    edges = np.linspace(*xlim, bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]

    def traces(s):
        out = []
        for g in (NORMAL, SEEN, UNSEEN):
            v = np.clip(s.l_test[recorder.groups == g], *xlim)
            dens = np.histogram(v, edges, density=True)[0] if len(v) else np.zeros(bins)
            out.append(go.Bar(x=centres, y=dens, width=width, name=g, marker_color=COLORS[g].replace("tab:", ""),
                              opacity=0.55))
        return out

    def shapes(s):
        b_n, b_a = _boundaries(s.l_train, beta, tau)
        return [dict(type="rect", xref="x", yref="paper", x0=b_a, x1=b_n, y0=0, y1=1, fillcolor="gold",
                     opacity=0.3, line_width=0),
                dict(type="line", xref="x", yref="paper", x0=b_n, x1=b_n, y0=0, y1=1,
                     line=dict(color="blue", dash="dash")),
                dict(type="line", xref="x", yref="paper", x0=b_a, x1=b_a, y0=0, y1=1,
                     line=dict(color="red", dash="dash"))]

    snaps = recorder.snapshots
    frames = [go.Frame(data=traces(s), layout=dict(shapes=shapes(s)), name=str(s.epoch)) for s in snaps]
    fig = go.Figure(data=traces(snaps[0]), frames=frames)
    steps = [dict(method="animate", label=str(s.epoch),
                  args=[[str(s.epoch)], dict(mode="immediate", frame=dict(duration=0, redraw=True))]) for s in snaps]
    fig.update_layout(
        barmode="overlay", shapes=shapes(snaps[0]), height=380,
        title=f"phase 2, level {recorder.level}: l = log p / N of test fibers per epoch "
              f"(b_n, b_a with β={beta}, τ={tau})",
        xaxis=dict(title="l = log p / N", range=list(xlim)), yaxis=dict(title="density"),
        updatemenus=[dict(type="buttons", showactive=False, x=0.0, y=-0.18, xanchor="left",
                          buttons=[dict(label="▶ play", method="animate",
                                        args=[None, dict(frame=dict(duration=600, redraw=True), fromcurrent=True)])])],
        sliders=[dict(active=0, steps=steps, x=0.12, y=-0.1, len=0.88, currentvalue=dict(prefix="epoch "))],
        margin=dict(b=90))
    return fig


# ---------------------------------------------------------------------------
# The explorer
# ---------------------------------------------------------------------------


def _percent(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.1f}%"


try:  # ipywidgets is a dependency, but keep ``import bgad_lite.widgets`` cheap to fail clearly
    import ipywidgets as W
except ImportError:  # pragma: no cover
    W = None


class MarginExplorer(W.VBox if W is not None else object):
    """The widget that :func:`margin_explorer` returns (a ``VBox``).

    Controls: ``beta``, ``tau``, ``level``, ``threshold``, ``image`` and, with snapshots,
    ``epoch``. Views: ``hist_image``, ``score_image``, ``overlay_image``, ``epoch_image``
    (``Image``, PNG bytes in ``.value``) and ``boundary_html``, ``metrics_html`` (``HTML``). ``state`` holds the
    numbers on display (b_n, b_a, TPR/FPR, ...), ``png`` the last PNG of each view.
    """

    def __init__(self, prep, evaluation: dict, recorder: EpochRecorder | None = None, level: int = 0,
                 title: str = "model", threshold: float | None = None):
        from .scoring import anomaly_maps, image_scores

        cfg = prep.cfg
        self.prep, self.ev, self.recorder, self.title = prep, evaluation, recorder, title
        self.normalizer = cfg.normalizer
        self.state: dict = {}
        self.png: dict[str, bytes] = {}
        n_levels = len(evaluation["test_logps"])

        # --- precomputed data -------------------------------------------------
        self.l_train = [t.reshape(-1).double().numpy() / self.normalizer for t in evaluation["train_logps"]]
        self.l_test = []  # per level: {group: l values of the test fibers}
        for t in evaluation["test_logps"]:
            g = fiber_groups(prep, t.shape[1], t.shape[2])
            l = t.double().numpy() / self.normalizer
            self.l_test.append({k: l[g == k] for k in (NORMAL, SEEN, UNSEEN)})
        self.xlim = [l_range([*self.l_test[lv].values(), self.l_train[lv]]) for lv in range(n_levels)]
        self.scores = np.asarray(evaluation["scores"])
        self.maps = evaluation["maps"]
        self.groups = image_groups(prep)
        train_maps = anomaly_maps(evaluation["train_logps"], cfg.image_size,
                                  evaluation["level_ref"] if cfg.score_norm == "train" else None)
        self.train_scores = image_scores(train_maps)
        self.vmax = float(np.percentile(self.maps, 99.9))

        # --- controls -----------------------------------------------------------
        style = {"description_width": "initial"}
        lay = W.Layout(width="330px")
        self.beta = W.FloatSlider(value=cfg.beta, min=0.001, max=0.3, step=0.001, readout_format=".3f",
                                  description="β (quantile)", continuous_update=False, style=style, layout=lay)
        self.tau = W.FloatSlider(value=cfg.tau, min=0.005, max=1.0, step=0.005, readout_format=".3f",
                                 description="τ (margin)", continuous_update=False, style=style, layout=lay)
        shapes = [tuple(t.shape[1:]) for t in evaluation["test_logps"]]
        self.level = W.Dropdown(options=[(f"level {i} ({h}x{w} fibers)", i) for i, (h, w) in enumerate(shapes)],
                                value=min(level, n_levels - 1), description="level", style=style)
        lo = float(min(self.scores.min(), self.train_scores.min()))
        hi = float(max(self.scores.max(), self.train_scores.max()))
        default_t = float(self.train_scores.max()) if threshold is None else float(threshold)
        step = max((hi - lo) / 400, 1e-6)
        self.threshold = W.FloatSlider(value=min(max(default_t, lo), hi), min=lo, max=hi + step, step=step,
                                       readout_format=".4f", description="threshold t", continuous_update=False,
                                       style=style, layout=W.Layout(width="420px"))
        options = []
        for i, (t, g) in enumerate(zip(prep.test_types, self.groups)):
            options.append((f"#{i:03d} {t}" + ("" if g == NORMAL else f" ({g})"), i))
        first = next((i for g in (UNSEEN, SEEN, NORMAL) for i in np.flatnonzero(self.groups == g)), 0)
        self.image = W.Dropdown(options=options, value=int(first), description="test image", style=style)
        self.epoch = None
        if recorder is not None and recorder.snapshots:
            epochs = [s.epoch for s in recorder.snapshots]
            self.epoch = W.IntSlider(value=epochs[-1], min=min(epochs), max=max(epochs), step=1,
                                     description="epoch (phase 2)", continuous_update=False, style=style,
                                     layout=W.Layout(width="420px"))

        # --- views ----------------------------------------------------------------
        # Views are Image widgets whose PNG bytes are replaced on every redraw: plain synced state
        # that every frontend (Colab's ipywidgets 7, Lab, nbclient, HTML exports) shows, with no
        # output capturing (``with Output():`` intermittently hung nbclient when executing notebooks).
        self.hist_image, self.score_image, self.overlay_image, self.epoch_image = (
            W.Image(format="png") for _ in range(4))
        self.boundary_html = W.HTML()
        self.metrics_html = W.HTML()
        header = W.HTML(
            f"<h3 style='margin:4px 0'>Margin explorer — {html.escape(title)}</h3>"
            "<div style='font-size:12px'>β and τ place the explicit boundaries b<sub>n</sub> and "
            "b<sub>a</sub> = b<sub>n</sub> − τ on the training normals (dashed lines); the threshold t "
            "flags images whose score ≥ t. Sliders update when released.</div>")
        rows = [header,
                W.HBox([self.beta, self.tau, self.level]),
                W.HBox([self.hist_image, self.boundary_html]),
                W.HBox([self.threshold, self.image]),
                W.HBox([self.score_image, self.overlay_image]),
                self.metrics_html]
        if self.epoch is not None:
            rows += [W.HTML("<b>Phase 2, epoch by epoch</b> (level "
                            f"{recorder.level}; b<sub>n</sub>, b<sub>a</sub> from that epoch's training "
                            "normals with the β, τ above)"), self.epoch, self.epoch_image]
        super().__init__(rows)

        # --- wiring: each control redraws only the views that depend on it ---------
        for w in (self.beta, self.tau, self.level):
            w.observe(self._on_boundary, names="value")
        self.threshold.observe(self._on_threshold, names="value")
        self.image.observe(self._on_image, names="value")
        if self.epoch is not None:
            self.epoch.observe(self._on_epoch, names="value")
        self.update()  # the static default render

    # --- handlers -----------------------------------------------------------------
    def _on_boundary(self, _=None):
        self.update_boundary()
        if self.epoch is not None:
            self.update_epoch()

    def _on_threshold(self, _=None):
        self.update_scores()
        self.update_overlay()
        self.update_metrics()

    def _on_image(self, _=None):
        self.update_scores()
        self.update_overlay()

    def _on_epoch(self, _=None):
        self.update_epoch()

    def update(self) -> None:
        """Redraw every view from the current control values."""
        self.update_boundary()
        self.update_scores()
        self.update_overlay()
        self.update_metrics()
        if self.epoch is not None:
            self.update_epoch()

    # --- views ----------------------------------------------------------------------
    def boundaries(self) -> tuple[float, float]:
        """(b_n, b_a) of the selected level for the current β, τ: compute_boundaries on the
        training normals' logp, as the fixed boundary of training does."""
        logp = self.ev["train_logps"][self.level.value].reshape(-1)  # (N_train·H·W,) all normal
        b_n, b_a = compute_boundaries(logp, torch.zeros(len(logp), dtype=torch.bool), self.beta.value,
                                      self.tau.value, self.normalizer)
        return float(b_n), float(b_a)

    def update_boundary(self) -> None:
        lv = self.level.value
        b_n, b_a = self.boundaries()
        groups = self.l_test[lv]
        fig = _figure(5.6, 3.3)
        ax = fig.subplots()
        draw_fiber_histogram(ax, groups, b_n, b_a, self.xlim[lv], l_train=self.l_train[lv],
                             title=f"{self.title}: test fibers, level {lv}")
        self.png["hist"] = _png(fig)
        self.hist_image.value = self.png["hist"]
        frac = {}
        for g, v in groups.items():
            frac[g] = {"below_ba": float((v < b_a).mean()) if len(v) else np.nan,
                       "margin": float(((v >= b_a) & (v <= b_n)).mean()) if len(v) else np.nan,
                       "above_bn": float((v > b_n).mean()) if len(v) else np.nan}
        self.state.update(b_n=b_n, b_a=b_a, beta=self.beta.value, tau=self.tau.value, level=lv, fiber_fractions=frac,
                          train_below_bn=float((self.l_train[lv] < b_n).mean()))
        rows = "".join(
            f"<tr><td style='color:{COLORS[g].replace('tab:', '')}'>{g}</td><td>{len(groups[g])}</td>"
            f"<td>{_percent(frac[g]['below_ba'])}</td><td>{_percent(frac[g]['margin'])}</td>"
            f"<td>{_percent(frac[g]['above_bn'])}</td></tr>" for g in (NORMAL, SEEN, UNSEEN))
        self.boundary_html.value = (
            "<div style='font-size:12px; padding-left:8px'>"
            f"<b>b<sub>n</sub> = {b_n:.4f}</b>, <b>b<sub>a</sub> = {b_a:.4f}</b><br>"
            f"β = {self.beta.value:.3f}: {_percent(self.state['train_below_bn'])} of the training normal fibers "
            "lie below b<sub>n</sub> (≈ β by construction)<br><br>"
            "<table style='font-size:12px'><tr><th>test fibers</th><th>n</th><th>l &lt; b<sub>a</sub></th>"
            "<th>margin</th><th>l &gt; b<sub>n</sub></th></tr>" + rows + "</table><br>"
            "BG-SPP pulls normals below b<sub>n</sub> up and pushes anomalies above b<sub>a</sub> down; "
            "anomalies already below b<sub>a</sub> are left alone (“semi”).</div>")

    def update_scores(self) -> None:
        fig = _figure(5.0, 2.6)
        ax = fig.subplots()
        draw_scores(ax, self.scores, self.groups, self.threshold.value, self.image.value)
        ax.axvline(self.train_scores.max(), color="gray", ls=":", lw=1)
        ax.set_title("test image scores (dotted: highest training-normal score)")
        self.png["scores"] = _png(fig)
        self.score_image.value = self.png["scores"]

    def update_overlay(self) -> None:
        i, t = self.image.value, self.threshold.value
        p = self.prep
        fig = _figure(4.6, 2.6)
        ax_img, ax_map = fig.subplots(1, 2)
        verdict = "flagged" if self.scores[i] >= t else "passed"
        draw_overlay(ax_img, ax_map, p.test_images[i], p.test_masks[i], self.maps[i], t, self.vmax,
                     f"#{i} {p.test_types[i]} ({self.groups[i]})\nscore {self.scores[i]:.3f}: {verdict}")
        self.png["overlay"] = _png(fig)
        self.overlay_image.value = self.png["overlay"]
        seg, gt = self.maps[i] >= t, p.test_masks[i]
        self.state.update(image=i, image_score=float(self.scores[i]), image_flagged=bool(self.scores[i] >= t),
                          image_iou=float((seg & gt).sum() / max((seg | gt).sum(), 1)) if gt.any() else float("nan"))

    def update_metrics(self) -> None:
        t = self.threshold.value
        r = rates_at(self.scores, self.groups, t)
        self.state.update(threshold=t, **r)
        m = self.ev["metrics"]

        def auroc(subset, key="image_auroc"):
            return f"{m[subset][key]:.3f}" if subset in m else "–"

        self.metrics_html.value = (
            "<div style='font-size:12px'><table style='font-size:12px'>"
            f"<tr><th></th><th>at t = {t:.4f}</th><th>flagged</th><th>image AUROC</th><th>AUPRO</th></tr>"
            f"<tr><td>normal images</td><td>FPR {_percent(r['fpr'])}</td>"
            f"<td>{r['flagged_normal']}/{r['n_normal']}</td><td></td><td></td></tr>"
            f"<tr><td>seen-type anomalies</td><td>TPR {_percent(r['tpr_seen'])}</td>"
            f"<td>{r['flagged_seen']}/{r['n_seen']}</td><td>{auroc('seen')}</td><td>{auroc('seen', 'aupro')}</td></tr>"
            f"<tr><td>unseen-type anomalies</td><td>TPR {_percent(r['tpr_unseen'])}</td>"
            f"<td>{r['flagged_unseen']}/{r['n_unseen']}</td><td>{auroc('unseen')}</td>"
            f"<td>{auroc('unseen', 'aupro')}</td></tr>"
            f"<tr><td>all</td><td></td><td></td><td>{auroc('all')}</td><td>{auroc('all', 'aupro')}</td></tr>"
            "</table>AUROC and AUPRO do not depend on t (they sweep every threshold); TPR/FPR do. "
            f"Highest training-normal score: {self.train_scores.max():.4f}.</div>")

    def update_epoch(self) -> None:
        rec = self.recorder
        snap = min(rec.snapshots, key=lambda s: abs(s.epoch - self.epoch.value))  # the nearest recorded epoch
        b_n, b_a = _boundaries(snap.l_train, self.beta.value, self.tau.value)
        fig = _figure(9.0, 2.9)
        ax, ax2 = fig.subplots(1, 2, width_ratios=[1.6, 1])
        draw_fiber_histogram(ax, {g: snap.l_test[rec.groups == g] for g in (NORMAL, SEEN, UNSEEN)}, b_n, b_a,
                             epoch_xlim(rec.snapshots, rec.groups), l_train=snap.l_train,
                             title=f"epoch {snap.epoch}" + (" (end of phase 1)" if snap.epoch == 0 else ""))
        auc = rec.fiber_auroc()
        epochs = [s.epoch for s in rec.snapshots]
        for g in (SEEN, UNSEEN):
            ax2.plot(epochs, auc[g], marker=".", color=COLORS[g], label=f"{g} vs normal")
        ax2.axvline(snap.epoch, color="gray", lw=1)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("fiber AUROC (−l)")
        ax2.legend(fontsize=7)
        self.png["epoch"] = _png(fig)
        self.epoch_image.value = self.png["epoch"]
        self.state.update(epoch=snap.epoch, epoch_b_n=b_n, epoch_b_a=b_a)

    def static_figure(self):
        """One matplotlib figure of the current views (for GitHub and HTML exports)."""
        lv = self.level.value
        b_n, b_a = self.boundaries()
        i, t = self.image.value, self.threshold.value
        fig = _figure(11, 6.2)
        grid = fig.add_gridspec(2, 4)
        draw_fiber_histogram(fig.add_subplot(grid[0, :2]), self.l_test[lv], b_n, b_a, self.xlim[lv],
                             l_train=self.l_train[lv], title=f"{self.title}: test fibers, level {lv}, "
                             f"β={self.beta.value:.3f}, τ={self.tau.value:.3f}")
        ax = fig.add_subplot(grid[0, 2:])
        draw_scores(ax, self.scores, self.groups, t, i)
        r = rates_at(self.scores, self.groups, t)
        ax.set_title(f"t = {t:.3f}: FPR {_percent(r['fpr'])}, TPR seen {_percent(r['tpr_seen'])}, "
                     f"unseen {_percent(r['tpr_unseen'])}")
        for k, j in enumerate(self._gallery(i)):
            axg = fig.add_subplot(grid[1, k])
            axg.imshow(np.clip(self.prep.test_images[j], 0, 1))
            axg.imshow(self.maps[j], cmap="inferno", vmin=0, vmax=self.vmax, alpha=0.45)
            if self.prep.test_masks[j].any():
                axg.contour(self.prep.test_masks[j].astype(float), levels=[0.5], colors=COLORS[SEEN],
                            linewidths=1.0)
            if (self.maps[j] >= t).any():
                axg.contour((self.maps[j] >= t).astype(float), levels=[0.5], colors=COLORS["threshold"],
                            linewidths=1.0)
            axg.set_title(f"#{j} {self.prep.test_types[j]} ({self.groups[j]}) {self.scores[j]:.3f}", fontsize=8)
            axg.set_axis_off()
        fig.supxlabel("bottom: the selected image and the highest-scoring image of each group — anomaly map "
                      "overlaid, red: true defect, green: map ≥ t", fontsize=9)
        return fig

    def _gallery(self, selected: int) -> list[int]:
        """The selected image and the highest-scoring image of each other group."""
        out = [selected]
        for g in (NORMAL, SEEN, UNSEEN):
            sel = [j for j in np.flatnonzero(self.groups == g) if j not in out]
            if sel and len(out) < 4:
                out.append(int(max(sel, key=lambda j: self.scores[j])))
        return out


def margin_explorer(flows, prep, cfg=None, *, evaluation: dict | None = None,
                    snapshots: EpochRecorder | None = None, level: int = 0, title: str = "model",
                    threshold: float | None = None) -> MarginExplorer:
    """The interactive margin explorer of a trained model; returns the widget (display it).

    ``flows``: any trained flows (phase 1 or a phase-2 variant); ``prep``: from
    :func:`bgad_lite.pipeline.prepare`; ``evaluation``: the result of
    :func:`bgad_lite.pipeline.evaluate` if already computed (else it is computed here);
    ``snapshots``: an :class:`EpochRecorder` filled during ``fit_variant`` (adds the
    epoch slider); ``threshold``: the initial image-score threshold (default: the
    highest score of a training normal image, a choice that needs no test labels).
    """
    if W is None:  # pragma: no cover
        from .config import BGADError
        raise BGADError("the margin explorer needs ipywidgets: pip install 'ipywidgets>=7.7'.")
    if evaluation is None:
        from .pipeline import evaluate
        evaluation = evaluate(flows, prep, cfg)
    return MarginExplorer(prep, evaluation, snapshots, level, title, threshold)
