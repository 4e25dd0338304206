"""The whole BGAD pipeline, in the steps a student learns them.

``prepare`` (data, few-shot split, anomaly synthesis, cached features) ->
``fit_phase1`` (unsupervised flows) -> ``fit_variant`` (phase 2: unsupervised,
bgad or naive_push, each from the same phase-1 weights) -> ``evaluate``
(anomaly maps, image/pixel AUROC, AUPRO on all / seen / unseen) ->
``run`` (all of it, with checkpoints, figures and ``results.json``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import diagnostics, metrics
from .checkpoint import save_checkpoint
from .config import BGADConfig, BGADError
from .data import Category, FewShotSplit, few_shot_split, load_category, load_split, with_groups
from .features import cached_features, create_backbone, fingerprint
from .flow import fiber_labels, positional_encoding_2d
from .gaussian import GaussianModel
from .margins import NORMAL, SEEN, UNSEEN, image_groups
from .scoring import anomaly_maps, image_scores, level_logps, normalisation_stats
from .synth import DEFAULT_SEEN_TYPES, cutpaste, flip_augment, make_texture_dataset
from .train import LevelData, level_boundaries, make_flows, set_input_statistics, make_levels, torch_threads, train_flows

log = logging.getLogger(__name__)


def default_data_root() -> Path:
    """Where the embedded data set is written: ``$BGAD_DATA``, else ``data/`` of a
    source checkout, else ``~/.cache/bgad-lite/data``."""
    if os.environ.get("BGAD_DATA"):
        return Path(os.environ["BGAD_DATA"])
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "data").is_dir():
        return repo / "data"
    return Path.home() / ".cache" / "bgad-lite" / "data"


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; a CUDA device
    asked for without a GPU is an error."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BGADError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device='cpu' or 'auto'.")
    return device


@dataclass
class Prepared:
    """Everything training and evaluation need, built once by :func:`prepare`."""

    cfg: BGADConfig
    category: Category
    split: FewShotSplit
    train_images: np.ndarray  # (N_train, S, S, 3) normal training images
    anomaly_images: np.ndarray  # (N_anom, S, S, 3) labelled anomalies + flips + CutPastes
    anomaly_masks: np.ndarray  # (N_anom, S, S) bool
    anomaly_kinds: list[str]  # "labelled" | "flip" | "cutpaste" for each anomaly image
    test_images: np.ndarray  # (N_test, S, S, 3)
    test_masks: np.ndarray  # (N_test, S, S) bool
    test_labels: np.ndarray  # (N_test,) 1 = anomalous
    test_types: np.ndarray  # (N_test,) defect type, "good" for normal
    train_features: list[torch.Tensor]  # J x (n_train, C_j, H_j, W_j)
    anomaly_features: list[torch.Tensor]  # J x (n_anom, C_j, H_j, W_j)
    test_features: list[torch.Tensor]  # J x (n_test, C_j, H_j, W_j)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        return [f.shape[1] for f in self.train_features]

    def phase1_levels(self) -> list[LevelData]:
        """Normal training images only (all fibers normal)."""
        masks = [torch.zeros(f.shape[0], f.shape[2], f.shape[3], dtype=torch.bool) for f in self.train_features]
        return make_levels(self.train_features, masks, self.cfg.cond_dim)

    def phase2_levels(self) -> list[LevelData]:
        """Normal training images + synthesised anomalies, fibers labelled by the masks."""
        feats, masks, ignore = [], [], []
        anom_masks = torch.from_numpy(self.anomaly_masks)  # (N_anom, S, S)
        for ft, fa in zip(self.train_features, self.anomaly_features):
            feats.append(torch.cat([ft, fa]))  # (N_train + N_anom, C, H, W)
            h, w = ft.shape[2:]
            normal = torch.zeros(len(ft), h, w, dtype=torch.bool)
            m, ig = fiber_labels(anom_masks, h, w, self.cfg.label_fraction, self.cfg.label_rule)
            masks.append(torch.cat([normal, m]))  # (N_train + N_anom, H, W)
            ignore.append(None if ig is None else torch.cat([normal, ig]))
        return make_levels(feats, masks, self.cfg.cond_dim, None if ignore[0] is None else ignore)


def _resolve_data(cfg: BGADConfig, progress: bool) -> tuple[Path, str]:
    if cfg.data_dir is None:
        root = default_data_root()
        make_texture_dataset(root, cfg.category, seed=0, progress=progress)
        return root, cfg.category
    return Path(cfg.data_dir), cfg.category


def synthesise_anomalies(train_images: np.ndarray, labelled_images: np.ndarray, labelled_masks: np.ndarray,
                         cfg: BGADConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """"Repeated utilization" of the k labelled anomalies (+ horizontal flips) and
    ``cfg.n_cutpaste`` RandAugmented CutPastes of their defects onto normal images."""
    rng = np.random.default_rng(cfg.seed + 1)
    images, masks = [labelled_images], [labelled_masks]
    kinds = ["labelled"] * len(labelled_images)
    if cfg.flip_anomalies:
        fi, fm = flip_augment(labelled_images, labelled_masks)
        images.append(fi)
        masks.append(fm)
        kinds += ["flip"] * len(fi)
    cp_i, cp_m = [], []
    # A tiny defect can vanish when its mask is resized (nearest neighbour): such an anomaly
    # still counts as labelled, but has nothing to cut.
    sources = np.flatnonzero(labelled_masks.reshape(len(labelled_masks), -1).any(1))
    if cfg.n_cutpaste and not len(sources):
        log.warning("no labelled anomaly has a non-empty mask at %d px: no CutPaste images", cfg.image_size)
    for _ in range(cfg.n_cutpaste if len(sources) else 0):
        a = sources[rng.integers(len(sources))]
        n = rng.integers(len(train_images))
        img, m = cutpaste(train_images[n], labelled_images[a], labelled_masks[a], rng)
        cp_i.append(img)
        cp_m.append(m)
    if cp_i:
        images.append(np.stack(cp_i))
        masks.append(np.stack(cp_m))
        kinds += ["cutpaste"] * len(cp_i)
    return np.concatenate(images).astype(np.float32), np.concatenate(masks).astype(bool), kinds


def prepare(cfg: BGADConfig, progress: bool = True, groups: dict[str, str] | None = None) -> Prepared:
    """Load the data, draw the few-shot split, synthesise anomalies, extract (cached) features.

    ``groups`` maps ``"<type>/<file name>"`` of test images to a group (e.g. the
    camera position): labelled anomalies are then drawn group by group, and
    seen-type test anomalies of the same groups leave the test set too.
    """
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    root, name = _resolve_data(cfg, progress)
    category = load_category(root, name)
    if groups:
        category = with_groups(category, groups)
    seen_types = cfg.seen_types
    if seen_types is None and cfg.data_dir is None:
        seen_types = DEFAULT_SEEN_TYPES  # the embedded set's split: subtle types among the unseen
    split = few_shot_split(category, cfg.n_anomalies, seen_types, cfg.seed, require_unseen=cfg.seen_types is None)
    s = cfg.image_size
    train_images, _, _ = load_split(category.train, s, progress)
    lab_images, lab_masks, _ = load_split(split.labelled, s, progress)
    test_images, test_masks, test_labels = load_split(split.test, s, progress)
    test_types = np.array([smp.defect_type for smp in split.test])
    anomaly_images, anomaly_masks, kinds = synthesise_anomalies(train_images, lab_images, lab_masks, cfg)
    t1 = time.perf_counter()

    backbone = create_backbone(cfg.backbone, cfg.out_indices, cfg.pretrained)
    tag = (cfg.backbone, cfg.out_indices, cfg.pretrained, s)
    feats = {}
    for part, images in (("train", train_images), ("anomaly", anomaly_images), ("test", test_images)):
        key = fingerprint(*tag, images)
        feats[part] = cached_features(backbone, images, cfg.cache_dir, key, device=device, progress=progress)
    t2 = time.perf_counter()
    log.info("prepared %s: %d train, %d anomaly (%d labelled), %d test images", name, len(train_images),
             len(anomaly_images), len(lab_images), len(test_images))
    return Prepared(cfg, category, split, train_images, anomaly_images, anomaly_masks, kinds, test_images,
                    test_masks, test_labels, test_types, feats["train"], feats["anomaly"], feats["test"],
                    timings_s={"data": t1 - t0, "features": t2 - t1})


def fit_phase1(prep: Prepared, cfg: BGADConfig | None = None, progress: bool = True):
    """Phase 1: flows trained by maximum likelihood on normal fibers -> (flows, history)."""
    cfg = _with_device(cfg or prep.cfg)
    flows = make_flows(prep.channels, cfg)
    set_input_statistics(flows, prep.train_features)
    with torch_threads(_flow_threads(cfg)):
        history = train_flows(flows, prep.phase1_levels(), cfg, "ml", cfg.epochs_phase1,
                              warmup_epochs=min(2, cfg.epochs_phase1 - 1), progress=progress, desc="phase 1")
    return flows, history


PHASE1_KEYS = ("backbone", "out_indices", "pretrained", "image_size", "n_blocks", "cond_dim", "clamp", "standardize", "lr",
               "epochs_phase1", "batch_images", "fiber_chunk", "seed")


def phase1_checkpoint_dir(prep: Prepared, cfg: BGADConfig | None = None) -> Path:
    """Where :func:`fit_phase1_cached` keeps the phase-1 flows: keyed by the settings
    that shape phase 1 and by the training features."""
    cfg = cfg or prep.cfg
    settings = {k: getattr(cfg, k) for k in PHASE1_KEYS}
    key = fingerprint(sorted(settings.items()), *[f.numpy() for f in prep.train_features])
    return Path(cfg.cache_dir) / f"phase1-{key}"


def fit_phase1_cached(prep: Prepared, cfg: BGADConfig | None = None, progress: bool = True):
    """:func:`fit_phase1`, or load its result from ``cfg.cache_dir`` when it was trained
    before with the same settings and data -> (flows, history).

    The training curve is kept beside the flows (``history.json``), so a notebook
    that loads them can still plot how they were trained.
    """
    from .checkpoint import load_checkpoint

    cfg = cfg or prep.cfg
    path = phase1_checkpoint_dir(prep, cfg)
    if (path / "model.pt").exists():
        flows, _, _ = load_checkpoint(path, cfg)
        log.info("phase 1: loaded %s", path)
        history = json.loads((path / "history.json").read_text()) if (path / "history.json").exists() else None
        return flows, history
    flows, history = fit_phase1(prep, cfg, progress)
    pos = [lv.pos for lv in prep.phase1_levels()]
    save_checkpoint(path, flows, cfg, prep.channels, normalisation_stats(level_logps(flows, prep.train_features, pos)))
    tmp = path / f"history.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(history))
    os.replace(tmp, path / "history.json")
    return flows, history


def _with_device(cfg: BGADConfig) -> BGADConfig:
    return dataclasses.replace(cfg, device=resolve_device(cfg.device))


def _flow_threads(cfg: BGADConfig) -> int:
    """One intra-op thread for the small flow steps on a CPU (more only add overhead there)."""
    return 1 if cfg.device == "cpu" else torch.get_num_threads()


def fit_variant(prep: Prepared, phase1_flows: nn.ModuleList, variant: str, cfg: BGADConfig | None = None,
                progress: bool = True, on_epoch_end=None):
    """Phase 2 from a copy of the phase-1 flows -> (flows, history, fixed boundaries or None)."""
    cfg = _with_device(cfg or prep.cfg)
    flows = copy.deepcopy(phase1_flows)
    levels = prep.phase2_levels()
    boundaries = None
    if variant == "bgad" and cfg.boundary == "fixed":
        boundaries = level_boundaries(flows, levels, cfg)
    with torch_threads(_flow_threads(cfg)):
        history = train_flows(flows, levels, cfg, variant, cfg.epochs_phase2, fixed_boundaries=boundaries,
                              on_epoch_end=on_epoch_end, progress=progress, desc=f"phase 2 {variant}")
    return flows, history, boundaries


_SHARED: tuple | None = None  # (prep, phase-1 flows, cfg), inherited by forked workers


def _fit_variant_worker(variant: str):
    prep, phase1_flows, cfg = _SHARED
    torch.set_num_threads(1)
    flows, history, boundaries = fit_variant(prep, phase1_flows, variant, cfg, progress=False)
    return variant, flows.state_dict(), history, boundaries


def parallel_workers(cfg: BGADConfig, n_variants: int) -> int:
    """How many processes :func:`fit_variants` uses: on a Linux CPU one per variant (each
    single-threaded, as flow steps run best), capped by the cores; elsewhere 1."""
    import sys

    if cfg.device != "cpu" or not sys.platform.startswith("linux"):
        return 1  # a GPU runs the variants one after another; fork is only safe on Linux
    return max(1, min(n_variants, os.cpu_count() or 1))


def fit_variants(prep: Prepared, phase1_flows: nn.ModuleList, variants, cfg: BGADConfig | None = None,
                 progress: bool = True, workers: int | None = None) -> dict:
    """:func:`fit_variant` for each of ``variants`` -> {variant: (flows, history, boundaries)}.

    The variants are independent (each starts from the phase-1 flows, with its own seeded
    shuffling), so on a CPU they train in parallel processes: the same numbers as one after
    another (a test checks it), in about 1 / workers of the time.
    """
    global _SHARED
    cfg = _with_device(cfg or prep.cfg)
    variants = list(variants)
    workers = parallel_workers(cfg, len(variants)) if workers is None else workers
    if workers <= 1 or len(variants) <= 1:
        return {v: fit_variant(prep, phase1_flows, v, cfg, progress) for v in variants}
    import multiprocessing

    from tqdm.auto import tqdm

    _SHARED = (prep, phase1_flows, cfg)
    out = {}
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            bar = tqdm(total=len(variants), desc=f"phase 2 ({workers} processes)", disable=not progress, leave=False)
            for variant, state, history, boundaries in pool.imap_unordered(_fit_variant_worker, variants):
                flows = copy.deepcopy(phase1_flows)
                flows.load_state_dict(state)
                out[variant] = (flows.eval(), history, boundaries)
                bar.update(1)
            bar.close()
    finally:
        _SHARED = None
    return {v: out[v] for v in variants}


def _subset_metrics(maps, scores, masks, labels) -> dict[str, float]:
    return {"image_auroc": metrics.image_auroc(scores, labels),
            "pixel_auroc": metrics.pixel_auroc(maps, masks),
            "aupro": metrics.aupro(maps, masks)}


def model_logps(model, features: list[torch.Tensor], cfg: BGADConfig) -> list[torch.Tensor]:
    """Per-dimension logp of every fiber, J x (n, H_j, W_j), from flows or a :class:`GaussianModel`."""
    if isinstance(model, GaussianModel):
        return model.level_logps(features)
    pos = [positional_encoding_2d(cfg.cond_dim, f.shape[2], f.shape[3]) for f in features]
    return level_logps(model, features, pos, cfg.device)


def evaluate(model, prep: Prepared, cfg: BGADConfig | None = None) -> dict:
    """Score the test set with flows (or the Gaussian reference); metrics on all / seen /
    unseen and per defect type.

    Returns {"metrics": {...}, "maps": (N, S, S), "scores": (N,), "test_logps": [J x (n, H_j, W_j)],
    "train_logps": [...], "level_ref": [m_j(h, w)]}.
    """
    cfg = _with_device(cfg or prep.cfg)
    train_logps = model_logps(model, prep.train_features, cfg)
    level_ref = normalisation_stats(train_logps)
    test_logps = model_logps(model, prep.test_features, cfg)
    maps = anomaly_maps(test_logps, cfg.image_size, level_ref if cfg.score_norm == "train" else None)
    scores = image_scores(maps)
    groups = image_groups(prep)  # (N_test,) normal / seen / unseen
    good = groups == NORMAL
    subsets = {"all": np.ones(len(scores), bool), "seen": groups != UNSEEN, "unseen": groups != SEEN}
    out = {}
    for name, sel in subsets.items():
        if sel.sum() > good.sum():  # at least one anomaly in the subset
            out[name] = _subset_metrics(maps[sel], scores[sel], prep.test_masks[sel], prep.test_labels[sel])
    out["per_type"] = {}
    for t in sorted(set(prep.test_types) - {"good"}):
        sel = good | (prep.test_types == t)
        out["per_type"][t] = {"image_auroc": metrics.image_auroc(scores[sel], prep.test_labels[sel]),
                              "aupro": metrics.aupro(maps[sel], prep.test_masks[sel])}
    return {"metrics": out, "maps": maps, "scores": scores, "test_logps": test_logps,
            "train_logps": train_logps, "level_ref": level_ref}


def run(cfg: BGADConfig | None = None, progress: bool = True, groups: dict[str, str] | None = None) -> dict:
    """The whole pipeline: prepare, phase 1, every variant in ``cfg.variants``, evaluate.

    Writes ``<out_dir>/results.json``, ``<out_dir>/figures/*.png`` and a checkpoint per
    variant under ``<out_dir>/checkpoints/``; returns the results dict.
    """
    from . import plots

    cfg = cfg or BGADConfig()
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    prep = prepare(cfg, progress, groups)
    timings = dict(prep.timings_s)

    t = time.perf_counter()
    from_cache = (phase1_checkpoint_dir(prep) / "model.pt").exists()
    phase1, hist1 = fit_phase1_cached(prep, progress=progress)
    timings["phase1"] = time.perf_counter() - t  # ~0 when loaded from the cache

    results, evals, histories = {}, {}, {"phase1": hist1}
    diag = {"label_counts": diagnostics.label_counts(prep), "rates": {"phase1": diagnostics.boundary_rates(phase1, prep)}}
    t = time.perf_counter()
    trained = fit_variants(prep, phase1, [v for v in cfg.variants if v != "gaussian"], progress=progress)
    timings["phase2"] = time.perf_counter() - t  # all flow variants, in parallel on a CPU
    for variant in cfg.variants:
        t = time.perf_counter()
        if variant == "gaussian":  # the reference: nothing to train, nothing to checkpoint
            model = GaussianModel.fit(prep.train_features)
            timings["fit_gaussian"] = time.perf_counter() - t
        else:
            model, hist, boundaries = trained[variant]
            histories[variant] = hist
        t = time.perf_counter()
        ev = evaluate(model, prep)
        timings[f"eval_{variant}"] = time.perf_counter() - t
        if variant != "gaussian":
            diag["rates"][variant] = diagnostics.boundary_rates(model, prep, train_logps=ev["train_logps"])
        results[variant] = ev["metrics"]
        evals[variant] = ev
        if variant != "gaussian":
            save_checkpoint(out / "checkpoints" / variant, model, cfg, prep.channels, ev["level_ref"], boundaries)

    timings["total"] = time.perf_counter() - t_start
    summary = {
        "config": cfg.to_dict(),
        "data": {"root": str(prep.category.root), "seen_types": list(prep.split.seen_types),
                 "unseen_types": list(prep.split.unseen_types), "n_train_normal": len(prep.train_images),
                 "n_train_anomalies": len(prep.split.labelled),
                 "n_synthesised": len(prep.anomaly_images) - len(prep.split.labelled),
                 "n_test": len(prep.test_images)},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "results": results,
        "phase1_from_cache": from_cache,
        "history": histories,
        "diagnostics": diag,
    }
    out.mkdir(parents=True, exist_ok=True)
    plots.save_run_figures(out / "figures", prep, evals, cfg, histories, diag)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "results.json")
    return summary


def results_table(summary: dict) -> str:
    """A markdown table of image AUROC / pixel AUROC / AUPRO per variant and subset."""
    rows = ["| variant | subset | image AUROC | pixel AUROC | AUPRO |", "|---|---|---|---|---|"]
    for variant, res in summary["results"].items():
        for subset in ("all", "seen", "unseen"):
            if subset in res:
                r = res[subset]
                rows.append(f"| {variant} | {subset} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} "
                            f"| {r['aupro']:.3f} |")
    return "\n".join(rows)
