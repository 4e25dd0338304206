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

Only ipywidgets API common to 7.7 (Colab) and 8 is used (tests/test_browser.py runs it in
JupyterLab with both). Figures are matplotlib PNGs shown 1:1 in ``Image`` widgets, in two
columns that fit a laptop screen; every view is drawn once at construction, and
:meth:`MarginExplorer.static_figure`, :func:`epoch_figure` and
:func:`epoch_animation` give static (matplotlib) and self-contained (plotly) versions
for GitHub and HTML exports, where no kernel runs the sliders.
"""

from __future__ import annotations

import html
import io
import time
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
    b_n, b_a = compute_boundaries(logp, None, beta, tau, 1.0)
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
    ax.set_xlabel("image score = max of the anomaly map (≥ t: flagged)")


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


def _table(header: list[str], rows: list[list[str]], colors: list[str | None] | None = None) -> str:
    """A compact HTML table with inline styles only (no ``<style>``: every frontend keeps them)."""
    cell = "padding:1px 7px; text-align:right; white-space:nowrap"
    head = "".join(f"<th style='{cell}; border-bottom:1px solid #999'>{h}</th>" for h in header)
    body = ""
    for k, row in enumerate(rows):
        color = (colors or [None] * len(rows))[k]
        first = f"<td style='{cell}; text-align:left{'; color:' + color if color else ''}'>{row[0]}</td>"
        body += "<tr>" + first + "".join(f"<td style='{cell}'>{v}</td>" for v in row[1:]) + "</tr>"
    return f"<table style='border-collapse:collapse; font-size:12px; line-height:1.3'><tr>{head}</tr>{body}</table>"


def _text(inner: str) -> str:
    # Jupyter's widget CSS gives HTML widgets the line height of a control (28 px): reset it.
    return f"<div style='font-size:12px; line-height:1.35'>{inner}</div>"


#: Pixel sizes of the views (PNG drawn at exactly this size and shown 1:1, never stretched).
#: Two columns of COLUMN px: with the prompt, the explorer fits JupyterLab's notebook at 1366 px
#: with the file browser open (output area ~930 px): 914 x 726 px measured (tests/test_browser.py).
COLUMN = 450
VIEW_PX = {"hist": (COLUMN, 240), "epoch": (COLUMN, 240), "scores": (COLUMN, 210), "overlay": (COLUMN, 210)}
#: Shown only while the widget frontend marks the explorer as disconnected from its kernel (the
#: class ``jupyter-widgets-disconnected``, set by ipywidgets 7 and 8 in JupyterLab when the kernel
#: restarts or dies): the controls still move, but nothing can redraw. The frontend's own marks,
#: one icon per control, would push the controls out of line: the explorer hides them.
STALE_KERNEL_CSS = (
    "<style>.bgad-explorer .bgad-stale-msg {display: none}"
    ".bgad-explorer.jupyter-widgets-disconnected .bgad-stale-msg {display: block; color: #b00; font-weight: bold;"
    " border: 1px solid #b00; padding: 2px 6px; margin: 2px 0}"
    ".bgad-explorer.jupyter-widgets-disconnected::before, .bgad-explorer .jupyter-widgets-disconnected::before"
    " {content: none; display: none}</style>")
STALE_KERNEL_MSG = ("The kernel behind this explorer is gone (restarted or shut down): moving a control redraws "
                    "nothing. Run the notebook again: Run → Run All Cells.")
STALE_KERNEL_HINT = ("Nothing redraws when you move a control? Then the kernel behind this explorer is gone "
                     "(restarted): Run → Run All Cells.")


try:  # ipywidgets is a dependency, but keep ``import bgad_lite.widgets`` cheap to fail clearly
    import ipywidgets as W
except ImportError:  # pragma: no cover
    W = None


class MarginExplorer(W.VBox if W is not None else object):
    """The widget that :func:`margin_explorer` returns (a ``VBox``).

    Controls: ``beta``, ``tau``, ``level``, ``threshold``, ``image`` and, with snapshots,
    ``epoch``. Views: ``hist_image``, ``score_image``, ``overlay_image``, ``epoch_image``
    (``Image``, PNG bytes in ``.value``) and ``boundary_html``, ``metrics_html`` (``HTML``);
    ``status_html`` says when the views were last redrawn (or what failed). ``state`` holds the
    numbers on display (b_n, b_a, TPR/FPR, ...), ``png`` the last PNG of each view.

    Layout (914 x 726 px, a laptop screen): the fiber histogram (β, τ) beside the epoch
    panel, the image scores (threshold) beside the selected image, the two tables below.
    Every part has a CSS class ``bgad-<name>`` (``bgad-explorer`` on the whole).
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

        # --- controls (ipywidgets API common to 7.7 and 8) ----------------------------
        # Controls carry no ``description``: ipywidgets 7 typesets descriptions with the MathJax 2
        # API, which JupyterLab 4 (MathJax 3) lacks (one console error per control). Each control
        # has an HTML label beside it instead (see ``labelled`` below).
        def slider(cls, width, **kw):
            return cls(continuous_update=False, layout=W.Layout(width=f"{width}px"), **kw)

        half = COLUMN // 2 - 4
        self.beta = slider(W.FloatSlider, half - 26, value=cfg.beta, min=0.001, max=0.3, step=0.001,
                           readout_format=".3f")
        self.tau = slider(W.FloatSlider, half - 26, value=cfg.tau, min=0.005, max=1.0, step=0.005,
                          readout_format=".3f")
        shapes = [tuple(t.shape[1:]) for t in evaluation["test_logps"]]
        self.level = W.Dropdown(options=[(f"level {i} ({h}x{w} fibers)", i) for i, (h, w) in enumerate(shapes)],
                                value=min(level, n_levels - 1), layout=W.Layout(width="180px"))
        lo = float(min(self.scores.min(), self.train_scores.min()))
        hi = float(max(self.scores.max(), self.train_scores.max()))
        default_t = float(self.train_scores.max()) if threshold is None else float(threshold)
        step = max((hi - lo) / 400, 1e-6)
        self.threshold = slider(W.FloatSlider, COLUMN - 92, value=min(max(default_t, lo), hi), min=lo,
                                max=hi + step, step=step, readout_format=".4f")
        options = []
        for i, (t, g) in enumerate(zip(prep.test_types, self.groups)):
            options.append((f"#{i:03d} {t}" + ("" if g == NORMAL else f" ({g})"), i))
        first = next((i for g in (UNSEEN, SEEN, NORMAL) for i in np.flatnonzero(self.groups == g)), 0)
        self.image = W.Dropdown(options=options, value=int(first), layout=W.Layout(width=f"{COLUMN - 92}px"))
        self.epoch = None
        if recorder is not None and recorder.snapshots:
            epochs = [s.epoch for s in recorder.snapshots]
            self.epoch = slider(W.IntSlider, COLUMN - 112, value=epochs[-1], min=min(epochs), max=max(epochs),
                                step=1)

        # --- views ----------------------------------------------------------------
        # Views are Image widgets whose PNG bytes are replaced on every redraw: plain synced state
        # that every frontend (Colab's ipywidgets 7, Lab, nbclient, HTML exports) shows, with no
        # output capturing (``with Output():`` intermittently hung nbclient when executing notebooks).
        # Each is shown at exactly the PNG's pixel size: a flex box would otherwise stretch it.
        def view(name):
            w, h = VIEW_PX[name]
            return W.Image(format="png", layout=W.Layout(width=f"{w}px", height=f"{h}px", min_width=f"{w}px"))

        self.hist_image, self.score_image, self.overlay_image, self.epoch_image = (
            view(n) for n in ("hist", "scores", "overlay", "epoch"))
        self.boundary_html = W.HTML(layout=W.Layout(width=f"{COLUMN}px"))
        self.metrics_html = W.HTML(layout=W.Layout(width=f"{COLUMN}px"))
        self.status_html = W.HTML()
        header = W.HTML(_text(
            f"<b style='font-size:14px'>Margin explorer — {html.escape(title)}</b>&nbsp; β, τ set b<sub>n</sub> "
            "and b<sub>a</sub> = b<sub>n</sub> − τ; images scoring ≥ t are flagged"
            f"{STALE_KERNEL_CSS}<div class='bgad-stale-msg'>{STALE_KERNEL_MSG}</div>"),
            layout=W.Layout(width=f"{2 * COLUMN - 230 + 10}px"))

        def labelled(label, control, width):
            return W.HBox([W.HTML(label, layout=W.Layout(width=f"{width}px")), control])

        def column(*children):
            return W.VBox(list(children), layout=W.Layout(width=f"{COLUMN}px", align_items="flex-start",
                                                          overflow="hidden"))

        def row(*children):
            return W.HBox(list(children), layout=W.Layout(align_items="flex-start", justify_content="space-between",
                                                          width=f"{2 * COLUMN + 10}px", margin="0 0 4px 0"))

        if self.epoch is not None:
            right = column(labelled("phase-2 epoch", self.epoch, 100), self.epoch_image)
        else:
            right = column(W.HTML(_text("<i>Pass</i> <code>snapshots=EpochRecorder(...)</code> <i>recorded "
                                        "during</i> <code>fit_variant</code> <i>for the phase-2 epoch panel.</i>")))
        rows = [row(header, labelled("level", self.level, 50)),
                row(column(W.HBox([labelled("β", self.beta, 18), labelled("τ", self.tau, 18)]), self.hist_image),
                    right),
                row(column(labelled("threshold t", self.threshold, 80), self.score_image),
                    column(labelled("test image", self.image, 80), self.overlay_image)),
                row(self.boundary_html, self.metrics_html),
                self.status_html]
        super().__init__(rows, layout=W.Layout(width=f"{2 * COLUMN + 14}px", align_items="flex-start",
                                               padding="2px"))
        # CSS classes: how tests (and a user's styles) find the parts
        self.add_class("bgad-explorer")
        for name in ("beta", "tau", "level", "threshold", "image", "epoch"):
            if getattr(self, name) is not None:
                getattr(self, name).add_class(f"bgad-{name}")
        for name, image in (("hist", self.hist_image), ("scores", self.score_image),
                            ("overlay", self.overlay_image), ("epoch", self.epoch_image)):
            image.add_class(f"bgad-{name}-view")
        self.boundary_html.add_class("bgad-boundary")
        self.metrics_html.add_class("bgad-metrics")
        self.status_html.add_class("bgad-status")

        # --- wiring: each control redraws only the views that depend on it ---------
        for w in (self.beta, self.tau, self.level):
            w.observe(self._on_boundary, names="value")
        self.threshold.observe(self._on_threshold, names="value")
        self.image.observe(self._on_image, names="value")
        if self.epoch is not None:
            self.epoch.observe(self._on_epoch, names="value")
        self.update()  # the static default render
        self._status("drawn")

    # --- handlers -----------------------------------------------------------------
    def _status(self, what: str, error: BaseException | None = None) -> None:
        if error is None:
            msg = f"<span style='color:#2a7d2a'>✓</span> {html.escape(what)}. {STALE_KERNEL_HINT}"
        else:
            msg = (f"<b style='color:#b00'>Redrawing failed ({html.escape(what)}): "
                   f"{html.escape(type(error).__name__)}: {html.escape(str(error))}</b>")
        self.status_html.value = f"<div style='font-size:11px; line-height:1.3; color:#555'>{msg}</div>"

    def _redraw(self, what: str, *steps) -> None:
        """Run the redraw steps; say in the status line what was redrawn, or what failed (a
        callback's exception would otherwise only reach JupyterLab's log console)."""
        t0 = time.perf_counter()
        try:
            for step in steps:
                step()
        except Exception as e:  # noqa: BLE001 - shown to the user, then raised for the logs
            self._status(what, e)
            raise
        self._status(f"{what}: redrawn in {time.perf_counter() - t0:.1f} s")

    def _on_boundary(self, change=None):
        steps = [self.update_boundary] + ([self.update_epoch] if self.epoch is not None else [])
        self._redraw(f"β = {self.beta.value:.3f}, τ = {self.tau.value:.3f}, level {self.level.value}", *steps)

    def _on_threshold(self, change=None):
        self._redraw(f"t = {self.threshold.value:.4f}", self.update_scores, self.update_overlay, self.update_metrics)

    def _on_image(self, change=None):
        self._redraw(f"test image #{self.image.value}", self.update_scores, self.update_overlay)

    def _on_epoch(self, change=None):
        self._redraw(f"epoch {self.epoch.value}", self.update_epoch)

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
        b_n, b_a = compute_boundaries(logp, None, self.beta.value,
                                      self.tau.value, self.normalizer)
        return float(b_n), float(b_a)

    def _show(self, view: str, image, draw) -> None:
        """Draw a view at its pixel size with small fonts, keep the PNG, show it."""
        import matplotlib

        w, h = VIEW_PX[view]
        with matplotlib.rc_context({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                                    "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7}):
            fig = _figure(w / 90, h / 90)
            draw(fig)
            self.png[view] = _png(fig)
        image.value = self.png[view]

    def update_boundary(self) -> None:
        lv = self.level.value
        b_n, b_a = self.boundaries()
        groups = self.l_test[lv]
        self._show("hist", self.hist_image, lambda fig: draw_fiber_histogram(
            fig.subplots(), groups, b_n, b_a, self.xlim[lv], l_train=self.l_train[lv],
            title=f"{self.title}: test fibers, level {lv}"))
        frac = {}
        for g, v in groups.items():
            frac[g] = {"below_ba": float((v < b_a).mean()) if len(v) else np.nan,
                       "margin": float(((v >= b_a) & (v <= b_n)).mean()) if len(v) else np.nan,
                       "above_bn": float((v > b_n).mean()) if len(v) else np.nan}
        self.state.update(b_n=b_n, b_a=b_a, beta=self.beta.value, tau=self.tau.value, level=lv, fiber_fractions=frac,
                          train_below_bn=float((self.l_train[lv] < b_n).mean()))
        table = _table(["test fibers", "n", "l &lt; b<sub>a</sub>", "margin", "l &gt; b<sub>n</sub>"],
                       [[g, str(len(groups[g])), _percent(frac[g]["below_ba"]), _percent(frac[g]["margin"]),
                         _percent(frac[g]["above_bn"])] for g in (NORMAL, SEEN, UNSEEN)],
                       [COLORS[g].replace("tab:", "") for g in (NORMAL, SEEN, UNSEEN)])
        self.boundary_html.value = _text(
            f"<b>b<sub>n</sub> = {b_n:.4f}, b<sub>a</sub> = {b_a:.4f}</b> (level {lv}); "
            f"{_percent(self.state['train_below_bn'])} of the training normal fibers lie below b<sub>n</sub> "
            f"(≈ β = {self.beta.value:.3f})" + table +
            "BG-SPP pulls normals below b<sub>n</sub> up, pushes anomalies above b<sub>a</sub> down.")

    def update_scores(self) -> None:
        t, i = self.threshold.value, self.image.value
        r = rates_at(self.scores, self.groups, t)

        def draw(fig):
            ax = fig.subplots()
            draw_scores(ax, self.scores, self.groups, t, i)
            ax.axvline(self.train_scores.max(), color="gray", ls=":", lw=1)
            ax.set_title(f"test images: t = {t:.3f} flags {r['flagged_normal']} normal, "
                         f"{r['flagged_seen'] + r['flagged_unseen']} anomalous")
            ax.set_xlabel("image score = max of its anomaly map (dotted: highest training normal)")

        self._show("scores", self.score_image, draw)

    def update_overlay(self) -> None:
        i, t = self.image.value, self.threshold.value
        p = self.prep
        verdict = "flagged" if self.scores[i] >= t else "passed"
        title = f"#{i} {p.test_types[i]} ({self.groups[i]})\nscore {self.scores[i]:.3f}: {verdict}"
        self._show("overlay", self.overlay_image, lambda fig: draw_overlay(
            *fig.subplots(1, 2), p.test_images[i], p.test_masks[i], self.maps[i], t, self.vmax, title))
        seg, gt = self.maps[i] >= t, p.test_masks[i]
        self.state.update(image=i, image_score=float(self.scores[i]), image_flagged=bool(self.scores[i] >= t),
                          overlay_title=title.replace("\n", " "),
                          image_iou=float((seg & gt).sum() / max((seg | gt).sum(), 1)) if gt.any() else float("nan"))

    def update_metrics(self) -> None:
        t = self.threshold.value
        r = rates_at(self.scores, self.groups, t)
        self.state.update(threshold=t, **r)
        m = self.ev["metrics"]

        def auroc(subset, key="image_auroc"):
            return f"{m[subset][key]:.3f}" if subset in m else "–"

        table = _table(
            ["test images", f"at t = {t:.4f}", "flagged", "AUROC", "AUPRO"],
            [["normal", f"FPR {_percent(r['fpr'])}", f"{r['flagged_normal']}/{r['n_normal']}", "", ""],
             ["seen-type anomalies", f"TPR {_percent(r['tpr_seen'])}", f"{r['flagged_seen']}/{r['n_seen']}",
              auroc("seen"), auroc("seen", "aupro")],
             ["unseen-type anomalies", f"TPR {_percent(r['tpr_unseen'])}",
              f"{r['flagged_unseen']}/{r['n_unseen']}", auroc("unseen"), auroc("unseen", "aupro")],
             ["all", "", "", auroc("all"), auroc("all", "aupro")]],
            [COLORS[NORMAL].replace("tab:", ""), COLORS[SEEN].replace("tab:", ""),
             COLORS[UNSEEN].replace("tab:", ""), None])
        self.metrics_html.value = _text(
            table + "AUROC and AUPRO sweep every threshold: t changes only TPR and FPR.")

    def update_epoch(self) -> None:
        rec = self.recorder
        snap = min(rec.snapshots, key=lambda s: abs(s.epoch - self.epoch.value))  # the nearest recorded epoch
        b_n, b_a = _boundaries(snap.l_train, self.beta.value, self.tau.value)
        auc = rec.fiber_auroc()
        epochs = [s.epoch for s in rec.snapshots]

        def draw(fig):
            ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
            draw_fiber_histogram(ax, {g: snap.l_test[rec.groups == g] for g in (NORMAL, SEEN, UNSEEN)}, b_n, b_a,
                                 epoch_xlim(rec.snapshots, rec.groups), l_train=snap.l_train,
                                 title=f"level {rec.level}, epoch {snap.epoch}"
                                       + (" (end of phase 1)" if snap.epoch == 0 else ""))
            ax.get_legend().remove()  # the same colours and lines as the histogram beside it
            ax.set_xlabel("l = log p / N")
            for g in (SEEN, UNSEEN):
                ax2.plot(epochs, auc[g], marker=".", color=COLORS[g], label=g)
            ax2.axvline(snap.epoch, color="gray", lw=1)
            ax2.set_xlabel("epoch")
            ax2.set_title("fiber AUROC vs normal")
            ax2.legend()

        self._show("epoch", self.epoch_image, draw)
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


def hide_finished_progress_bars() -> None:
    """Make tqdm's notebook progress bars *hide* when they finish with ``leave=False``.

    tqdm closes such a bar's widget models, but the notebook keeps the output that displays
    them: once the notebook is saved and reopened (or the page reloaded) that output shows
    "Error displaying widget: model not found". A hidden bar keeps its few small models, so
    it renders as nothing, now and after reopening. Only tqdm's notebook bar is changed (a bar
    that ended in an error stays visible, as before); calling this twice does nothing more.
    :func:`bgad_lite.course.setup_notebook` calls it.
    """
    try:
        from tqdm.notebook import tqdm_notebook
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    if getattr(tqdm_notebook.display, "_bgad_hides_finished", False):
        return
    original = tqdm_notebook.display

    def display(self, msg=None, pos=None, close=False, bar_style=None, check_delay=True):
        if close:
            _, bar, _ = self.container.children
            if bar.bar_style != "danger":  # tqdm keeps a failed bar on screen
                self.container.layout.display = "none"  # hidden, its models stay: nothing goes missing
            return None
        return original(self, msg, pos, close=close, bar_style=bar_style, check_delay=check_delay)

    display._bgad_hides_finished = True
    tqdm_notebook.display = display


def widget_frontend_problem() -> str | None:
    """What keeps this environment's JupyterLab from showing ipywidgets, or ``None``.

    The known case: ipywidgets 7.x with ``jupyterlab_widgets`` 3 (the ipywidgets-8 frontend),
    which ipywidgets 7.7.x allows and pip picks: JupyterLab 4 then shows no widget at all
    ("module @jupyter-widgets/controls ^1.5.0 is not registered"). ``jupyterlab_widgets`` 1.1.x
    or ipywidgets ≥ 7.8.5 (which requires it) fixes it. Colab has its own frontend: never a problem.
    """
    import sys
    from importlib.metadata import PackageNotFoundError, version

    if W is None or "google.colab" in sys.modules or int(W.__version__.split(".")[0]) >= 8:
        return None
    try:
        frontend = version("jupyterlab_widgets")
    except PackageNotFoundError:
        return None
    if int(frontend.split(".")[0]) < 3:
        return None
    return (f"ipywidgets {W.__version__} is installed with jupyterlab_widgets {frontend} (the ipywidgets-8 "
            "frontend): a JupyterLab running from this environment shows no widget. Fix: pip install "
            "'jupyterlab_widgets>=1.1,<3' (or ipywidgets>=7.8.5, or ipywidgets 8), restart JupyterLab, reload.")


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
    problem = widget_frontend_problem()
    if problem:
        import warnings

        warnings.warn(problem, stacklevel=2)
    if evaluation is None:
        from .pipeline import evaluate
        evaluation = evaluate(flows, prep, cfg)
    return MarginExplorer(prep, evaluation, snapshots, level, title, threshold)
