"""One frozen dataclass that holds every setting of a bgad-lite run.

Variants are made with ``dataclasses.replace(cfg, ...)``; a config is saved as
JSON beside every checkpoint and every ``results.json``. Only the top-level
builders (``bgad_lite.pipeline.run``, the CLI) read it; the core functions take
plain tensors and numbers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BGADError(ValueError):
    """A user-facing error: the message says what is wrong and what to do."""


VARIANTS = ("gaussian", "unsupervised", "bgad", "naive_push")
BOUNDARY_MODES = ("fixed", "per_batch")
LABEL_RULES = ("half", "ignore", "keep")
ANOMALY_NORMALS = ("all", "real", "none")
ALIGN_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class BGADConfig:
    # --- data -----------------------------------------------------------
    data_dir: str | None = None  # MVTec-layout root; None = the embedded texture set
    category: str = "grass"  # category folder (a texture name for the embedded set)
    image_size: int = 128  # images are resized to about image_size² pixels (a square: image_size x image_size)
    keep_aspect: bool = True  # keep the training images' aspect ratio at that pixel count (images.input_shape)
    n_anomalies: int = 10  # k labelled anomalies, drawn from the seen types only
    seen_types: tuple[str, ...] | None = None  # None: first half of the sorted types
    n_cutpaste: int = 120  # RandAugmented CutPaste images added for phase 2
    label_fraction: float = 0.5  # a fiber is anomalous when ≥ this fraction of its cell is defect
    label_rule: str = "keep"  # "half": that alone; "ignore": + touched cells left out; "keep": + small defects kept
    flip_anomalies: bool = True  # "repeated utilization": also use flipped copies
    anomaly_repeats: int = 2  # each training anomaly image appears this many times per phase-2 epoch
    anomaly_normals: str = "all"  # normal parts phase 2 fits: of "all" anomaly images (official), "real", "none"
    # --- backbone -------------------------------------------------------
    backbone: str = "tf_efficientnet_lite0"
    out_indices: tuple[int, ...] = (1, 2, 3)  # L = 3 feature levels
    pretrained: bool = True  # False = random weights, only when asked for
    # --- flow -----------------------------------------------------------
    n_blocks: int = 4  # K AllInOneBlocks per level (paper: 8)
    cond_dim: int = 64  # P, positional-encoding channels (paper: 128)
    clamp: float = 1.9  # affine_clamping
    standardize: bool = True  # standardise each channel (training-normal μ, σ) before the flow
    align_positions: str = "auto"  # positions' Gaussians onto the pooled one: "auto" (align.py), "on", "off"
    # --- boundary and loss ----------------------------------------------
    beta: float = 0.01  # β: b_n is the β-quantile of normal logp / N
    tau: float = 0.1  # τ: margin, b_a = b_n - τ
    normalizer: float = 10.0  # N
    bgspp_lambda: float = 1.0  # λ
    boundary: str = "per_batch"  # "fixed" (paper) or "per_batch" (official code)
    focal_weighting: bool = False
    # --- optimisation ---------------------------------------------------
    lr: float = 1e-3  # paper: 2e-4; 1e-3 trains within a CPU budget
    lr_phase2: float | None = 2e-3  # phase 2's learning rate; None: the same as lr
    epochs_phase1: int = 20
    epochs_phase2: int = 12  # × (N_train + anomaly_repeats·N_anom) images per epoch
    batch_images: int = 32  # images per mini-batch
    fiber_chunk: int = 4096  # fibers per optimizer step
    variants: tuple[str, ...] = VARIANTS
    # --- scoring --------------------------------------------------------
    score_norm: str = "train"  # "train" (deployable) or "test" (the paper's)
    score_top: float = 0.01  # image score: mean of the top fraction of map pixels; 0 = the map's maximum
    # --- run ------------------------------------------------------------
    seed: int = 0
    device: str = "cpu"
    cache_dir: str = ".bgad_cache"
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so the dataclass stays hashable.
        for name in ("seen_types", "out_indices", "variants"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.align_positions, bool):  # configs saved before "auto": true / false
            object.__setattr__(self, "align_positions", "on" if self.align_positions else "off")
        self.validate()

    def validate(self) -> None:
        """Raise :class:`BGADError` naming the first bad setting and a fix."""
        if not 0.0 < self.beta < 1.0:
            raise BGADError(f"beta must lie in (0, 1), got {self.beta}; the paper uses 0.01 to 0.05.")
        if not self.tau > 0.0:
            raise BGADError(f"tau must be > 0, got {self.tau}; it is the margin b_n - b_a (paper: 0.1).")
        if not self.normalizer > 0.0:
            raise BGADError(f"normalizer must be > 0, got {self.normalizer} (paper: 10).")
        if self.boundary not in BOUNDARY_MODES:
            raise BGADError(f"boundary must be one of {BOUNDARY_MODES}, got {self.boundary!r}.")
        if self.label_rule not in LABEL_RULES:
            raise BGADError(f"label_rule must be one of {LABEL_RULES}, got {self.label_rule!r}.")
        if self.anomaly_normals not in ANOMALY_NORMALS:
            raise BGADError(f"anomaly_normals must be one of {ANOMALY_NORMALS}, got {self.anomaly_normals!r}: "
                            "whose normal parts phase 2 trains on — every anomaly image's ('all', the official "
                            "code), the real ones' but not the CutPastes' ('real'), or none ('none').")
        if self.align_positions not in ALIGN_MODES:
            raise BGADError(f"align_positions must be one of {ALIGN_MODES}, got {self.align_positions!r}: \"auto\" "
                            "aligns the levels whose positions differ (align.py), \"on\" every level, \"off\" none.")
        if not 0.0 < self.label_fraction <= 1.0:
            raise BGADError(f"label_fraction must lie in (0, 1], got {self.label_fraction}.")
        if not 0.0 <= self.score_top <= 1.0:
            raise BGADError(f"score_top must lie in [0, 1], got {self.score_top}: the fraction of each anomaly "
                            "map's highest pixels whose mean is the image score (0: the maximum).")
        if self.score_norm not in ("train", "test"):
            raise BGADError(f"score_norm must be 'train' or 'test', got {self.score_norm!r}.")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise BGADError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants}.")
        if self.image_size < 32 or self.image_size % 16:
            raise BGADError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}.")
        if self.cond_dim % 4:
            raise BGADError(f"cond_dim must be a multiple of 4 (sin/cos for x and y), got {self.cond_dim}.")
        if self.n_anomalies < 1:
            raise BGADError(f"n_anomalies must be >= 1, got {self.n_anomalies}.")
        for name in ("n_blocks", "epochs_phase1", "batch_images", "fiber_chunk", "anomaly_repeats"):
            if getattr(self, name) < 1:
                raise BGADError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.epochs_phase2 < 0 or self.n_cutpaste < 0:
            raise BGADError("epochs_phase2 and n_cutpaste must be >= 0.")
        if not self.lr > 0:
            raise BGADError(f"lr must be > 0, got {self.lr}.")
        if self.lr_phase2 is not None and not self.lr_phase2 > 0:
            raise BGADError(f"lr_phase2 must be > 0 or None (the same as lr), got {self.lr_phase2}.")

    # --- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BGADConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BGADError(f"unknown config keys {unknown}; known keys are {sorted(known)}.")
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "BGADConfig":
        """Parse a JSON string, or read it from a file path."""
        text, where = str(text_or_path), "the config text"
        if not text.lstrip().startswith("{"):
            where = str(text_or_path)
            try:
                text = Path(text_or_path).read_text()
            except OSError as e:
                raise BGADError(f"cannot read the config file {where}: {e.strerror or e}.") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BGADError(f"{where} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
                            "Write it as bgad-lite does (BGADConfig.to_json).") from None
        if not isinstance(data, dict):
            raise BGADError(f"{where} must hold a JSON object of settings, got {type(data).__name__}.")
        return cls.from_dict(data)

    def diff(self, other: "BGADConfig") -> dict[str, tuple[Any, Any]]:
        """Settings that differ: ``{name: (self's, other's)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


#: Named groups of settings, applied with ``dataclasses.replace(cfg, **PRESETS[name])`` (the CLI's
#: ``--preset``). "fast": a smoke run. "paper": the paper's configuration for a GPU (Colab): the
#: b6 backbone at 256 px, K = 8 blocks, P = 128, Adam lr 2e-4 and the official schedule of 25
#: meta-epochs × 8 epochs, the first meta-epoch normal-only (phase 1: 8 epochs, phase 2: 24 × 8).
#: Its backbone weights come from the timm hub (network needed); on a CPU it takes hours.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"epochs_phase1": 6, "epochs_phase2": 3, "n_cutpaste": 20},
    "paper": {"backbone": "tf_efficientnet_b6", "image_size": 256, "n_blocks": 8, "cond_dim": 128, "lr": 2e-4,
              "lr_phase2": None, "epochs_phase1": 8, "epochs_phase2": 24 * 8, "device": "auto"},
}


def with_preset(cfg: BGADConfig, name: str) -> BGADConfig:
    """``cfg`` with the settings of preset ``name`` (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise BGADError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return dataclasses.replace(cfg, **PRESETS[name])
