"""The embedded default data set: real textures with synthetic defects of seven types, on disk.

Everything works offline: the images are crops of three photographs that ship with
scikit-image, each defect image a fresh crop plus one synthetic defect and its pixel mask
(:mod:`bgad_lite.data.defects` draws them). BGAD is trained with a few labelled anomalies of
the *seen* types and should still find the *unseen* ones.

With the default ``seen_types=None`` the embedded set uses :data:`DEFAULT_SEEN_TYPES`: ``hole``,
``patch`` and ``scratch`` are seen (the labelled anomalies come from them); ``crack``,
``discolour``, ``pit`` and ``stain`` are unseen, so "unseen" holds the subtle types and one
easy one.

:func:`make_texture_dataset` writes one texture's set in the MVTec layout (read back
with :func:`bgad_lite.data.layout.load_category`); the augmentations of BGAD's training
anomalies live in :mod:`bgad_lite.data.augment`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import BGADError
from ..runtime import progress_bar
from .defects import DEFECT_TYPES, TEXTURE_SIDE, TEXTURES, add_defect, normal_crop, to_uint8

logger = logging.getLogger(__name__)

#: The types the labelled anomalies come from when ``seen_types`` is not given.
DEFAULT_SEEN_TYPES = ("hole", "patch", "scratch")

#: Bump when the generated images change, so stale data sets are not reused.
GENERATOR_VERSION = 4

#: The stamp file that marks a folder as made by :func:`make_texture_dataset`.
STAMP_NAME = ".bgad_dataset.json"


# ---------------------------------------------------------------------------
# The data set on disk
# ---------------------------------------------------------------------------


def _stamp(texture: str, seed: int, n_train: int, n_test_good: int, n_per_type: int, size: int) -> dict:
    return {
        "generator": "bgad_lite.data.textures.make_texture_dataset",
        "version": GENERATOR_VERSION,
        "texture": texture,
        "seed": seed,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_per_type": n_per_type,
        "size": size,
        "defect_types": list(DEFECT_TYPES),
    }


def _same_data(old: dict | None, new: dict) -> bool:
    """Stamps that describe the same bytes (the generator's module name may have moved)."""
    return old is not None and {k: v for k, v in old.items() if k != "generator"} == \
        {k: v for k, v in new.items() if k != "generator"}


def _read_stamp(folder: Path) -> dict | None:
    """The stamp of ``folder``, or None when it is missing or unreadable."""
    try:
        return json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG")


def _write_dataset(
    folder: Path, texture: str, seed: int, n_train: int, n_test_good: int, n_per_type: int, size: int,
    show_progress: bool = True,
) -> None:
    """Write every image and mask of the data set into ``folder``."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2 + len(DEFECT_TYPES))]
    rng_train, rng_test, rng_types = streams[0], streams[1], streams[2:]
    width = max(3, len(str(max(n_train, n_test_good, n_per_type) - 1)))
    progress = progress_bar(
        total=n_train + n_test_good + n_per_type * len(DEFECT_TYPES),
        desc=f"writing {texture} data set",
        unit="img",
        leave=False,
        disable=not show_progress,
    )
    with progress:
        for subfolder, count, rng in (("train/good", n_train, rng_train), ("test/good", n_test_good, rng_test)):
            (folder / subfolder).mkdir(parents=True)
            for i in range(count):
                _save_png(to_uint8(normal_crop(texture, size, rng)), folder / subfolder / f"{i:0{width}d}.png")
                progress.update()
        for defect_type, rng in zip(DEFECT_TYPES, rng_types):
            (folder / "test" / defect_type).mkdir(parents=True)
            (folder / "ground_truth" / defect_type).mkdir(parents=True)
            for i in range(n_per_type):
                image, mask = add_defect(normal_crop(texture, size, rng), defect_type, rng, host=texture)
                _save_png(to_uint8(image), folder / "test" / defect_type / f"{i:0{width}d}.png")
                _save_png(mask.astype(np.uint8) * 255, folder / "ground_truth" / defect_type / f"{i:0{width}d}_mask.png")
                progress.update()


def make_texture_dataset(
    root: str | os.PathLike[str],
    texture: str = "grass",
    seed: int = 0,
    n_train: int = 100,
    n_test_good: int = 40,
    n_per_type: int = 20,
    size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the embedded texture data set to ``<root>/<texture>``; return that path.

    The folder is in MVTec AD layout (``train/good``, ``test/good``,
    ``test/<type>``, ``ground_truth/<type>/<stem>_mask.png``) with RGB PNG
    images and 0/255 greyscale PNG masks, and can be read with
    :func:`bgad_lite.data.layout.load_category`. The same arguments always give
    the same bytes.

    A folder written earlier with the same arguments (recorded in its
    ``.bgad_dataset.json`` stamp) is reused as it is. The data set is written
    to a temporary folder beside the target and renamed into place, so an
    interrupted call never leaves half a data set.

    Raises:
        BGADError: unknown texture, bad counts or size, or ``<root>/<texture>``
            exists with other contents and ``overwrite`` is False.
    """
    if texture not in TEXTURES:
        raise BGADError(f"unknown texture {texture!r}; choose one of {list(TEXTURES)}.")
    for name, value, low in (("n_train", n_train, 1), ("n_test_good", n_test_good, 1), ("n_per_type", n_per_type, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise BGADError(f"{name} must be an integer >= {low}, got {value!r}.")
    if not isinstance(size, (int, np.integer)) or not 32 <= size <= TEXTURE_SIDE:
        raise BGADError(
            f"size must be an integer between 32 and {TEXTURE_SIDE} (the textures are "
            f"{TEXTURE_SIDE}x{TEXTURE_SIDE}), got {size!r}; the default is 256."
        )
    stamp = _stamp(texture, int(seed), int(n_train), int(n_test_good), int(n_per_type), int(size))

    root = Path(root)
    target = root / texture
    if target.exists() and not overwrite:
        old_stamp = _read_stamp(target)
        if _same_data(old_stamp, stamp):
            logger.info("reusing the texture data set in %s", target)
            return target
        if old_stamp is not None and {**old_stamp, "version": None, "defect_types": None} == {
                **stamp, "version": None, "defect_types": None}:
            logger.info("replacing %s: written by generator version %s, now %s", target,
                        old_stamp.get("version"), GENERATOR_VERSION)
            overwrite = True  # an older version of this very data set: regenerate it
    if target.exists() and not overwrite:
        raise BGADError(
            f"{target} already exists and was not made by make_texture_dataset with these "
            f"settings. Pass overwrite=True to replace it, or pick another root folder."
        )

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{texture}.writing-", dir=root))
    try:
        _write_dataset(staging, texture, int(seed), int(n_train), int(n_test_good), int(n_per_type), int(size), progress)
        (staging / STAMP_NAME).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it private
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{texture}.old-", dir=root))
            os.replace(target, old / texture)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left when something failed
    logger.info("wrote the texture data set to %s", target)
    return target
