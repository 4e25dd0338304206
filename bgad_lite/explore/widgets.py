"""Step 7 — explore the margin: the interactive margin explorer of a trained model.

:func:`margin_explorer` takes any trained flows (phase 1, ``unsupervised``,
``naive_push``, ``bgad``) and the prepared data, and returns a widget with

- sliders for β and τ (and a level selector): the histogram of test-fiber
  log-likelihoods l = logp / N (normal, seen-type and unseen-type anomalous) with
  the explicit boundaries b_n, b_a and the margin between them, computed from the
  *training normals* exactly as :func:`bgad_lite.compute_boundaries` does, and the
  fractions of fibers on each side;
- a decision threshold t on the image score and a test-image selector: the image
  scores of normal / seen / unseen test images with t, the selected image's anomaly
  map with the region ≥ t, and what t implies (TPR on seen and unseen anomalies, FPR on
  normals) next to the threshold-free AUROCs;
- with ``snapshots`` (a :class:`bgad_lite.explore.margins.EpochRecorder` passed to
  ``fit_variant(..., on_epoch_end=...)``), an epoch slider replaying how the normal and
  anomalous distributions separate during phase 2.

The widget itself is :class:`bgad_lite.explore.explorer.MarginExplorer`: the numbers it shows come from
:mod:`bgad_lite.explore.margins`, its
pictures from :mod:`bgad_lite.explore.plots` (which also has the static :func:`~bgad_lite.explore.plots.epoch_figure`
and the self-contained plotly :func:`~bgad_lite.explore.plots.epoch_animation` for GitHub and HTML
exports, where no kernel runs the sliders; :meth:`MarginExplorer.static_figure` is the static
version of the explorer itself).

Only ipywidgets API common to 7.7 (Colab) and 8 is used (tests/test_browser.py runs it in
JupyterLab with both). Figures are matplotlib PNGs shown 1:1 in ``Image`` widgets, in two
columns that fit a laptop screen; every view is drawn once at construction.
"""

from __future__ import annotations

import importlib.metadata
import sys
import warnings

from ..config import BGADError
from ..evaluate import evaluate
from .explorer import MarginExplorer, W
from .margins import EpochRecorder


def widget_frontend_problem() -> str | None:
    """What keeps this environment's JupyterLab from showing ipywidgets, or ``None``.

    The known case: ipywidgets 7.x with ``jupyterlab_widgets`` 3 (the ipywidgets-8 frontend),
    which ipywidgets 7.7.x allows and pip picks: JupyterLab 4 then shows no widget at all
    ("module @jupyter-widgets/controls ^1.5.0 is not registered"). ``jupyterlab_widgets`` 1.1.x
    or ipywidgets ≥ 7.8.5 (which requires it) fixes it. Colab has its own frontend: never a problem.
    """
    if W is None or "google.colab" in sys.modules or int(W.__version__.split(".")[0]) >= 8:
        return None
    try:
        frontend = importlib.metadata.version("jupyterlab_widgets")
    except importlib.metadata.PackageNotFoundError:
        return None
    if int(frontend.split(".")[0]) < 3:
        return None
    return (f"ipywidgets {W.__version__} is installed with jupyterlab_widgets {frontend} (the ipywidgets-8 "
            "frontend): a JupyterLab running from this environment shows no widget. Fix: pip install "
            "'jupyterlab_widgets>=1.1,<3' (or ipywidgets>=7.8.5, or ipywidgets 8), restart JupyterLab, reload.")


def margin_explorer(flows, prep, *, evaluation: dict | None = None,
                    snapshots: EpochRecorder | None = None, level: int = 0, title: str = "model",
                    threshold: float | None = None) -> MarginExplorer:
    """The interactive margin explorer of a trained model; returns the widget (display it).

    ``flows``: any trained flows (phase 1 or a phase-2 variant); ``prep``: from
    :func:`bgad_lite.pipeline.prepare`; ``evaluation``: the result of
    :func:`bgad_lite.pipeline.evaluate` if already computed (else it is computed here);
    ``snapshots``: an :class:`EpochRecorder` filled during ``fit_variant`` (adds the
    epoch slider); ``threshold``: the initial image-score threshold (default: the run's
    operating point, set from held-out normal images alone — :mod:`bgad_lite.threshold`).
    """
    if W is None:  # pragma: no cover
        raise BGADError("the margin explorer needs ipywidgets: pip install 'ipywidgets>=7.7'.")
    problem = widget_frontend_problem()
    if problem:
        warnings.warn(problem, stacklevel=2)
    if evaluation is None:
        evaluation = evaluate(flows, prep)
    return MarginExplorer(prep, evaluation, snapshots, level, title, threshold)
