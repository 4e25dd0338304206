"""Steps 1–3 of a run: the data, the few-shot split, the training anomalies, the cached features.

:func:`prepare` turns a :class:`~bgad_lite.config.BGADConfig` into a :class:`Prepared`:
normal training images, the k labelled anomalies with their flips and CutPastes
(:mod:`bgad_lite.data.augment`), the test set that is left (:mod:`bgad_lite.data.fewshot`),
and the backbone features of all three (:mod:`bgad_lite.features`, cached on disk).
Everything after it — training, scoring — reads only this object.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import align
from .config import BGADConfig
from .data.augment import synthesise_anomalies
from .data.fewshot import FewShotSplit, few_shot_split
from .data.images import input_shape, load_split
from .data.layout import Category, load_category, with_groups
from .data.textures import DEFAULT_SEEN_TYPES, make_texture_dataset
from .features import LEVELS, cached_features, create_backbone, fingerprint
from .flow import LevelData, fiber_labels, make_levels
from .runtime import with_device
from .threshold import calibration_split

log = logging.getLogger(__name__)

#: Each anomaly image appears this many times per phase-2 epoch ("repeated utilization", as the official code)
ANOMALY_REPEATS = 2


def default_data_root() -> Path:
    """Where the embedded data set is written: ``$BGAD_DATA``, else ``data/`` of a
    source checkout, else ``~/.cache/bgad-lite/data``."""
    if os.environ.get("BGAD_DATA"):
        return Path(os.environ["BGAD_DATA"])
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "data").is_dir():
        return repo / "data"
    return Path.home() / ".cache" / "bgad-lite" / "data"


@dataclass
class Prepared:
    """Everything training and evaluation need, built once by :func:`prepare`."""

    cfg: BGADConfig
    category: Category
    split: FewShotSplit
    train_images: np.ndarray  # (N_train, h, w, 3) normal training images; h·w ≈ image_size²
    anomaly_images: np.ndarray  # (N_anom, h, w, 3) labelled anomalies + flips + CutPastes
    anomaly_masks: np.ndarray  # (N_anom, h, w) bool
    anomaly_kinds: list[str]  # "labelled" | "flip" | "cutpaste" for each anomaly image
    test_images: np.ndarray  # (N_test, h, w, 3)
    test_masks: np.ndarray  # (N_test, h, w) bool
    test_labels: np.ndarray  # (N_test,) 1 = anomalous
    test_types: np.ndarray  # (N_test,) defect type, "good" for normal
    train_features: list[torch.Tensor]  # J x (n_train, C_j, H_j, W_j), what the flows see
    anomaly_features: list[torch.Tensor]  # J x (n_anom, C_j, H_j, W_j)
    test_features: list[torch.Tensor]  # J x (n_test, C_j, H_j, W_j)
    #: J x (n_calib, C_j, H_j, W_j): normal training images held out of every fit, which set the
    #: threshold (threshold.py); empty tensors when too few normals to spare any
    calib_features: list[torch.Tensor]
    timings_s: dict[str, float] = field(default_factory=dict)
    #: the backbone's own features ("train", "anomaly", "test"), which the Gaussian reference uses;
    #: empty when they are the ones above (no level aligned)
    backbone_features: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    alignment: list | None = None  # J x align.LevelAlignment unless align_positions == "off"

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) every image was resized to (``images.input_shape``)."""
        return int(self.train_images.shape[1]), int(self.train_images.shape[2])

    def raw_features(self, part: str) -> list[torch.Tensor]:
        """The backbone's features of ``part`` ("train", "anomaly", "test" or "calib"), before any alignment."""
        return self.backbone_features.get(part) or getattr(self, f"{part}_features")

    @property
    def channels(self) -> list[int]:
        return [f.shape[1] for f in self.train_features]

    def phase1_levels(self, cond_dim: int) -> list[LevelData]:
        """Normal training images only (all fibers normal), with a ``cond_dim``-channel positional encoding."""
        masks = [torch.zeros(f.shape[0], f.shape[2], f.shape[3], dtype=torch.bool) for f in self.train_features]
        return make_levels(self.train_features, masks, cond_dim)

    def phase2_levels(self, cond_dim: int) -> list[LevelData]:
        """Normal training images + synthesised anomalies, fibers labelled by the masks (:func:`fiber_labels`).

        The anomaly images are listed :data:`ANOMALY_REPEATS` = r times (the official code repeats
        its anomaly list too), so that an epoch holds r·N_anom of them beside the N_train normals:
        the push meets each labelled fiber r times per epoch. Every fiber of an anomaly image that
        is neither anomalous nor touched by a defect is trained on as normal (as the official code
        does); touched ones are left out (``ignore``).
        """
        feats, masks, ignore = [], [], []
        r = ANOMALY_REPEATS
        anom_masks = torch.from_numpy(self.anomaly_masks)  # (N_anom, h, w)
        for ft, fa in zip(self.train_features, self.anomaly_features):
            feats.append(torch.cat([ft] + [fa] * r))  # (N_train + r·N_anom, C, H, W)
            h, w = ft.shape[2:]
            normal = torch.zeros(len(ft), h, w, dtype=torch.bool)
            m, ig = fiber_labels(anom_masks, h, w)  # each (N_anom, H, W)
            masks.append(torch.cat([normal] + [m] * r))  # (N_train + r·N_anom, H, W)
            ignore.append(torch.cat([normal] + [ig] * r))
        return make_levels(feats, masks, cond_dim, ignore)


def _resolve_data(cfg: BGADConfig, progress: bool) -> tuple[Path, str]:
    if cfg.data_dir is None:
        root = default_data_root()
        make_texture_dataset(root, cfg.category, seed=0, progress=progress)
        return root, cfg.category
    return Path(cfg.data_dir), cfg.category


def prepare(cfg: BGADConfig, progress: bool = True, groups: dict[str, str] | None = None) -> Prepared:
    """Load the data, draw the few-shot split, synthesise anomalies, extract (cached) features.

    ``groups`` maps ``"<type>/<file name>"`` of test images to a group (e.g. the
    camera position): labelled anomalies are then drawn group by group, and
    seen-type test anomalies of the same groups leave the test set too.
    """
    t0 = time.perf_counter()
    cfg = with_device(cfg)  # the one place a run resolves "auto"; every later step reads prep.cfg
    root, name = _resolve_data(cfg, progress)
    category = load_category(root, name)
    if groups:
        category = with_groups(category, groups)
    seen_types = cfg.seen_types
    if seen_types is None and cfg.data_dir is None:
        seen_types = DEFAULT_SEEN_TYPES  # the embedded set's split: subtle types among the unseen
    split = few_shot_split(category, cfg.n_anomalies, seen_types, cfg.seed, require_unseen=cfg.seen_types is None)
    hw = input_shape(category.train, cfg.image_size)  # (h, w): h·w ≈ image_size²
    normal_images, _, _ = load_split(category.train, hw, progress)
    fit, cal = calibration_split(len(normal_images), cfg.seed + 2)  # threshold.py: normals that set t
    train_images = normal_images[fit]
    lab_images, lab_masks, _ = load_split(split.labelled, hw, progress)
    test_images, test_masks, test_labels = load_split(split.test, hw, progress)
    test_types = np.array([smp.defect_type for smp in split.test])
    anomaly_images, anomaly_masks, kinds = synthesise_anomalies(train_images, lab_images, lab_masks,
                                                                 cfg.n_cutpaste, seed=cfg.seed + 1)
    t1 = time.perf_counter()

    backbone = create_backbone(cfg.backbone, cfg.pretrained, seed=cfg.seed)
    # what the features depend on: the backbone and its weights (random ones: drawn under the seed)
    tag = (cfg.backbone, LEVELS, cfg.pretrained, cfg.image_size) + (() if cfg.pretrained else (cfg.seed,))
    feats = {}
    for part, images in (("normal", normal_images), ("anomaly", anomaly_images), ("test", test_images)):
        key = fingerprint(*tag, images)
        feats[part] = cached_features(backbone, images, cfg.cache_dir, key, device=cfg.device, progress=progress)
    normal = feats.pop("normal")  # J x (n_normal, C, H, W), split into the fit and the held-out normals
    feats["train"], feats["calib"] = [f[fit] for f in normal], [f[cal] for f in normal]
    t2 = time.perf_counter()
    backbone_features, alignment = {}, None
    timings = {"data": t1 - t0, "features": t2 - t1}
    if cfg.align_positions != "off":  # the flows see aligned features; the Gaussian reference keeps the backbone's
        alignment = align.fit(feats["train"], mode=cfg.align_positions)
        if any(a.active for a in alignment):
            backbone_features = dict(feats)
            feats = {part: align.apply(alignment, f) for part, f in feats.items()}
        timings["align"] = time.perf_counter() - t2
        log.info("aligned positions (%s): alpha per level %s, aligned %s", cfg.align_positions,
                 [round(a.alpha, 3) for a in alignment], [a.active for a in alignment])
    log.info("prepared %s: %d train (+%d held out), %d anomaly (%d labelled), %d test images", name,
             len(train_images), len(cal), len(anomaly_images), len(lab_images), len(test_images))
    return Prepared(cfg, category, split, train_images, anomaly_images, anomaly_masks, kinds, test_images,
                    test_masks, test_labels, test_types, feats["train"], feats["anomaly"], feats["test"],
                    feats["calib"],
                    timings_s=timings,
                    backbone_features=backbone_features, alignment=alignment)


