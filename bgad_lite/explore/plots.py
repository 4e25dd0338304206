"""Every figure of the course, in one palette and on one l-axis rule.

Drawing only: the numbers come from :mod:`bgad_lite.explore.margins` (groups, boundaries, l-axis) and
the pipeline. One module rather than two (course figures here, explorer views elsewhere) because
they must agree: a normal fiber, a seen or unseen defect, b_n, b_a, the margin and the threshold t
have the same colour (:data:`COLORS`) in notebooks 02–05, the run's figures, the slides and the
margin explorer, and every histogram of l = logp / N is drawn by :func:`plot_fiber_histogram`
on the axis of :func:`bgad_lite.explore.margins.l_range`.

- images: :func:`show_image`, :func:`plot_examples`, :func:`plot_anomaly_maps`,
  :func:`plot_overlay`, :func:`plot_map_tile`;
- log-likelihoods: :func:`plot_fiber_histogram` (matplotlib), :func:`fiber_histogram_traces`
  (plotly, pre-binned), :func:`epoch_figure`, :func:`epoch_animation` (phase 2 epoch by epoch);
- image scores and training: :func:`plot_image_scores`, :func:`plot_training_curve`,
  :func:`plot_phase2_diagnostics`, :func:`save_run_figures`.

Functions take an Axes or return a Figure. :func:`new_figure` makes a Figure without pyplot state
(it never pops up on its own: the explorer draws its views with it).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from ..boundary import boundaries_from_normals
from .margins import GROUPS, NORMAL, SEEN, UNSEEN, boundary_range, epoch_xlim, fiber_l_by_group, l_range

#: The palette of every figure: the fiber / image groups, "anomalous" (a true defect, e.g. its
#: mask outline, and b_a), the margin between b_a and b_n, the threshold t, the training normals.
COLORS = {NORMAL: "tab:blue", SEEN: "tab:red", UNSEEN: "tab:purple", "anomalous": "tab:red", "margin": "gold",
          "threshold": "tab:green", "train": "black"}


def css_color(name: str) -> str:
    """A :data:`COLORS` entry as ``#rrggbb``, for plotly and HTML."""
    return to_hex(COLORS[name])


def new_figure(width: float, height: float, dpi: int = 90) -> Figure:
    """A constrained-layout Figure of width x height inches, outside pyplot."""
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def to_png(fig) -> bytes:
    """The figure as PNG bytes at its own size and dpi."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def show_image(ax, image: np.ndarray, mask: np.ndarray | None = None, title: str | None = None) -> None:
    """An image with its defect mask outlined in red."""
    ax.imshow(np.clip(image, 0, 1))
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=COLORS["anomalous"], linewidths=0.8)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def plot_examples(images, masks, titles, ncols: int = 6):
    """A grid of images with mask outlines."""
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.8 * ncols, 1.9 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(ax, images[i], masks[i], titles[i])
        else:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def pick_examples(types: np.ndarray, per_type: int = 2) -> list[int]:
    """Indices of the first ``per_type`` test images of each type ("good" first)."""
    order = ["good"] + sorted(set(types) - {"good"})
    return [i for t in order for i in np.flatnonzero(types == t)[:per_type]]


def map_vmax(maps: np.ndarray) -> float:
    """The top of an anomaly map's colour scale: the 99th percentile of the maps' pixels. A map is in
    nats and not capped, so a few pixels of a pushed defect can lie thousands of nats out; a scale set by
    the maximum would leave every other pixel black."""
    return float(np.percentile(maps, 99))


def plot_anomaly_maps(images, masks, maps_by_name: dict[str, np.ndarray], titles, vmax: float | None = None):
    """Rows: test images; columns: the image (mask outlined) and one anomaly map per model, each model on
    its own colour scale (:func:`map_vmax` of its maps shown) unless ``vmax`` is given."""
    names = list(maps_by_name)
    fig, axes = plt.subplots(len(images), 1 + len(names), figsize=(1.8 * (1 + len(names)), 1.8 * len(images)),
                             squeeze=False)
    for r in range(len(images)):
        show_image(axes[r, 0], images[r], masks[r], titles[r])
        for c, name in enumerate(names, start=1):
            m = maps_by_name[name][r]
            axes[r, c].imshow(m, cmap="inferno", vmin=0, vmax=vmax or map_vmax(maps_by_name[name]))
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def plot_fiber_histogram(ax, l_by_group: dict[str, np.ndarray], b_n: float | None = None,
                         b_a: float | None = None, xlim: tuple[float, float] | None = None,
                         l_train: np.ndarray | None = None, bins: int = 70, title: str | None = None) -> None:
    """Density histograms of l = logp / N by group, with b_n, b_a and the margin between them.

    ``l_by_group``: {group: (M_g,) l values}, groups from "normal", "seen", "unseen" (e.g.
    :func:`bgad_lite.explore.margins.fiber_l_by_group`) or "anomalous"; an empty group draws nothing.
    ``bins`` bars on ``xlim`` (default :func:`bgad_lite.explore.margins.l_range` of the groups and
    ``l_train``); values outside are clipped into the first or last bar, so the far tail of
    pushed anomalies stays counted, and the edge bars then say how many they hold.
    ``l_train``: the training normals, as an outline.
    """
    if xlim is None:
        xlim = l_range(list(l_by_group.values()) + ([] if l_train is None else [l_train]))
    edges = np.linspace(xlim[0], xlim[1], bins + 1)  # (bins + 1,)
    for g, v in l_by_group.items():
        if len(v):
            ax.hist(np.clip(v, *xlim), edges, density=True, alpha=0.5, color=COLORS[g], label=f"{g} ({len(v)})")
    if l_train is not None and len(l_train):
        ax.hist(np.clip(l_train, *xlim), edges, density=True, histtype="step", color=COLORS["train"], lw=0.8,
                label="train normal")
    if b_n is not None and b_a is not None:
        ax.axvspan(b_a, b_n, color=COLORS["margin"], alpha=0.3, label="margin τ")
        ax.axvline(b_n, color=COLORS[NORMAL], ls="--", lw=1.3, label=f"$b_n$ = {b_n:.3f}")
        ax.axvline(b_a, color=COLORS["anomalous"], ls="--", lw=1.3, label=f"$b_a$ = {b_a:.3f}")
    below = sum(int((np.asarray(v) < xlim[0]).sum()) for v in l_by_group.values())
    above = sum(int((np.asarray(v) > xlim[1]).sum()) for v in l_by_group.values())
    if below:
        ax.text(0.02, 0.3, f"first bar: {below} fiber{'s' * (below != 1)}\nwith l < {xlim[0]:.2f}",
                transform=ax.transAxes, fontsize=6, va="center")
    if above:
        ax.text(0.98, 0.97, f"last bar: {above} fiber{'s' * (above != 1)}\nwith l > {xlim[1]:.2f}",
                transform=ax.transAxes, fontsize=6, va="top", ha="right")
    ax.set_xlim(*xlim)
    ax.set_xlabel("l = log p / N  (right: more normal)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title)


def fiber_histogram_traces(l_by_group: dict[str, np.ndarray], xlim: tuple[float, float], bins: int = 60,
                           prefix: str = "", **bar) -> list:
    """The plotly version of :func:`plot_fiber_histogram`'s bars: one pre-binned ``go.Bar``
    of densities per group, named ``prefix + group`` (small files: ``bins`` numbers per group,
    not every fiber). ``bar``: more ``go.Bar`` arguments (e.g. ``visible``)."""
    import plotly.graph_objects as go  # heavy (about a second): only the interactive figures need it

    edges = np.linspace(*xlim, bins + 1)  # (bins + 1,)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    out = []
    for g, v in l_by_group.items():
        dens = np.histogram(np.clip(v, *xlim), edges, density=True)[0] if len(v) else np.zeros(bins)
        out.append(go.Bar(x=centres, y=dens, width=width, name=f"{prefix}{g}",
                          marker_color=css_color(g), opacity=0.55, **bar))
    return out


def plot_image_scores(ax, scores: np.ndarray, groups: np.ndarray, threshold: float,
                      selected: int | None = None) -> None:
    """Image scores as a strip per group, the threshold t, and the selected image circled. The axis is
    linear up to 1 nat and logarithmic above (symlog): a pushed defect can score hundreds of nats, and
    on a linear axis every normal image would sit in one spot at the left."""
    rng = np.random.default_rng(0)
    for row, g in enumerate(GROUPS):
        sel = np.flatnonzero(groups == g)
        y = row + rng.uniform(-0.18, 0.18, len(sel))
        ax.scatter(scores[sel], y, s=14, color=COLORS[g], alpha=0.8)
        if selected is not None and selected in sel:
            ax.scatter([scores[selected]], [y[list(sel).index(selected)]], s=110, facecolors="none",
                       edgecolors="black", lw=1.5)
    ax.axvline(threshold, color=COLORS["threshold"], lw=1.5)
    ax.axvspan(threshold, max(scores.max(), threshold) * 1.02 + 1e-9, color=COLORS["threshold"], alpha=0.08)
    ax.set_yticks([0, 1, 2], list(GROUPS))
    ax.set_ylim(-0.5, 2.5)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=min(0.0, float(scores.min())))  # symlog pads below 0, where no score lies
    ax.set_xlabel("image score: mean of the map's top 1 %, nats (≥ t: flagged)")


def _outline(ax, region: np.ndarray, color: str) -> None:
    if region.any():
        ax.contour(region.astype(float), levels=[0.5], colors=color, linewidths=1.0)


def plot_overlay(ax_img, ax_map, image: np.ndarray, mask: np.ndarray, amap: np.ndarray, threshold: float,
                 vmax: float, title: str) -> None:
    """The image with its true defect (red outline) and the area of its map ≥ t (green),
    and its anomaly map on a fixed colour scale."""
    ax_img.imshow(np.clip(image, 0, 1))
    _outline(ax_img, mask, COLORS["anomalous"])
    _outline(ax_img, amap >= threshold, COLORS["threshold"])
    ax_img.set_title(title, fontsize=8)
    ax_map.imshow(amap, cmap="inferno", vmin=0, vmax=vmax)
    _outline(ax_map, amap >= threshold, COLORS["threshold"])
    ax_map.set_title("anomaly map\n(green: ≥ threshold t)", fontsize=8)
    for ax in (ax_img, ax_map):
        ax.set_axis_off()


def plot_map_tile(ax, image: np.ndarray, mask: np.ndarray, amap: np.ndarray, threshold: float, vmax: float,
                  title: str) -> None:
    """One small panel: the image with its anomaly map overlaid, the true defect (red) and the
    area ≥ t (green) outlined."""
    ax.imshow(np.clip(image, 0, 1))
    ax.imshow(amap, cmap="inferno", vmin=0, vmax=vmax, alpha=0.45)
    _outline(ax, mask, COLORS["anomalous"])
    _outline(ax, amap >= threshold, COLORS["threshold"])
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def epoch_figure(recorder, beta: float = 0.01, tau: float = 0.1, epochs=None, ncols: int = 4) -> Figure:
    """Static small multiples: the fiber histograms of an :class:`~bgad_lite.explore.margins.EpochRecorder`
    at several epochs, each with that epoch's b_n, b_a (from its training normals, β, τ)."""
    snaps = recorder.snapshots
    if epochs is None:
        idx = np.unique(np.linspace(0, len(snaps) - 1, min(ncols, len(snaps))).round().astype(int))
        snaps = [snaps[i] for i in idx]
    else:
        snaps = [s for s in snaps if s.epoch in set(epochs)]
    xlim = epoch_xlim(recorder.snapshots, recorder.groups)
    fig = new_figure(3.4 * len(snaps), 2.8)
    axes = fig.subplots(1, len(snaps), squeeze=False, sharey=True)[0]
    for ax, s in zip(axes, snaps):
        b_n, b_a = boundaries_from_normals(s.l_train, beta, tau, normalizer=1.0)
        plot_fiber_histogram(ax, s.l_by_group(recorder.groups), b_n, b_a, xlim,
                             title=f"epoch {s.epoch}" + (" (phase 1)" if s.epoch == 0 else ""))
        if ax is not axes[0]:
            ax.get_legend().remove()
    return fig


def epoch_animation(recorder, beta: float = 0.01, tau: float = 0.1, bins: int = 60):
    """A plotly figure with a play button and an epoch slider: the fiber histograms of each
    snapshot (pre-binned, so the file stays small) with b_n, b_a and the margin. Plays
    without a kernel: in Colab, JupyterLab and exported HTML alike."""
    import plotly.graph_objects as go  # heavy (about a second): only the interactive figures need it

    xlim = epoch_xlim(recorder.snapshots, recorder.groups)

    def shapes(s):
        b_n, b_a = boundaries_from_normals(s.l_train, beta, tau, normalizer=1.0)
        return [dict(type="rect", xref="x", yref="paper", x0=b_a, x1=b_n, y0=0, y1=1, fillcolor=css_color("margin"),
                     opacity=0.3, line_width=0),
                dict(type="line", xref="x", yref="paper", x0=b_n, x1=b_n, y0=0, y1=1,
                     line=dict(color=css_color(NORMAL), dash="dash")),
                dict(type="line", xref="x", yref="paper", x0=b_a, x1=b_a, y0=0, y1=1,
                     line=dict(color=css_color("anomalous"), dash="dash"))]

    snaps = recorder.snapshots
    frames = [go.Frame(data=fiber_histogram_traces(s.l_by_group(recorder.groups), xlim, bins),
                       layout=dict(shapes=shapes(s)), name=str(s.epoch)) for s in snaps]
    fig = go.Figure(data=fiber_histogram_traces(snaps[0].l_by_group(recorder.groups), xlim, bins), frames=frames)
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


def plot_training_curve(history: list[dict[str, float]], keys=("ml", "pull", "push"), ax=None):
    """Mean loss terms per epoch, summed over levels."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3))
    for key in keys:
        vals = [sum(v for k, v in h.items() if k.split("/")[0] == key) for h in history]
        if any(vals):
            ax.plot(range(1, len(vals) + 1), vals, marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (sum over levels)")
    ax.legend()
    return fig or ax.figure


def plot_phase2_diagnostics(histories: dict, rates: dict):
    """Does phase 2 learn? Left: the push and pull terms per epoch (summed over levels) of each
    phase-2 variant. Right: per level, the fraction of labelled-anomaly fibers below b_a after
    phase 1 and after each variant (:func:`bgad_lite.diagnostics.boundary_rates`)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    for name, hist in histories.items():
        if name == "phase1" or not hist:
            continue
        for key, ls in (("push", "-"), ("pull", "--")):
            vals = [sum(v for k, v in h.items() if k.split("/")[0] == key) for h in hist]
            if any(vals):
                ax1.plot(range(1, len(vals) + 1), vals, ls=ls, marker=".", label=f"{name}: {key}")
    ax1.set_xlabel("phase-2 epoch")
    ax1.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax1.set_ylabel("loss term (sum over levels)")
    ax1.legend(fontsize=7)
    names = list(rates)
    n_levels = len(rates[names[0]])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [np.nan if r["labelled_below_b_a"] is None else 100 * r["labelled_below_b_a"] for r in rates[name]]
        ax2.bar(np.arange(n_levels) + i * width, vals, width, label=name)
    ax2.axhline(90, color="grey", ls=":", lw=1)
    ax2.set_xticks(np.arange(n_levels) + 0.4 - width / 2, [f"level {j}" for j in range(n_levels)])
    ax2.set_ylabel("labelled-anomaly fibers below $b_a$ (%)")
    ax2.set_ylim(0, 100)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_run_figures(figdir: str | Path, prep, evals: dict, histories: dict | None = None,
                     diagnostics: dict | None = None, beta: float = 0.01, tau: float = 0.1,
                     normalizer: float = 10.0) -> None:
    """The figures of ``bgad-lite run``: anomaly maps and histograms per variant (l = logp / N with
    the boundaries of β, τ), and (given the histories and diagnostics) what phase 2 did to the
    labelled anomalies."""
    figdir = Path(figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    idx = pick_examples(prep.test_types, per_type=1)
    titles = [str(prep.test_types[i]) for i in idx]
    fig = plot_anomaly_maps(prep.test_images[idx], prep.test_masks[idx],
                            {k: v["maps"][idx] for k, v in evals.items()}, titles)
    fig.savefig(figdir / "anomaly_maps.png", dpi=110)
    plt.close(fig)

    n_levels = len(next(iter(evals.values()))["test_logps"])
    fig, axes = plt.subplots(len(evals), n_levels, figsize=(3.6 * n_levels, 2.6 * len(evals)), squeeze=False)
    for r, (name, ev) in enumerate(evals.items()):
        for j in range(n_levels):
            l_by_group = fiber_l_by_group(prep, ev["test_logps"][j], normalizer)
            b_n, b_a = boundaries_from_normals(ev["train_logps"][j], beta, tau, normalizer)
            plot_fiber_histogram(axes[r, j], l_by_group, b_n, b_a, title=f"{name}, level {j} (test)",
                                 xlim=boundary_range(list(l_by_group.values()), b_n, b_a))
            if (r, j) != (0, 0):
                axes[r, j].get_legend().remove()
    fig.tight_layout()
    fig.savefig(figdir / "logp_histograms.png", dpi=110)
    plt.close(fig)
    if histories is not None and diagnostics is not None:
        fig = plot_phase2_diagnostics(histories, diagnostics["rates"])
        fig.savefig(figdir / "phase2_diagnostics.png", dpi=110)
        plt.close(fig)
