"""The margin explorer widget (:class:`MarginExplorer`); :func:`bgad_lite.explore.widgets.margin_explorer`
builds it for a trained model. What each control and view shows is described there."""

from __future__ import annotations

import html
import time

import matplotlib
import numpy as np

from ..boundary import boundaries_from_normals
from ..scoring import SCORE_TOP, anomaly_maps, image_scores
from .margins import (
    GROUPS,
    NORMAL,
    SEEN,
    UNSEEN,
    EpochRecorder,
    epoch_xlim,
    fiber_l_by_group,
    image_groups,
    l_range,
    margin_fractions,
    rates_at,
)
from .plots import (
    COLORS,
    css_color,
    map_vmax,
    new_figure,
    plot_fiber_histogram,
    plot_image_scores,
    plot_map_tile,
    plot_overlay,
    to_png,
)
from .widget_html import (
    COLUMN,
    STALE_KERNEL_CSS,
    STALE_KERNEL_HINT,
    STALE_KERNEL_MSG,
    VIEW_PX,
    html_table,
    percent,
    text_block,
)

try:  # ipywidgets is a dependency, but keep ``import bgad_lite.explore.explorer`` cheap to fail clearly
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
        self.prep, self.ev, self.recorder, self.title = prep, evaluation, recorder, title
        self.normalizer = prep.cfg.normalizer
        self.state: dict = {}
        self.png: dict[str, bytes] = {}
        self._precompute()
        self._build_controls(level, threshold)
        self._build_views()
        super().__init__(self._layout(), layout=W.Layout(width=f"{2 * COLUMN + 14}px", align_items="flex-start",
                                                         padding="2px"))
        self._add_css_classes()
        self._wire()
        self.update()  # the static default render
        self._status("drawn")

    # --- construction -------------------------------------------------------------
    def _precompute(self) -> None:
        """What every redraw needs and no control changes: l of the training normals and of the
        test fibers by group, per level; one l-axis per level; image scores, maps and groups."""
        prep, ev = self.prep, self.ev
        self.l_train = [t.reshape(-1).double().numpy() / self.normalizer for t in ev["train_logps"]]  # (n·H·W,)
        self.l_test = [fiber_l_by_group(prep, t, self.normalizer) for t in ev["test_logps"]]  # {group: l}
        self.xlim = [l_range([*self.l_test[lv].values(), self.l_train[lv]]) for lv in range(len(self.l_test))]
        self.scores = np.asarray(ev["scores"])  # (N_test,)
        self.maps = ev["maps"]  # (N_test, h, w)
        self.groups = image_groups(prep)  # (N_test,)
        train_maps = anomaly_maps(ev["train_logps"], prep.image_hw, ev["level_ref"])
        self.train_scores = image_scores(train_maps, SCORE_TOP)  # (N_train,), scored as the test images
        self.vmax = map_vmax(self.maps)

    @staticmethod
    def _slider(cls, width: int, **kw):
        # Controls carry no ``description``: ipywidgets 7 typesets descriptions with the MathJax 2
        # API, which JupyterLab 4 (MathJax 3) lacks (one console error per control). Each control
        # has an HTML label beside it instead (see ``_labelled``).
        return cls(continuous_update=False, layout=W.Layout(width=f"{width}px"), **kw)

    def _build_controls(self, level: int, threshold: float | None) -> None:
        """β, τ, level, threshold t, test image and (with snapshots) epoch: API common to 7.7 and 8."""
        cfg = self.prep.cfg
        half = COLUMN // 2 - 4
        self.beta = self._slider(W.FloatSlider, half - 26, value=cfg.beta, min=0.001, max=0.3, step=0.001,
                                 readout_format=".3f")
        self.tau = self._slider(W.FloatSlider, half - 26, value=cfg.tau, min=0.005, max=1.0, step=0.005,
                                readout_format=".3f")
        shapes = [tuple(t.shape[1:]) for t in self.ev["test_logps"]]  # (H_j, W_j) per level
        self.level = W.Dropdown(options=[(f"level {i} ({h}x{w} fibers)", i) for i, (h, w) in enumerate(shapes)],
                                value=min(level, len(shapes) - 1), layout=W.Layout(width="180px"))
        self.threshold = self._threshold_slider(threshold)
        options = [(f"#{i:03d} {t}" + ("" if g == NORMAL else f" ({g})"), i)
                   for i, (t, g) in enumerate(zip(self.prep.test_types, self.groups))]
        first = next((i for g in (UNSEEN, SEEN, NORMAL) for i in np.flatnonzero(self.groups == g)), 0)
        self.image = W.Dropdown(options=options, value=int(first), layout=W.Layout(width=f"{COLUMN - 92}px"))
        self.epoch = None
        if self.recorder is not None and self.recorder.snapshots:
            epochs = [s.epoch for s in self.recorder.snapshots]
            self.epoch = self._slider(W.IntSlider, COLUMN - 112, value=epochs[-1], min=min(epochs),
                                      max=max(epochs), step=1)

    def _threshold_slider(self, threshold: float | None):
        """The t slider over every test and training score; default t: the run's operating point, set from
        held-out normal images alone (threshold.py), else the highest training-normal score. Its step is 1/400
        of the normals' span, not of the whole range: a pushed defect can score hundreds of nats."""
        lo = float(min(self.scores.min(), self.train_scores.min()))
        hi = float(max(self.scores.max(), self.train_scores.max(), self.ev.get("threshold", lo)))
        default_t = float(self.ev.get("threshold", self.train_scores.max())) if threshold is None else float(threshold)
        normal_hi = max(default_t, float(self.train_scores.max()))
        step = max(min(hi - lo, normal_hi - lo) / 400, 1e-6)
        return self._slider(W.FloatSlider, COLUMN - 92, value=min(max(default_t, lo), hi), min=lo, max=hi + step,
                            step=step, readout_format=".4f")

    def _build_views(self) -> None:
        """The four PNG views and the three HTML panels.

        Views are Image widgets whose PNG bytes are replaced on every redraw: plain synced state
        that every frontend (Colab's ipywidgets 7, Lab, nbclient, HTML exports) shows, with no
        output capturing (``with Output():`` intermittently hung nbclient when executing notebooks).
        Each is shown at exactly the PNG's pixel size: a flex box would otherwise stretch it.
        """
        def view(name):
            w, h = VIEW_PX[name]
            return W.Image(format="png", layout=W.Layout(width=f"{w}px", height=f"{h}px", min_width=f"{w}px"))

        self.hist_image, self.score_image, self.overlay_image, self.epoch_image = (
            view(n) for n in ("hist", "scores", "overlay", "epoch"))
        self.boundary_html = W.HTML(layout=W.Layout(width=f"{COLUMN}px"))
        self.metrics_html = W.HTML(layout=W.Layout(width=f"{COLUMN}px"))
        self.status_html = W.HTML()

    @staticmethod
    def _labelled(label: str, control, width: int):
        return W.HBox([W.HTML(label, layout=W.Layout(width=f"{width}px")), control])

    @staticmethod
    def _column(*children):
        return W.VBox(list(children), layout=W.Layout(width=f"{COLUMN}px", align_items="flex-start",
                                                      overflow="hidden"))

    @staticmethod
    def _row(*children):
        return W.HBox(list(children), layout=W.Layout(align_items="flex-start", justify_content="space-between",
                                                      width=f"{2 * COLUMN + 10}px", margin="0 0 4px 0"))

    def _layout(self) -> list:
        """The rows: header + level; histogram | epoch panel; scores | overlay; the two tables; status."""
        header = W.HTML(text_block(
            f"<b style='font-size:14px'>Margin explorer — {html.escape(self.title)}</b>&nbsp; β, τ set "
            "b<sub>n</sub> and b<sub>a</sub> = b<sub>n</sub> − τ; images scoring ≥ t are flagged"
            f"{STALE_KERNEL_CSS}<div class='bgad-stale-msg'>{STALE_KERNEL_MSG}</div>"),
            layout=W.Layout(width=f"{2 * COLUMN - 230 + 10}px"))
        lab, col, row = self._labelled, self._column, self._row
        if self.epoch is not None:
            right = col(lab("phase-2 epoch", self.epoch, 100), self.epoch_image)
        else:
            right = col(W.HTML(text_block("<i>Pass</i> <code>snapshots=EpochRecorder(...)</code> <i>recorded "
                                     "during</i> <code>fit_variant</code> <i>for the phase-2 epoch panel.</i>")))
        return [row(header, lab("level", self.level, 50)),
                row(col(W.HBox([lab("β", self.beta, 18), lab("τ", self.tau, 18)]), self.hist_image), right),
                row(col(lab("threshold t", self.threshold, 80), self.score_image),
                    col(lab("test image", self.image, 80), self.overlay_image)),
                row(self.boundary_html, self.metrics_html),
                self.status_html]

    def _add_css_classes(self) -> None:
        """CSS classes ``bgad-<name>``: how tests (and a user's styles) find the parts."""
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

    def _wire(self) -> None:
        """Each control redraws only the views that depend on it."""
        for w in (self.beta, self.tau, self.level):
            w.observe(self._on_boundary, names="value")
        self.threshold.observe(self._on_threshold, names="value")
        self.image.observe(self._on_image, names="value")
        if self.epoch is not None:
            self.epoch.observe(self._on_epoch, names="value")

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
        return boundaries_from_normals(self.ev["train_logps"][self.level.value], self.beta.value, self.tau.value,
                                       self.normalizer)

    def _show(self, view: str, image, draw) -> None:
        """Draw a view at its pixel size with small fonts, keep the PNG, show it."""
        w, h = VIEW_PX[view]
        with matplotlib.rc_context({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                                    "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7}):
            fig = new_figure(w / 90, h / 90)
            draw(fig)
            self.png[view] = to_png(fig)
        image.value = self.png[view]

    def update_boundary(self) -> None:
        lv = self.level.value
        b_n, b_a = self.boundaries()
        groups = self.l_test[lv]
        self._show("hist", self.hist_image, lambda fig: plot_fiber_histogram(
            fig.subplots(), groups, b_n, b_a, self.xlim[lv], l_train=self.l_train[lv],
            title=f"{self.title}: test fibers, level {lv}"))
        frac = {g: margin_fractions(v, b_n, b_a) for g, v in groups.items()}
        self.state.update(b_n=b_n, b_a=b_a, beta=self.beta.value, tau=self.tau.value, level=lv, fiber_fractions=frac,
                          # in the dtype b_n came from (float32 logp / N), so the fiber at b_n is not "below" it
                          train_below_bn=float((self.ev["train_logps"][lv] / self.normalizer < b_n).double().mean()))
        table = html_table(["test fibers", "n", "l &lt; b<sub>a</sub>", "margin", "l &gt; b<sub>n</sub>"],
                       [[g, str(len(groups[g])), percent(frac[g]["below_ba"]), percent(frac[g]["margin"]),
                         percent(frac[g]["above_bn"])] for g in GROUPS],
                       [css_color(g) for g in GROUPS])
        self.boundary_html.value = text_block(
            f"<b>b<sub>n</sub> = {b_n:.4f}, b<sub>a</sub> = {b_a:.4f}</b> (level {lv}); "
            f"{percent(self.state['train_below_bn'])} of the training normal fibers lie below b<sub>n</sub> "
            f"(≈ β = {self.beta.value:.3f})" + table +
            "BG-SPP pulls normals below b<sub>n</sub> up, pushes anomalies above b<sub>a</sub> down.")

    def update_scores(self) -> None:
        t, i = self.threshold.value, self.image.value
        r = rates_at(self.scores, self.groups, t)

        def draw(fig):
            ax = fig.subplots()
            plot_image_scores(ax, self.scores, self.groups, t, i)
            ax.axvline(self.train_scores.max(), color="gray", ls=":", lw=1)
            ax.set_title(f"test images: t = {t:.3f} flags {r['flagged_normal']} normal, "
                         f"{r['flagged_seen'] + r['flagged_unseen']} anomalous")
            ax.set_xlabel("image score: mean of the map's top 1 %, nats (dotted: highest training normal)")

        self._show("scores", self.score_image, draw)

    def update_overlay(self) -> None:
        i, t = self.image.value, self.threshold.value
        p = self.prep
        verdict = "flagged" if self.scores[i] >= t else "passed"
        title = f"#{i} {p.test_types[i]} ({self.groups[i]})\nscore {self.scores[i]:.3f}: {verdict}"
        self._show("overlay", self.overlay_image, lambda fig: plot_overlay(
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

        table = html_table(
            ["test images", f"at t = {t:.4f}", "flagged", "AUROC", "AUPRO"],
            [["normal", f"FPR {percent(r['fpr'])}", f"{r['flagged_normal']}/{r['n_normal']}", "", ""],
             ["seen-type anomalies", f"TPR {percent(r['tpr_seen'])}", f"{r['flagged_seen']}/{r['n_seen']}",
              auroc("seen"), auroc("seen", "aupro")],
             ["unseen-type anomalies", f"TPR {percent(r['tpr_unseen'])}",
              f"{r['flagged_unseen']}/{r['n_unseen']}", auroc("unseen"), auroc("unseen", "aupro")],
             ["all", "", "", auroc("all"), auroc("all", "aupro")]],
            [css_color(NORMAL), css_color(SEEN), css_color(UNSEEN), None])
        self.metrics_html.value = text_block(
            table + "AUROC and AUPRO sweep every threshold: t changes only TPR and FPR.")

    def update_epoch(self) -> None:
        rec = self.recorder
        snap = min(rec.snapshots, key=lambda s: abs(s.epoch - self.epoch.value))  # the nearest recorded epoch
        b_n, b_a = boundaries_from_normals(snap.l_train, self.beta.value, self.tau.value, normalizer=1.0)
        auc = rec.fiber_auroc()
        epochs = [s.epoch for s in rec.snapshots]

        def draw(fig):
            ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
            plot_fiber_histogram(ax, snap.l_by_group(rec.groups), b_n, b_a,
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
        fig = new_figure(11, 6.2)
        grid = fig.add_gridspec(2, 4)
        plot_fiber_histogram(fig.add_subplot(grid[0, :2]), self.l_test[lv], b_n, b_a, self.xlim[lv],
                             l_train=self.l_train[lv], title=f"{self.title}: test fibers, level {lv}, "
                             f"β={self.beta.value:.3f}, τ={self.tau.value:.3f}")
        ax = fig.add_subplot(grid[0, 2:])
        plot_image_scores(ax, self.scores, self.groups, t, i)
        r = rates_at(self.scores, self.groups, t)
        ax.set_title(f"t = {t:.3f}: FPR {percent(r['fpr'])}, TPR seen {percent(r['tpr_seen'])}, "
                     f"unseen {percent(r['tpr_unseen'])}")
        for k, j in enumerate(self._gallery(i)):
            plot_map_tile(fig.add_subplot(grid[1, k]), self.prep.test_images[j], self.prep.test_masks[j],
                          self.maps[j], t, self.vmax,
                          f"#{j} {self.prep.test_types[j]} ({self.groups[j]}) {self.scores[j]:.3f}")
        fig.supxlabel("bottom: the selected image and the highest-scoring image of each group — anomaly map "
                      "overlaid, red: true defect, green: map ≥ t", fontsize=9)
        return fig

    def _gallery(self, selected: int) -> list[int]:
        """The selected image and the highest-scoring image of each other group."""
        out = [selected]
        for g in GROUPS:
            sel = [j for j in np.flatnonzero(self.groups == g) if j not in out]
            if sel and len(out) < 4:
                out.append(int(max(sel, key=lambda j: self.scores[j])))
        return out
