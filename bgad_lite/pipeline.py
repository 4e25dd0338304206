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

from . import metrics
from .checkpoint import save_checkpoint
from .config import BGADConfig, BGADError
from .data import Category, FewShotSplit, few_shot_split, load_category, load_split, with_groups
from .features import cached_features, create_backbone, fingerprint
from .flow import downsample_masks
from .scoring import anomaly_maps, image_scores, level_logps, normalisation_stats
from .synth import cutpaste, flip_augment, make_texture_dataset
from .train import LevelData, level_boundaries, make_flows, make_levels, torch_threads, train_flows

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
    train_features: list[torch.Tensor]  # L x (N_train, C_l, H_l, W_l)
    anomaly_features: list[torch.Tensor]  # L x (N_anom, C_l, H_l, W_l)
    test_features: list[torch.Tensor]  # L x (N_test, C_l, H_l, W_l)
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
        feats, masks = [], []
        all_masks = torch.from_numpy(np.concatenate([np.zeros(self.train_images.shape[:3], bool),
                                                     self.anomaly_masks]))  # (N_train + N_anom, S, S)
        for ft, fa in zip(self.train_features, self.anomaly_features):
            f = torch.cat([ft, fa])  # (N_train + N_anom, C, H, W)
            feats.append(f)
            masks.append(downsample_masks(all_masks, f.shape[2], f.shape[3]))
        return make_levels(feats, masks, self.cfg.cond_dim)


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
    split = few_shot_split(category, cfg.n_anomalies, cfg.seen_types, cfg.seed)
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
    with torch_threads(_flow_threads(cfg)):
        history = train_flows(flows, prep.phase1_levels(), cfg, "ml", cfg.epochs_phase1,
                              warmup_epochs=min(2, cfg.epochs_phase1 - 1), progress=progress, desc="phase 1")
    return flows, history


PHASE1_KEYS = ("backbone", "out_indices", "pretrained", "image_size", "n_blocks", "cond_dim", "clamp", "lr",
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


def _subset_metrics(maps, scores, masks, labels) -> dict[str, float]:
    return {"image_auroc": metrics.image_auroc(scores, labels),
            "pixel_auroc": metrics.pixel_auroc(maps, masks),
            "aupro": metrics.aupro(maps, masks)}


def evaluate(flows: nn.ModuleList, prep: Prepared, cfg: BGADConfig | None = None) -> dict:
    """Score the test set; metrics on all / seen / unseen and per defect type.

    Returns {"metrics": {...}, "maps": (N, S, S), "scores": (N,), "test_logps": [L x (N, H_l, W_l)],
    "level_ref": [m_l(h, w)]}.
    """
    cfg = _with_device(cfg or prep.cfg)
    pos = [lv.pos for lv in prep.phase1_levels()]
    train_logps = level_logps(flows, prep.train_features, pos, cfg.device)
    level_ref = normalisation_stats(train_logps)
    test_logps = level_logps(flows, prep.test_features, pos, cfg.device)
    maps = anomaly_maps(test_logps, cfg.image_size, level_ref if cfg.score_norm == "train" else None)
    scores = image_scores(maps)
    good = prep.test_types == "good"
    subsets = {"all": np.ones(len(scores), bool),
               "seen": good | np.isin(prep.test_types, prep.split.seen_types),
               "unseen": good | np.isin(prep.test_types, prep.split.unseen_types)}
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
    for variant in cfg.variants:
        t = time.perf_counter()
        flows, hist, boundaries = fit_variant(prep, phase1, variant, progress=progress)
        timings[f"phase2_{variant}"] = time.perf_counter() - t
        t = time.perf_counter()
        ev = evaluate(flows, prep)
        timings[f"eval_{variant}"] = time.perf_counter() - t
        results[variant] = ev["metrics"]
        evals[variant] = ev
        histories[variant] = hist
        save_checkpoint(out / "checkpoints" / variant, flows, cfg, prep.channels, ev["level_ref"], boundaries)

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
    }
    out.mkdir(parents=True, exist_ok=True)
    plots.save_run_figures(out / "figures", prep, evals, cfg)
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
