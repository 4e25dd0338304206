"""Checkpoints: flow state dicts + config JSON + scoring statistics, written atomically.

A checkpoint is a folder::

    <dir>/config.json   the BGADConfig that built the model
    <dir>/model.pt      {"flows": state_dict, "channels": [C_l], "level_ref": [m_l per level],
                         "boundaries": [[b_n, b_a], ...] or None,
                         "alignment": [the fields of align.LevelAlignment per level] or None}

The alignment is the flows' input map (``align.py``): features must pass through it
(``align.apply``) before these flows score them.

It is written to a temporary folder first and renamed, so a crash never leaves
half a checkpoint. Loading with a config whose model-defining settings differ
is an error that names each difference.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from .align import LevelAlignment
from .config import BGADConfig, BGADError
from .train import make_flows

# Settings that change the network or the meaning of its inputs.
MODEL_KEYS = ("backbone", "pretrained", "image_size", "n_blocks", "cond_dim")


def save_checkpoint(path: str | Path, flows: nn.ModuleList, cfg: BGADConfig, channels: list[int],
                    level_ref: list, boundaries=None, alignment=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        cfg.to_json(tmp / "config.json")
        # CPU copies: a checkpoint written on a GPU (Colab) loads on a machine without one
        state = {k: v.detach().cpu() for k, v in flows.state_dict().items()}
        payload = {"flows": state, "channels": list(channels), "level_ref": list(level_ref),
                   "boundaries": None if boundaries is None else [[float(b_n), float(b_a)] for b_n, b_a in boundaries],
                   "alignment": None if alignment is None else [dataclasses.asdict(a) for a in alignment]}
        torch.save(payload, tmp / "model.pt")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def saved_config(path: str | Path, cfg: BGADConfig | None = None) -> BGADConfig:
    """The config a checkpoint was written with, without loading its weights.

    If ``cfg`` is given, its model-defining settings (``MODEL_KEYS``) must match the
    saved ones: otherwise a BGADError names each difference.
    """
    path = Path(path)
    if not (path / "model.pt").exists() or not (path / "config.json").exists():
        raise BGADError(f"{path} is not a bgad-lite checkpoint (needs config.json and model.pt).")
    saved = BGADConfig.from_json(path / "config.json")
    if cfg is not None:
        # a random backbone (pretrained=False) is drawn under the seed: then the seed defines the features too
        keys = MODEL_KEYS + (() if saved.pretrained else ("seed",))
        diff = {k: v for k, v in saved.diff(cfg).items() if k in keys}
        if diff:
            lines = ", ".join(f"{k}: saved {a!r} vs asked {b!r}" for k, (a, b) in diff.items())
            raise BGADError(f"checkpoint {path} was built with other settings ({lines}). "
                            "Use the saved config (returned by load_checkpoint) or retrain.")
    return saved


def load_checkpoint(path: str | Path, cfg: BGADConfig | None = None):
    """Load a checkpoint -> (flows, saved config, payload dict); ``payload["alignment"]`` is a
    list of :class:`~bgad_lite.align.LevelAlignment` or None.

    If ``cfg`` is given, its model-defining settings must match the saved ones.
    """
    path = Path(path)
    saved = saved_config(path, cfg)
    payload = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    if payload["alignment"] is not None:
        payload["alignment"] = [LevelAlignment(**a) for a in payload["alignment"]]
    flows = make_flows(payload["channels"], saved.cond_dim, saved.n_blocks, saved.seed)
    flows.load_state_dict(payload["flows"])
    return flows.eval(), saved, payload
