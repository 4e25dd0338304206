"""One frozen dataclass that holds every setting of a bgad-lite run.

Variants are made with ``dataclasses.replace(cfg, ...)``; a config is saved as
JSON beside every checkpoint and every ``results.json``.

Who reads it: the builders, and nothing below them.

- :func:`bgad_lite.pipeline.run` (the CLI calls it) and :func:`bgad_lite.prepare.prepare`,
  which resolves the device once (``runtime.with_device``) and keeps the config in ``Prepared.cfg``;
- the steps a notebook calls on a ``Prepared``: ``pipeline.fit_phase1``, ``fit_phase1_cached``
  (and its cache key, ``phase1_checkpoint_dir`` / ``phase1_is_cached``), ``fit_variant``,
  ``fit_variants`` and ``evaluate.evaluate`` read ``prep.cfg`` (or a variant of it that is passed
  in) and hand plain numbers down;
- :mod:`bgad_lite.checkpoint`, which saves and checks it beside the weights;
- the margin explorer (``explore.explorer``), which starts at ``prep.cfg``'s β, τ and N;
- the course: ``course.setup.make_config`` / ``describe`` / ``phase1`` and ``course.slides``.

Everything else — features, flow, boundary, losses, train, scoring, metrics, gaussian,
align, data, explore — takes tensors and the numbers it uses (``train_step(…, beta, tau,
normalizer, lam)``).

Settings that were tried and not kept are not here: ``docs/experiments.md`` lists them;
fixed design choices are constants beside the code that uses them (``docs/design.md``).
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
ALIGN_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class BGADConfig:
    # --- data -----------------------------------------------------------
    data_dir: str | None = None  # MVTec-layout root; None = the embedded texture set
    category: str = "grass"  # category folder (a texture name for the embedded set)
    image_size: int = 128  # about image_size² pixels per image, the training images' aspect ratio kept
    n_anomalies: int = 10  # k labelled anomalies, drawn from the seen types only
    seen_types: tuple[str, ...] | None = None  # None: first half of the sorted types
    n_cutpaste: int = 120  # RandAugmented CutPaste images added for phase 2
    # --- backbone -------------------------------------------------------
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True  # False = random weights, only when asked for
    # --- flow -----------------------------------------------------------
    n_blocks: int = 4  # K AllInOneBlocks per level (paper: 8)
    cond_dim: int = 64  # P, positional-encoding channels (paper: 128)
    align_positions: str = "auto"  # positions' Gaussians onto the pooled one: "auto" (align.py), "on", "off"
    # --- boundary and loss ----------------------------------------------
    beta: float = 0.01  # β: b_n is the β-quantile of normal logp / N
    tau: float = 0.1  # τ: margin, b_a = b_n - τ
    normalizer: float = 10.0  # N
    bgspp_lambda: float = 1.0  # λ
    boundary: str = "per_batch"  # "fixed" (after phase 1) or "per_batch" (official code)
    focal_weighting: bool = False
    # --- optimisation ---------------------------------------------------
    lr: float = 1e-3  # phase 1 (paper: 2e-4; 1e-3 trains within a CPU budget)
    lr_phase2: float = 2e-3  # phase 2
    epochs_phase1: int = 20
    epochs_phase2: int = 12  # × (N_train + 2·N_anom) images per epoch
    # --- run ------------------------------------------------------------
    seed: int = 0
    device: str = "cpu"  # "cpu", "cuda" or "auto"; resolved once, by prepare
    cache_dir: str = ".bgad_cache"
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        if isinstance(self.seen_types, list):  # JSON gives lists; keep tuples so the dataclass stays hashable
            object.__setattr__(self, "seen_types", tuple(self.seen_types))
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
        if self.align_positions not in ALIGN_MODES:
            raise BGADError(f"align_positions must be one of {ALIGN_MODES}, got {self.align_positions!r}: \"auto\" "
                            "aligns the levels whose positions differ (align.py), \"on\" every level, \"off\" none.")
        if self.image_size < 32 or self.image_size % 16:
            raise BGADError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}.")
        if self.cond_dim % 4:
            raise BGADError(f"cond_dim must be a multiple of 4 (sin/cos for x and y), got {self.cond_dim}.")
        if self.n_anomalies < 1:
            raise BGADError(f"n_anomalies must be >= 1, got {self.n_anomalies}.")
        for name in ("n_blocks", "epochs_phase1"):
            if getattr(self, name) < 1:
                raise BGADError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.epochs_phase2 < 0 or self.n_cutpaste < 0:
            raise BGADError("epochs_phase2 and n_cutpaste must be >= 0.")
        for name in ("lr", "lr_phase2"):
            if not getattr(self, name) > 0:
                raise BGADError(f"{name} must be > 0, got {getattr(self, name)}.")

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
#: ``--preset``). "fast": a smoke run that only checks that everything runs (the notebooks' SMOKE
#: mode uses it too). "paper": the paper's configuration for a GPU (Colab): the b6 backbone at
#: 256 px, K = 8 blocks, P = 128, Adam lr 2e-4 and the official schedule of 25 meta-epochs × 8
#: epochs, the first meta-epoch normal-only (phase 1: 8 epochs, phase 2: 24 × 8). Its backbone
#: weights come from the timm hub (network needed); on a CPU it takes hours.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"epochs_phase1": 3, "epochs_phase2": 2, "n_cutpaste": 8, "image_size": 64},
    "paper": {"backbone": "tf_efficientnet_b6", "image_size": 256, "n_blocks": 8, "cond_dim": 128, "lr": 2e-4,
              "lr_phase2": 2e-4, "epochs_phase1": 8, "epochs_phase2": 24 * 8, "device": "auto"},
}


def with_preset(cfg: BGADConfig, name: str) -> BGADConfig:
    """``cfg`` with the settings of preset ``name`` (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise BGADError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return dataclasses.replace(cfg, **PRESETS[name])
