"""Figures: images with masks, anomaly maps, log-likelihood histograms with b_n and b_a,
training curves. Each function returns a matplotlib Figure (or draws on a given Axes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .boundary import compute_boundaries

NORMAL_COLOR, ANOMALY_COLOR, MARGIN_COLOR = "tab:blue", "tab:red", "gold"


def show_image(ax, image: np.ndarray, mask: np.ndarray | None = None, title: str | None = None) -> None:
    """An image with its defect mask outlined in red."""
    ax.imshow(np.clip(image, 0, 1))
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=ANOMALY_COLOR, linewidths=0.8)
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


def plot_anomaly_maps(images, masks, maps_by_name: dict[str, np.ndarray], titles, vmax: float | None = None):
    """Rows: test images; columns: the image (mask outlined) and one anomaly map per model."""
    names = list(maps_by_name)
    fig, axes = plt.subplots(len(images), 1 + len(names), figsize=(1.8 * (1 + len(names)), 1.8 * len(images)),
                             squeeze=False)
    for r in range(len(images)):
        show_image(axes[r, 0], images[r], masks[r], titles[r])
        for c, name in enumerate(names, start=1):
            m = maps_by_name[name][r]
            axes[r, c].imshow(m, cmap="inferno", vmin=0, vmax=vmax or maps_by_name[name].max())
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def plot_logp_histogram(ax, l_normal: np.ndarray, l_anomaly: np.ndarray, b_n: float | None = None,
                        b_a: float | None = None, bins: int = 80, title: str | None = None) -> None:
    """Histograms of l = logp / N for normal and anomalous fibers, with b_n, b_a and the margin."""
    # Range from the pooled fibers: the far tail of anomalies (an unbounded push sends some to
    # l = -200) is clipped into the leftmost bin, so the normal peak and the margin stay readable.
    both = np.concatenate([l_normal, l_anomaly]) if len(l_anomaly) else l_normal
    lo, hi = np.percentile(both, [0.5, 100])
    edges = np.linspace(lo, hi, bins)
    ax.hist(np.clip(l_normal, lo, hi), edges, density=True, alpha=0.6, color=NORMAL_COLOR, label="normal")
    if len(l_anomaly):
        ax.hist(np.clip(l_anomaly, lo, hi), edges, density=True, alpha=0.6, color=ANOMALY_COLOR, label="anomalous")
    if b_n is not None and b_a is not None:
        ax.axvspan(b_a, b_n, color=MARGIN_COLOR, alpha=0.3, label="margin τ")
        ax.axvline(b_n, color=NORMAL_COLOR, ls="--", lw=1.2, label="$b_n$")
        ax.axvline(b_a, color=ANOMALY_COLOR, ls="--", lw=1.2, label="$b_a$")
    ax.set_xlabel("l = log p / N")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def fiber_logps(logps: torch.Tensor, masks: np.ndarray, normalizer: float):
    """Split one level's test logps (N, H, W) into normal / anomalous fibers of l = logp / N."""
    from .flow import downsample_masks

    m = downsample_masks(torch.from_numpy(masks), logps.shape[1], logps.shape[2]).numpy()
    l = logps.numpy() / normalizer
    return l[~m], l[m]


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


def save_run_figures(figdir: str | Path, prep, evals: dict, cfg, histories: dict | None = None,
                     diagnostics: dict | None = None) -> None:
    """The figures of ``bgad-lite run``: anomaly maps and histograms per variant, and
    (given the histories and diagnostics) what phase 2 did to the labelled anomalies."""
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
            ln, la = fiber_logps(ev["test_logps"][j], prep.test_masks, cfg.normalizer)
            train = ev["train_logps"][j].reshape(-1)
            b_n, b_a = compute_boundaries(train, None, cfg.beta, cfg.tau,
                                          cfg.normalizer)
            plot_logp_histogram(axes[r, j], ln, la, float(b_n), float(b_a), title=f"{name}, level {j} (test)")
    fig.tight_layout()
    fig.savefig(figdir / "logp_histograms.png", dpi=110)
    plt.close(fig)
    if histories is not None and diagnostics is not None:
        fig = plot_phase2_diagnostics(histories, diagnostics["rates"])
        fig.savefig(figdir / "phase2_diagnostics.png", dpi=110)
        plt.close(fig)
