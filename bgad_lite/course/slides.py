"""Slide-ready figures of the course: ``bgad-lite slides --out DIR``.

One run trains what the figures need (phase 1 from the cache that the notebooks
share, then the three phase-2 variants of notebook 04, recording BGAD epoch by
epoch as notebook 05 does) and writes four 16:9 PNGs at projector resolution
(2560 x 1440 px at the default 200 dpi), with fonts large enough for the back row:

- ``boundary_histograms.png`` — level-1 test-fiber histograms (normal, seen, unseen) with
  b_n, b_a and the margin, after phase 1 and after each phase-2 variant;
- ``anomaly_maps.png`` — one test image per defect type and the maps of each model;
- ``seen_unseen.png`` — image AUROC on all / seen / unseen types, bars and numbers;
- ``margin_over_epochs.png`` — the BGAD histograms at four epochs of phase 2.

A ``README.md`` beside them records the settings and the numbers shown.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .. import pipeline
from ..boundary import boundaries_from_normals
from ..explore.margins import EpochRecorder, boundary_range, epoch_xlim, fiber_l_by_group, image_groups
from ..explore.plots import map_vmax, pick_examples, plot_fiber_histogram, show_image
from . import setup

#: Slide size in inches (16:9); at 200 dpi: 2560 x 1440 pixels.
SLIDE = (12.8, 7.2)
FONT = {"font.size": 15, "axes.titlesize": 17, "axes.labelsize": 15, "legend.fontsize": 12,
        "xtick.labelsize": 13, "ytick.labelsize": 13}
VARIANTS = ("unsupervised", "naive_push", "bgad")
LEVEL = 1  # stride 8: the level the notebooks show


def _train(category: str, cache_dir: str, smoke: bool):
    cfg = setup.make_config("textures", category, smoke=smoke, cache_dir=cache_dir, device=None)
    prep = pipeline.prepare(cfg, progress=False)
    phase1, _ = setup.phase1(prep, progress=False)
    recorder = EpochRecorder(prep, cfg.normalizer, cfg.cond_dim, level=LEVEL)
    recorder.record(0, phase1)
    evals = {"phase 1": pipeline.evaluate(phase1, prep)}
    for v in VARIANTS:
        flows, _, _ = pipeline.fit_variant(prep, phase1, v, progress=False,
                                           on_epoch_end=recorder if v == "bgad" else None)
        evals[v] = pipeline.evaluate(flows, prep)
    return cfg, prep, evals, recorder


def boundary_histograms(prep, evals: dict, cfg) -> Figure:
    fig = Figure(figsize=SLIDE, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    by_model = {name: fiber_l_by_group(prep, e["test_logps"][LEVEL], cfg.normalizer) for name, e in evals.items()}
    bounds = {name: boundaries_from_normals(e["train_logps"][LEVEL], cfg.beta, cfg.tau, cfg.normalizer)
              for name, e in evals.items()}
    ranges = [boundary_range(list(by_model[name].values()), *bounds[name]) for name in evals]
    xlim = (min(r[0] for r in ranges), max(r[1] for r in ranges))  # one axis for the four models
    for ax, name in zip(axes, evals):
        b_n, b_a = bounds[name]
        plot_fiber_histogram(ax, by_model[name], b_n, b_a, xlim, title=f"{name}")
        ax.set_xlabel("l = logp / N")
        if ax is not axes[0]:
            ax.get_legend().remove()
    axes[0].legend(fontsize=11, loc="upper left")
    fig.suptitle(f"Test fibers of level {LEVEL}: normal, seen and unseen defects, with b_n, b_a = b_n − τ "
                 f"(β = {cfg.beta}, τ = {cfg.tau})")
    return fig


def anomaly_map_grid(prep, evals: dict) -> Figure:
    idx = pick_examples(prep.test_types, per_type=1)[:5]
    names = list(evals)
    fig = Figure(figsize=SLIDE, layout="constrained")
    axes = fig.subplots(len(idx), 1 + len(names), squeeze=False)
    vmax = {n: map_vmax(evals[n]["maps"]) for n in names}
    groups = image_groups(prep)  # (N_test,) normal / seen / unseen
    for r, i in enumerate(idx):
        show_image(axes[r, 0], prep.test_images[i], prep.test_masks[i], f"{prep.test_types[i]} ({groups[i]})")
        for c, n in enumerate(names, start=1):
            axes[r, c].imshow(evals[n]["maps"][i], cmap="inferno", vmin=0, vmax=vmax[n])
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(n)
    fig.suptitle("Anomaly maps (true defect outlined in the first column)")
    return fig


def seen_unseen_figure(evals: dict) -> Figure:
    fig = Figure(figsize=SLIDE, layout="constrained")
    ax = fig.subplots()
    subsets = [s for s in ("all", "seen", "unseen") if s in evals["bgad"]["metrics"]]
    width = 0.8 / len(evals)
    for k, (name, e) in enumerate(evals.items()):
        vals = [e["metrics"][s]["image_auroc"] for s in subsets]
        bars = ax.bar(np.arange(len(subsets)) + k * width, vals, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in vals], fontsize=12, padding=3)
    ax.set_xticks(np.arange(len(subsets)) + width * (len(evals) - 1) / 2, subsets)
    lo = min(e["metrics"][s]["image_auroc"] for e in evals.values() for s in subsets)
    ax.set_ylim(max(0.0, lo - 0.1), 1.08)
    ax.set_ylabel("image AUROC")
    ax.legend(loc="upper left", ncol=len(evals))
    ax.set_title("Image AUROC on all, seen and unseen defect types (each with all normal test images)")
    return fig


def margin_over_epochs(recorder, cfg, n_panels: int = 4) -> Figure:
    snaps = recorder.snapshots
    pick = np.unique(np.linspace(0, len(snaps) - 1, min(n_panels, len(snaps))).round().astype(int))
    fig = Figure(figsize=SLIDE, layout="constrained")
    axes = fig.subplots(2, (len(pick) + 1) // 2, sharex=True, squeeze=False).ravel()
    xlim = epoch_xlim(snaps, recorder.groups)
    for ax, i in zip(axes, pick):
        s = snaps[i]
        b_n, b_a = boundaries_from_normals(s.l_train, cfg.beta, cfg.tau, normalizer=1.0)  # l_train is already logp / N
        plot_fiber_histogram(ax, s.l_by_group(recorder.groups), b_n, b_a, xlim,
                             title=f"epoch {s.epoch}" + (" (end of phase 1)" if s.epoch == 0 else ""))
        ax.set_xlabel("l = logp / N")
        if ax is not axes[0]:
            ax.get_legend().remove()
    axes[0].legend(fontsize=11, loc="upper left")
    for ax in axes[len(pick):]:
        ax.set_axis_off()
    fig.suptitle(f"BGAD phase 2: the margin opens (level {recorder.level})")
    return fig


def write_slides(out_dir: str | Path = "runs/slides", category: str = "grass", cache_dir: str = "runs/cache",
                 dpi: int = 200, smoke: bool = False) -> list[Path]:
    """Train what the figures need and write them; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg, prep, evals, recorder = _train(category, cache_dir, smoke)
    paths = []
    with matplotlib.rc_context(FONT):
        figures = {"boundary_histograms": boundary_histograms(prep, evals, cfg),
                   "anomaly_maps": anomaly_map_grid(prep, evals),
                   "seen_unseen": seen_unseen_figure(evals),
                   "margin_over_epochs": margin_over_epochs(recorder, cfg)}
        for name, fig in figures.items():
            path = out / f"{name}.png"
            fig.savefig(path, dpi=dpi)
            paths.append(path)
    rows = [f"| {name} | " + " | ".join(f"{e['metrics'][s]['image_auroc']:.3f}" if s in e["metrics"] else "—"
                                        for s in ("all", "seen", "unseen")) + " |" for name, e in evals.items()]
    note = ("Smoke run: the numbers only show that everything runs.\n\n" if smoke or cfg.image_size < 128 else "")
    (out / "README.md").write_text(
        f"# Slide figures\n\n{note}Category `{cfg.category}`, {cfg.image_size} px, epochs "
        f"{cfg.epochs_phase1} + {cfg.epochs_phase2}, seed {cfg.seed}, β = {cfg.beta}, τ = {cfg.tau}, "
        f"{dpi} dpi.\n\n| model | image AUROC all | seen | unseen |\n|---|---|---|---|\n" + "\n".join(rows) + "\n",
        encoding="utf-8")
    paths.append(out / "README.md")
    return paths
