"""bgad-lite: BGAD (Yao et al., CVPR 2023) as a small library you can read and run.

The top of the package is the paper's section 3, one module per idea: ``features`` (frozen
CNN fibers), ``flow`` (conditional normalizing flow, positional encoding, log-likelihood),
``boundary`` (b_n, b_a), ``losses`` (ML, BG-SPP), ``train`` (phases 1 and 2), ``scoring``
(anomaly maps), with what they need: ``config``, ``metrics``, ``gaussian`` (the per-position
reference), ``align`` (positions aligned where they differ). A run is ``prepare`` ->
``pipeline`` -> ``evaluate`` (+ ``checkpoint``, ``diagnostics``, ``runtime``, ``cli``).

Beside it, three subpackages: ``data`` (MVTec layout, images, few-shot split, the embedded
textures and defects, training anomalies, downloads), ``explore`` (margins: numbers;
plots: every figure, one palette; the margin explorer widget) and ``course`` (notebook
setup, exercises, student copies, the notebook runner, slides).

Importing bgad_lite sets ``OMP_WAIT_POLICY=PASSIVE`` where it is not set
(:func:`bgad_lite.runtime.set_cpu_defaults`): import it before torch.
"""

from .runtime import set_cpu_defaults

set_cpu_defaults()  # before the imports below load torch

# isort: split
from .boundary import compute_boundaries
from .config import VARIANTS, BGADConfig, BGADError
from .flow import build_flow, log_likelihood, positional_encoding_2d
from .losses import bg_spp_loss, focal_weights, ml_loss, naive_push_loss

__version__ = "0.1.0"

__all__ = ["BGADConfig", "BGADError", "bg_spp_loss", "build_flow", "compute_boundaries", "focal_weights",
           "log_likelihood", "ml_loss", "naive_push_loss", "positional_encoding_2d", "run", "__version__"]


def run(config: BGADConfig | None = None, progress: bool = True, variants: tuple[str, ...] = VARIANTS) -> dict:
    """The whole pipeline (what ``bgad-lite run`` calls); see :func:`bgad_lite.pipeline.run`."""
    from .pipeline import run as _run  # heavy (matplotlib, the whole run): loaded when a run starts

    return _run(config, progress=progress, variants=variants)
