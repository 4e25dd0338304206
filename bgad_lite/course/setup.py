"""The notebook course: what every notebook of ``notebooks/`` shares.

The notebooks (``00_idea_in_2d`` ... ``05_margin_explorer``) each open
with the same three steps, all of which live here so the notebooks agree:

1. :func:`setup_notebook` — seeds, device, plotly renderer (Colab, JupyterLab and
   static HTML), quiet logging;
2. :func:`make_config` — the one place that turns the papermill parameters
   (``DATASET``, ``CATEGORY``, ``BACKBONE``, ``IMAGE_SIZE``, ``EPOCHS``, ``SMOKE``,
   ``CACHE_DIR``, ``DEVICE``) into a :class:`~bgad_lite.config.BGADConfig`. Every
   notebook builds the same config from the same parameters, so they share the
   cached features and the phase-1 checkpoint in ``CACHE_DIR``;
3. :func:`phase1` — the phase-1 flows, trained once and then loaded from the cache
   (with their training curve).

Two helpers serve a class: :func:`fill_cache` computes before class what the notebooks
then load, and :func:`drive_folder` puts ``CACHE_DIR`` on Google Drive, so that on Colab,
where every notebook gets its own runtime, 03–05 load what 02 computed. What Colab
installs is :data:`INSTALL_FROM` (each notebook's first code cell holds a copy).

Which notebooks there are and how to run them all is :mod:`bgad_lite.course.notebooks`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import sys
from pathlib import Path

import matplotlib
import plotly.io as pio

from ..config import PRESETS, BGADConfig, BGADError
from ..data.defects import TEXTURES
from ..data.download import download_mvtec
from ..pipeline import fit_phase1_cached, phase1_checkpoint_dir
from ..prepare import ANOMALY_REPEATS, default_data_root, prepare
from ..runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)

#: Epochs of a full run: phase 1 (normal-only ML) and phase 2 (fine-tuning), as `bgad-lite run`.
FULL_EPOCHS = (BGADConfig.epochs_phase1, BGADConfig.epochs_phase2)  # the library's defaults
DATASETS = ("textures", "mvtec")
#: What the notebooks' first code cell installs in Colab when ``bgad_lite`` is missing: a pip
#: requirement (a git URL, a wheel's path or URL, or a package name). Every notebook holds this
#: default in its own ``INSTALL_FROM`` variable (it runs before ``bgad_lite`` can be imported);
#: a test checks that they agree. Hosting the course elsewhere: ``docs/teaching.md``.
INSTALL_FROM = "bgad-lite @ git+https://github.com/bgad-lite/bgad-lite"
#: Where Colab mounts Google Drive.
DRIVE_MOUNT = "/content/drive"


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def drive_folder(folder: str = "bgad-lite/cache", mount: str = DRIVE_MOUNT) -> str:
    """A folder on your Google Drive, for ``CACHE_DIR`` in Colab; mounts Drive on first use.

    Colab gives every notebook its own runtime, and a runtime's files go when it
    stops. With ``CACHE_DIR = setup.drive_folder()`` in the parameters cell of each
    notebook, the features and phase-1 flows computed by one notebook (02) are kept in
    ``MyDrive/<folder>`` and loaded by the next (03, 04, 05). Colab asks once per
    runtime for permission to mount Drive. Returns the folder's path (created if missing).
    """
    if not in_colab():
        raise BGADError("drive_folder: Google Drive can only be mounted inside Google Colab (google.colab is "
                        "not loaded here). Outside Colab keep CACHE_DIR a local folder, e.g. 'runs/cache'.")
    from google.colab import drive  # only in Colab

    if not (Path(mount) / "MyDrive").is_dir():
        drive.mount(mount)
    path = Path(mount) / "MyDrive" / folder
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def smoke_requested(smoke: bool = False) -> bool:
    """The ``SMOKE`` parameter, or the environment variable ``BGAD_SMOKE=1`` (tests, CI)."""
    return bool(smoke) or os.environ.get("BGAD_SMOKE", "").strip().lower() in ("1", "true", "yes")


def plotly_renderer() -> str:
    """The plotly renderer that shows figures here.

    Colab needs its own ``"colab"`` renderer. Elsewhere each figure carries two
    representations: the plotly mimetype (JupyterLab, VS Code: interactive, drawn by
    the plotly.js that the JupyterLab extension bundles, so it works offline) and
    HTML that loads plotly.js from its CDN (classic Notebook, nbconvert HTML exports).
    Plotly's ``notebook_connected`` renderer would also print, before the first
    figure, an HTML output that imports plotly.js from the CDN; JupyterLab runs that
    script, and offline it fails. ``bgad_html`` is the same renderer without that
    output (each figure's HTML loads plotly.js itself). GitHub's viewer runs no
    JavaScript, which is why every notebook also shows a static matplotlib figure
    beside each interactive one.
    """
    if in_colab():
        return "colab"
    if "bgad_html" not in pio.renderers:
        html = copy.copy(pio.renderers["notebook_connected"])
        html.global_init = False  # no CDN import at the first figure; the figures' HTML is unchanged
        pio.renderers["bgad_html"] = html
    return "plotly_mimetype+bgad_html"


def setup_notebook(seed: int = 0, device: str | None = None, renderer: str | None = None,
                   log_level: int = logging.INFO) -> str:
    """The setup step of every notebook; returns the device to use.

    Seeds (Python, NumPy, torch), picks the device (:func:`resolve_device`), sets the
    plotly renderer (:func:`plotly_renderer`) and lets ``bgad_lite`` log one line per
    step (e.g. "phase 1: loaded ..." when a cache is used). ``OMP_WAIT_POLICY`` must be
    set *before* torch is imported, so the notebook's first cell does that itself;
    here we only warn when it was not.
    """
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and not in_colab():
        log.warning("OMP_WAIT_POLICY is not PASSIVE: small flow steps on a CPU may stall at random. "
                    "Set it before importing torch.")
    seed_everything(seed)
    device = resolve_device(device)
    pio.renderers.default = renderer or plotly_renderer()
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "axes.titlesize": 9})
    logger = logging.getLogger("bgad_lite")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(log_level)
    logger.propagate = False
    return device


# ---------------------------------------------------------------------------
# One config for every notebook
# ---------------------------------------------------------------------------


def resolve_dataset(dataset: str, category: str, data_root: str | None = None) -> tuple[str | None, str]:
    """``DATASET`` and ``CATEGORY`` -> (``data_dir``, category) for :class:`BGADConfig`.

    - ``"textures"``: the embedded texture set (``data_dir=None``; the library writes it to
      ``$BGAD_DATA``, a source checkout's ``data/`` or ``~/.cache/bgad-lite/data``);
      ``category`` is one of ``grass``, ``brick``, ``gravel``.
    - ``"mvtec"``: one MVTec AD category, downloaded on first use (0.1 to 1 GB, so it
      is meant for Colab) into ``data_root`` (default: ``<data root>/mvtec``).
    - any other string: a folder in MVTec AD layout that holds ``category``; the category
      folder itself is accepted too.
    """
    if dataset == "textures":
        if category not in TEXTURES:
            raise BGADError(f"DATASET='textures' has the categories {list(TEXTURES)}, got CATEGORY={category!r}. "
                            "For MVTec AD use DATASET='mvtec' and e.g. CATEGORY='carpet'.")
        return None, category
    if dataset == "mvtec":
        root = Path(data_root) if data_root else default_data_root() / "mvtec"
        download_mvtec(category, root)
        return str(root), category
    folder = Path(dataset).expanduser()
    if (folder / "train" / "good").is_dir() and not (folder / category).is_dir():
        return str(folder.parent), folder.name  # the category folder itself was given
    if not folder.is_dir():
        raise BGADError(f"DATASET={dataset!r} is neither 'textures', 'mvtec' nor an existing folder.")
    return str(folder), category


def make_config(dataset: str = "textures", category: str = "grass", backbone: str = "tf_efficientnet_lite0",
                image_size: int = 128, epochs: int | None = None, epochs_phase2: int | None = None,
                smoke: bool = False, cache_dir: str = "runs/cache", device: str | None = None, seed: int = 0,
                data_root: str | None = None, preset: str | None = None, **overrides) -> BGADConfig:
    """The :class:`BGADConfig` of a notebook, from its parameters (the one place that does this).

    ``epochs`` is the number of phase-1 epochs and ``epochs_phase2`` that of phase 2
    (``None``: :data:`FULL_EPOCHS`). ``preset`` (e.g. ``"paper"`` on a Colab GPU: b6, 256 px,
    K = 8, P = 128, lr 2e-4, 8 + 192 epochs; see :data:`bgad_lite.config.PRESETS`) replaces the
    settings above. ``smoke`` (or ``BGAD_SMOKE=1``) applies the "fast" preset on top: few epochs
    and CutPastes, small images — still the whole pipeline, but its numbers only show that
    everything runs (tests, CI).
    ``overrides`` are any other :class:`BGADConfig` fields.
    Two notebooks called with the same arguments get equal configs, hence the same
    cache keys for features and phase-1 flows.
    """
    data_dir, category = resolve_dataset(dataset, category, data_root)
    settings = {"data_dir": data_dir, "category": category, "backbone": backbone, "image_size": int(image_size),
                "epochs_phase1": int(epochs or FULL_EPOCHS[0]), "epochs_phase2": int(epochs_phase2 or FULL_EPOCHS[1]),
                "cache_dir": str(cache_dir), "device": resolve_device(device), "seed": int(seed),
                "out_dir": str(Path(cache_dir).parent / "out")}
    if preset:
        if preset not in PRESETS:
            raise BGADError(f"make_config: unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
        settings.update(PRESETS[preset])
        settings["device"] = resolve_device(settings["device"])
        image_size = settings["image_size"]
    if smoke_requested(smoke):
        settings.update(PRESETS["fast"])
        settings["image_size"] = min(int(image_size), PRESETS["fast"]["image_size"])
    known = {f.name for f in dataclasses.fields(BGADConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise BGADError(f"make_config: unknown settings {unknown}; known BGADConfig fields are {sorted(known)}.")
    settings.update(overrides)
    return BGADConfig(**settings)


def describe(cfg: BGADConfig) -> str:
    """A one-line summary of what a notebook is about to run."""
    data = cfg.data_dir or "embedded textures"
    return (f"{cfg.category} ({data}), {cfg.image_size} px, backbone {cfg.backbone}, device {cfg.device}, "
            f"epochs {cfg.epochs_phase1} + {cfg.epochs_phase2}, {cfg.n_cutpaste} CutPastes, anomalies "
            f"{ANOMALY_REPEATS}× per phase-2 epoch, cache {cfg.cache_dir}")


# ---------------------------------------------------------------------------
# Phase 1 with its training curve
# ---------------------------------------------------------------------------


def phase1(prep, cfg: BGADConfig | None = None, progress: bool = True):
    """Phase 1 for the notebooks: :func:`bgad_lite.pipeline.fit_phase1_cached`.

    The first notebook that needs phase 1 trains it and saves the flows and the
    training curve in ``CACHE_DIR``; later notebooks load both. Returns
    (flows, history); history is ``None`` only for a checkpoint cached without it.
    """
    return fit_phase1_cached(prep, cfg, progress=progress)


def fill_cache(cache_dir: str = "runs/cache", progress: bool = True, **parameters) -> Path:
    """Compute what the notebooks load from ``cache_dir``: the data set, the features and
    the phase-1 flows (the work of notebooks 01 and 02), e.g. before class.

    ``parameters`` are :func:`make_config`'s (the parameters cell in lower case:
    ``dataset``, ``category``, ``image_size``, ``smoke``, ``device`` ...); a notebook whose
    parameters give the same config then loads instead of training. ``cache_dir`` is
    relative to the working directory, and a notebook's ``CACHE_DIR`` to the notebook's
    folder: for the student copies that is ``notebooks/student/runs/cache``.
    Returns the phase-1 checkpoint folder.
    """
    cfg = make_config(cache_dir=cache_dir, **parameters)
    prep = prepare(cfg, progress=progress)
    fit_phase1_cached(prep, cfg, progress=progress)
    return phase1_checkpoint_dir(prep, cfg)
