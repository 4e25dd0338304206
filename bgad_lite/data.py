"""Reading anomaly-detection data sets in the MVTec AD folder layout.

The layout (also used by the embedded texture set, see :mod:`bgad_lite.synth`)::

    <root>/<category>/train/good/000.png          normal training images
    <root>/<category>/test/good/000.png           normal test images
    <root>/<category>/test/<defect type>/000.png  anomalous test images
    <root>/<category>/ground_truth/<defect type>/000_mask.png   their masks

BTAD-style masks named ``000.png`` (without ``_mask``) are accepted too.

What lives here:

* :func:`load_category` finds the files and returns a :class:`Category` of
  :class:`Sample` records (paths only, nothing is read yet);
* :func:`load_image`, :func:`load_mask` and :func:`load_split` read pixels;
* :func:`few_shot_split` draws the ``k`` labelled anomalies of the *seen*
  defect types that supervised anomaly detection (BGAD) trains with, and
  returns the test set that is left;
* :func:`download_mvtec` fetches MVTec AD for a notebook (e.g. Colab).

Every user-facing problem raises :class:`bgad_lite.config.BGADError` with a
message that says what is wrong and what to do about it.
"""

from __future__ import annotations

import hashlib
import lzma
import logging
import math
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .config import BGADError

logger = logging.getLogger(__name__)

#: File name endings (lower case) that count as images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: The label of normal images, as a folder name and as ``Sample.defect_type``.
GOOD = "good"


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One image of a data set (a path, not pixels).

    Attributes:
        path: the image file.
        defect_type: ``"good"`` for a normal image, else the defect folder name.
        mask_path: the ground-truth mask, ``None`` for normal images.
        group: optional grouping key (e.g. the screw position) used by
            :func:`few_shot_split` so that near-duplicate images never end up
            both in the labelled training anomalies and in the test set.
    """

    path: Path
    defect_type: str
    mask_path: Path | None
    group: str | None = None

    @property
    def is_anomaly(self) -> bool:
        """True for every image that is not ``"good"``."""
        return self.defect_type != GOOD

    @property
    def key(self) -> str:
        """``"<defect type>/<file name>"``, the key used by :func:`with_groups`."""
        return f"{self.defect_type}/{self.path.name}"


@dataclass(frozen=True)
class Category:
    """All files of one category (e.g. ``bottle`` or ``grass``).

    Attributes:
        root: the category folder, ``<root>/<name>``.
        name: the category name.
        train: the normal training images (``train/good``), sorted by name.
        test: every test image, normal and anomalous, sorted by
            ``(defect type, file name)``.
    """

    root: Path
    name: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    @property
    def defect_types(self) -> tuple[str, ...]:
        """The sorted defect types of the test set, ``"good"`` excluded."""
        return tuple(sorted({s.defect_type for s in self.test if s.is_anomaly}))


# ---------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------


def _is_image_file(path: Path) -> bool:
    """True for a visible regular file with an image ending."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted((p for p in folder.iterdir() if _is_image_file(p)), key=lambda p: p.name)


def _list_subfolders(folder: Path) -> list[str]:
    """The names of the visible sub-folders of ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_mask(category_dir: Path, defect_type: str, image_path: Path) -> Path:
    """Return the mask of an anomalous image or raise :class:`BGADError`.

    Looks for ``ground_truth/<type>/<stem>_mask.<ext>`` (MVTec AD) first and
    ``ground_truth/<type>/<stem>.<ext>`` (BTAD) second; ``.png`` is tried
    before the other image endings.
    """
    folder = category_dir / "ground_truth" / defect_type
    stem = image_path.stem
    endings = (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png")
    for name in (f"{stem}_mask", stem):
        for ending in endings:
            candidate = folder / f"{name}{ending}"
            if candidate.is_file():
                return candidate
    expected = folder / f"{stem}_mask.png"
    raise BGADError(
        f"the defect image {image_path} has no mask: expected {expected} "
        f"(or {folder / (stem + '.png')}). Add the mask, or delete the image if it has none."
    )


def load_category(root: str | os.PathLike[str], category: str) -> Category:
    """Find the images and masks of ``<root>/<category>`` (MVTec AD layout).

    Nothing is read here apart from folder listings; use :func:`load_split`
    to get pixels.

    Raises:
        BGADError: the root or the category is missing, ``train/good`` or
            ``test`` is missing, there are no training images, a defect image
            has no mask, or ``test/`` holds no defect types.
    """
    root = Path(root)
    if not root.is_dir():
        raise BGADError(
            f"the data root {root} does not exist or is not a folder. Pass the folder that "
            f"holds the category folders (e.g. .../mvtec_anomaly_detection), or create one with "
            f"bgad_lite.synth.make_texture_dataset() or bgad_lite.data.download_mvtec()."
        )
    category_dir = root / category
    if not category_dir.is_dir():
        existing = _list_subfolders(root)
        listing = ", ".join(repr(c) for c in existing) if existing else "none (the folder is empty)"
        hint = ""
        if (root / "train" / GOOD).is_dir():
            hint = (
                f" {root} itself looks like a category folder: pass its parent "
                f"{root.parent} as root and {root.name!r} as category."
            )
        raise BGADError(
            f"category {category!r} not found in {root}. Categories there: {listing}. "
            f"Pick one of them or fix the data root.{hint}"
        )

    train_dir = category_dir / "train" / GOOD
    test_dir = category_dir / "test"
    for needed in (train_dir, test_dir):
        if not needed.is_dir():
            raise BGADError(
                f"{category_dir} is not in MVTec AD layout: the folder "
                f"{needed.relative_to(category_dir)}/ is missing. Expected train/good/, "
                f"test/<type>/ and ground_truth/<type>/ inside the category folder."
            )

    train_paths = _list_images(train_dir)
    if not train_paths:
        raise BGADError(
            f"no training images in {train_dir} (looked for {', '.join(IMAGE_EXTENSIONS)}). "
            f"Put the normal training images there."
        )
    train = tuple(Sample(path=p, defect_type=GOOD, mask_path=None) for p in train_paths)

    test: list[Sample] = []
    for defect_type in _list_subfolders(test_dir):
        paths = _list_images(test_dir / defect_type)
        if not paths:
            logger.warning("skipping %s: it holds no images", test_dir / defect_type)
            continue
        for path in paths:
            mask = None if defect_type == GOOD else _find_mask(category_dir, defect_type, path)
            test.append(Sample(path=path, defect_type=defect_type, mask_path=mask))
    test.sort(key=lambda s: (s.defect_type, s.path.name))

    if not any(s.is_anomaly for s in test):
        raise BGADError(
            f"{test_dir} holds no defect types (only 'good' images or nothing). An anomaly "
            f"detection test set needs test/<defect type>/ folders with anomalous images and "
            f"their masks in ground_truth/<defect type>/."
        )
    if not any(not s.is_anomaly for s in test):
        logger.warning("%s has no test/good images: image-level AUROC cannot be computed", category_dir)

    return Category(root=category_dir, name=category, train=train, test=tuple(test))


def with_groups(category: Category, groups: dict[str, str]) -> Category:
    """Return a copy of ``category`` whose test samples carry a ``group``.

    Args:
        category: the category to annotate.
        groups: maps ``"<defect type>/<file name>"`` (e.g. ``"scratch/003.png"``)
            to a group name. Test samples that are not in the dict keep
            ``group=None``. Training images are never grouped (they are all
            normal and their names clash with ``test/good``).

    Raises:
        BGADError: a key does not name a test image.
    """
    known = {s.key for s in category.test}
    unknown = sorted(set(groups) - known)
    if unknown:
        examples = ", ".join(repr(k) for k in sorted(known)[:5])
        raise BGADError(
            f"with_groups: {len(unknown)} key(s) name no test image of {category.name!r}, "
            f"e.g. {unknown[0]!r}. Keys are '<defect type>/<file name>', e.g. {examples}."
        )
    test = tuple(replace(s, group=groups.get(s.key, s.group)) for s in category.test)
    return replace(category, test=test)


# ---------------------------------------------------------------------------
# Reading pixels
# ---------------------------------------------------------------------------


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning any failure into a BGADError."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here
            return img.copy()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise BGADError(f"could not read image {path}: {err}; delete or replace it.") from err


def _to_float_rgb(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any usual mode to float32 ``(H, W, 3)`` in [0, 1].

    * 16-bit greyscale (``"I;16"``, ``"I"``) is divided by 65535;
    * float greyscale (``"F"``) is used as is when its maximum is <= 1,
      otherwise divided by 255;
    * images with transparency (``"RGBA"``, ``"LA"``, ``"P"`` with a
      transparent colour) are composited on black;
    * everything else goes through PIL's conversion to ``"RGB"``.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(img, dtype=np.float32) / 65535.0
    elif mode == "F":
        grey = np.asarray(img, dtype=np.float32)
        if grey.size and float(np.nanmax(grey)) > 1.0:
            grey = grey / 255.0
    elif mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgba[..., :3] * rgba[..., 3:4])
    else:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    grey = np.clip(np.nan_to_num(grey), 0.0, 1.0)
    return np.repeat(grey[..., None], 3, axis=2)


def _resize_float(array: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float32 ``(H, W, C)`` array to ``(size, size, C)``."""
    if array.shape[:2] == (size, size):
        return array.astype(np.float32, copy=False)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(array[..., c], dtype=np.float32)).resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        for c in range(array.shape[2])
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise BGADError(f"image size must be a positive integer, got {size!r}; e.g. size=128.")


def load_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """Read an image as float32 ``(size, size, 3)`` RGB in [0, 1].

    Colour, greyscale (8-bit, 16-bit, 1-bit), palette and RGBA images are all
    returned as RGB (transparent pixels become black). The image is resized
    with bilinear interpolation; the aspect ratio is not kept.

    Raises:
        BGADError: the file cannot be read or decoded.
    """
    _check_size(size)
    return _resize_float(_to_float_rgb(_open_image(Path(path))), size)


def load_mask(
    path: str | os.PathLike[str],
    size: int,
    image_size_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a ground-truth mask as bool ``(size, size)``.

    A pixel is anomalous when its grey value is > 127, or > 0 for masks
    stored as 0/1. Resizing uses nearest neighbour so the mask stays binary.

    Args:
        path: the mask file.
        size: output side length.
        image_size_hw: ``(height, width)`` of the image the mask belongs to;
            when given, a mask of another original size is an error (it would
            silently be misaligned after resizing).

    Raises:
        BGADError: unreadable file, or the mask size differs from the image size.
    """
    _check_size(size)
    path = Path(path)
    img = _open_image(path)
    mask_hw = (img.height, img.width)
    if image_size_hw is not None and tuple(image_size_hw) != mask_hw:
        raise BGADError(
            f"the mask {path} is {mask_hw[0]}x{mask_hw[1]} (HxW) but its image is "
            f"{image_size_hw[0]}x{image_size_hw[1]}; masks must have the size of their image. "
            f"Replace the mask with one of the right size."
        )
    if img.mode == "1":
        grey = np.asarray(img, dtype=np.uint8)
    elif img.mode.startswith("I;16") or img.mode == "I":
        grey = (np.asarray(img, dtype=np.float64) > 0).astype(np.uint8)  # any non-zero value
    else:
        grey = np.asarray(img.convert("L"))
    binary = grey > 127 if grey.size and grey.max() > 1 else grey > 0
    small = Image.fromarray(binary.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(small) > 127


def load_split(samples: Sequence[Sample], size: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a list of samples into arrays.

    Returns:
        images: float32 ``(N, size, size, 3)`` in [0, 1];
        masks: bool ``(N, size, size)``, all False for normal images;
        labels: int64 ``(N,)``, 1 for anomalies and 0 for normal images.

    Raises:
        BGADError: an unreadable file, an anomaly without ``mask_path``, or a
            mask whose size differs from its image.
    """
    _check_size(size)
    n = len(samples)
    images = np.zeros((n, size, size, 3), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    labels = np.zeros((n,), dtype=np.int64)
    bar = tqdm(samples, desc="loading images", unit="img", disable=n < 64 or not progress, leave=False)
    for i, sample in enumerate(bar):
        img = _open_image(sample.path)
        images[i] = _resize_float(_to_float_rgb(img), size)
        if sample.is_anomaly:
            labels[i] = 1
            if sample.mask_path is None:
                raise BGADError(
                    f"the anomalous sample {sample.path} has no mask_path; give it the path of its "
                    f"ground-truth mask (load_category does this for you)."
                )
            masks[i] = load_mask(sample.mask_path, size, image_size_hw=(img.height, img.width))
    return images, masks, labels


# ---------------------------------------------------------------------------
# Few-shot split: k labelled anomalies of the seen types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FewShotSplit:
    """The labelled anomalies for training and the test set that is left.

    Attributes:
        labelled: the ``k`` labelled anomalies (seen types only), sorted by
            ``(defect type, file name)``.
        test: the category's test set minus the labelled images (and minus
            seen-type anomalies that share a group with a labelled one).
        seen_types: the defect types labelled anomalies come from.
        unseen_types: the other defect types (only in the test set).
    """

    labelled: tuple[Sample, ...]
    test: tuple[Sample, ...]
    seen_types: tuple[str, ...]
    unseen_types: tuple[str, ...]


def _choose_seen_types(
    category: Category, seen_types: Sequence[str] | None, require_unseen: bool | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Resolve ``seen_types`` to ``(seen, unseen)``, both sorted."""
    all_types = category.defect_types
    if not all_types:
        raise BGADError(f"category {category.name!r} has no defect types in its test set; nothing to label.")
    if require_unseen is None:
        require_unseen = seen_types is None

    if seen_types is None:
        seen = all_types[: math.ceil(len(all_types) / 2)]
    else:
        if isinstance(seen_types, str):
            raise BGADError(
                f"seen_types must be a tuple of type names, got the string {seen_types!r}; "
                f"write seen_types=({seen_types!r},)."
            )
        unknown = sorted(set(seen_types) - set(all_types))
        if unknown:
            raise BGADError(
                f"unknown defect type(s) {unknown} in seen_types for category {category.name!r}; "
                f"valid types are {list(all_types)}."
            )
        seen = tuple(sorted(set(seen_types)))
    unseen = tuple(t for t in all_types if t not in seen)

    if require_unseen and not unseen:
        if len(all_types) == 1:
            raise BGADError(
                f"category {category.name!r} has only one defect type ({all_types[0]!r}): nothing "
                f"is left for 'unseen'. Pass seen_types=({all_types[0]!r},) to train and evaluate "
                f"on seen types only (command line: --seen-types {all_types[0]})."
            )
        raise BGADError(
            f"seen_types {list(seen)} covers every defect type of {category.name!r}: nothing is left "
            f"for 'unseen'. Leave some types out, or pass require_unseen=False."
        )
    return seen, unseen


def _draw_round_robin(by_type: dict[str, list[Sample]], k: int, rng: np.random.Generator) -> list[Sample]:
    """Take ``k`` images, one per type in turn, random images within a type."""
    queues = {t: [items[j] for j in rng.permutation(len(items))] for t, items in by_type.items()}
    chosen: list[Sample] = []
    while len(chosen) < k:
        for t in sorted(queues):
            if queues[t] and len(chosen) < k:
                chosen.append(queues[t].pop(0))
    return chosen


def _draw_by_group(by_type: dict[str, list[Sample]], k: int, rng: np.random.Generator) -> list[Sample]:
    """Take ``k`` images group by group, cycling over the types.

    At a type's turn, a random group that still holds an unlabelled image of
    that type is taken whole (all its seen-type images, of any type). A group
    that would overshoot ``k`` contributes a random subset. Images without a
    group form a group of their own.
    """
    members: dict[str, list[Sample]] = {}
    for t in sorted(by_type):
        for s in by_type[t]:
            members.setdefault(s.group if s.group is not None else f"\0{s.key}", []).append(s)
    chosen: list[Sample] = []
    used: set[str] = set()
    while len(chosen) < k:
        for t in sorted(by_type):
            if len(chosen) >= k:
                break
            candidates = sorted(g for g, items in members.items() if g not in used and any(s.defect_type == t for s in items))
            if not candidates:
                continue
            group = candidates[int(rng.integers(len(candidates)))]
            used.add(group)
            items = members[group]
            room = k - len(chosen)
            if len(items) > room:
                items = [items[j] for j in sorted(rng.choice(len(items), size=room, replace=False))]
            chosen.extend(items)
    return chosen


def few_shot_split(
    category: Category,
    k: int,
    seen_types: Sequence[str] | None,
    seed: int,
    require_unseen: bool | None = None,
) -> FewShotSplit:
    """Draw ``k`` labelled anomalies of the seen types; the rest is the test set.

    Args:
        category: from :func:`load_category` (optionally :func:`with_groups`).
        k: number of labelled anomalies (0 gives an empty labelled set).
        seen_types: the defect types that may be labelled. ``None`` takes the
            first ``ceil(n / 2)`` of the ``n`` sorted types.
        seed: seeds ``numpy.random.default_rng``; same seed, same split.
        require_unseen: whether at least one type must stay unseen. ``None``
            means "yes when seen_types is None, no when it is given".

    The draw goes round robin over the seen types (random images within a
    type), so the labelled set is as balanced as possible. When the seen
    anomalies carry a ``group``, whole groups are drawn instead, and every
    seen-type test anomaly that shares a group with a labelled image is
    removed from the test set, so that near-duplicates do not leak.

    Raises:
        BGADError: unknown types, no type left unseen when one is required,
            a negative ``k``, or fewer seen anomalies than ``k``.
    """
    seen, unseen = _choose_seen_types(category, seen_types, require_unseen)
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise BGADError(f"k (the number of labelled anomalies) must be an integer >= 0, got {k!r}.")

    by_type = {t: [s for s in category.test if s.defect_type == t] for t in seen}
    available = sum(len(v) for v in by_type.values())
    if available < k:
        raise BGADError(
            f"asked for k={k} labelled anomalies but the seen types {list(seen)} have only "
            f"{available} images; lower n_anomalies or add types to seen_types."
        )

    rng = np.random.default_rng(seed)
    uses_groups = any(s.group is not None for items in by_type.values() for s in items)
    chosen = _draw_by_group(by_type, k, rng) if uses_groups else _draw_round_robin(by_type, k, rng)
    labelled = tuple(sorted(chosen, key=lambda s: (s.defect_type, s.path.name)))

    taken = set(labelled)
    leaked_groups = {s.group for s in labelled if s.group is not None}
    test = tuple(
        s
        for s in category.test
        if s not in taken and not (s.defect_type in seen and s.group is not None and s.group in leaked_groups)
    )
    removed = len(category.test) - len(test) - len(labelled)
    if removed:
        logger.info("removed %d same-group seen anomalies from the test set", removed)
    if seen and k > 0 and not any(s.defect_type in seen for s in test):
        logger.warning("no anomaly of the seen types %s is left in the test set", list(seen))
    return FewShotSplit(labelled=labelled, test=test, seen_types=seen, unseen_types=unseen)


# ---------------------------------------------------------------------------
# Download (for notebooks, e.g. Colab)
# ---------------------------------------------------------------------------

#: The 15 MVTec AD categories and whether each is a texture or an object.
MVTEC_CATEGORIES: dict[str, str] = {
    "bottle": "object",
    "cable": "object",
    "capsule": "object",
    "carpet": "texture",
    "grid": "texture",
    "hazelnut": "object",
    "leather": "texture",
    "metal_nut": "object",
    "pill": "object",
    "screw": "object",
    "tile": "texture",
    "toothbrush": "object",
    "transistor": "object",
    "wood": "texture",
    "zipper": "object",
}

#: One archive per category (0.1 to 1 GB each), as linked from the MVTec AD page.
_MVTEC_SHARE = "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
MVTEC_URLS = {
    "bottle": _MVTEC_SHARE + "420937370-1629951468/bottle.tar.xz",
    "cable": _MVTEC_SHARE + "420937413-1629951498/cable.tar.xz",
    "capsule": _MVTEC_SHARE + "420937454-1629951595/capsule.tar.xz",
    "carpet": _MVTEC_SHARE + "420937484-1629951672/carpet.tar.xz",
    "grid": _MVTEC_SHARE + "420937487-1629951814/grid.tar.xz",
    "hazelnut": _MVTEC_SHARE + "420937545-1629951845/hazelnut.tar.xz",
    "leather": _MVTEC_SHARE + "420937607-1629951964/leather.tar.xz",
    "metal_nut": _MVTEC_SHARE + "420937637-1629952063/metal_nut.tar.xz",
    "pill": "https://www.mydrive.ch/shares/43421/11a215a5749fcfb75e331ddd5f8e43ee/download/420938129-1629953099/pill.tar.xz",
    "screw": _MVTEC_SHARE + "420938130-1629953152/screw.tar.xz",
    "tile": _MVTEC_SHARE + "420938133-1629953189/tile.tar.xz",
    "toothbrush": _MVTEC_SHARE + "420938134-1629953256/toothbrush.tar.xz",
    "transistor": _MVTEC_SHARE + "420938166-1629953277/transistor.tar.xz",
    "wood": _MVTEC_SHARE + "420938383-1629953354/wood.tar.xz",
    "zipper": _MVTEC_SHARE + "420938385-1629953449/zipper.tar.xz",
}
MVTEC_HOME = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
_CHUNK = 1 << 20  # 1 MiB


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_error(url: str, root: Path, reason: object) -> BGADError:
    return BGADError(
        f"could not reach {url}: {reason}. Download MVTec AD by hand from {MVTEC_HOME} "
        f"and extract it under {root}"
    )


def _download(url: str, part: Path, root: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming from its current size."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # range not satisfiable: the .part is already complete
            return
        raise _offline_error(url, root, err) from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise _offline_error(url, root, getattr(err, "reason", err)) from err

    with response:
        resumed = start > 0 and getattr(response, "status", 200) == 206
        if start and not resumed:
            logger.info("the server ignored the Range header: restarting the download")
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length else None
        try:
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=part.name
            ) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise _offline_error(url, root, f"{err} (the partial download {part} is kept; call again to resume)") from err


def _category_members(tar: tarfile.TarFile, category: str) -> Iterable[tarfile.TarInfo]:
    """Yield the archive members under ``<category>/`` (at the top or one level down)."""
    for member in tar:
        parts = Path(member.name).parts
        if parts[:1] == (category,) or (len(parts) > 1 and parts[1] == category):
            yield member


def _extract_safely(tar: tarfile.TarFile, member: tarfile.TarInfo, folder: Path) -> None:
    """Extract one member, refusing paths that would escape ``folder``.

    Uses tarfile's ``"data"`` filter where this Python has it (3.10.12+,
    3.11.4+, 3.12+), and an equivalent minimal check otherwise.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, folder, filter="data")
        return
    parts = Path(member.name).parts
    if Path(member.name).is_absolute() or ".." in parts or not (member.isfile() or member.isdir()):
        raise BGADError(f"refusing the unsafe archive member {member.name!r}; the archive is not the MVTec AD one.")
    tar.extract(member, folder)


def download_mvtec(category: str, root: str | os.PathLike[str], timeout: float = 30.0,
                   sha256: str | None = None) -> Path:
    """Download one MVTec AD category and extract it; return ``<root>/<category>``.

    Does nothing (and needs no network) when ``<root>/<category>/train/good``
    already exists. Otherwise downloads ``<category>.tar.xz`` into ``root``
    (resuming a ``.part`` file left by an interrupted call) and extracts it.
    Integrity: when ``sha256`` is given the archive must match it; in any case
    extraction reads the whole xz stream, whose CRC checks catch a corrupt or
    truncated download (the bad file is then deleted). The archive's SHA-256
    is logged so that it can be pinned.

    Raises:
        BGADError: unknown category, no network (or ``timeout`` seconds
            without an answer), a corrupt download, or a half-filled category
            folder in the way.
    """
    if category not in MVTEC_CATEGORIES:
        raise BGADError(f"unknown MVTec AD category {category!r}; choose one of {sorted(MVTEC_CATEGORIES)}.")
    root = Path(root)
    target = root / category
    if (target / "train" / GOOD).is_dir():
        return target
    if target.exists():
        raise BGADError(
            f"{target} exists but has no train/good folder (an interrupted copy?). Delete it and call again."
        )
    root.mkdir(parents=True, exist_ok=True)
    url = MVTEC_URLS[category]
    archive = root / f"{category}.tar.xz"

    def corrupt(detail: str) -> BGADError:
        archive.unlink(missing_ok=True)
        return BGADError(f"the download of {url} is corrupt ({detail}); it was deleted. Call again to retry, "
                         f"or download MVTec AD by hand from {MVTEC_HOME}.")

    if not archive.exists():
        part = root / (archive.name + ".part")
        _download(url, part, root, timeout)
        os.replace(part, archive)
    digest = _sha256(archive)
    logger.info("%s: SHA-256 %s", archive.name, digest)
    if sha256 is not None and digest != sha256:
        raise corrupt(f"SHA-256 {digest}, expected {sha256}")

    logger.info("extracting %s from %s", category, archive)
    staging = Path(tempfile.mkdtemp(prefix=f".{category}.", dir=root))
    try:
        found = None
        with tarfile.open(archive, "r|xz") as tar:  # a stream: one pass, every xz block checked
            for member in _category_members(tar, category):
                _extract_safely(tar, member, staging)
                found = Path(member.name).parts
        if found is None:
            raise corrupt(f"it holds no folder {category!r}")
        extracted = staging / category if found[0] == category else staging / found[0] / category
        os.replace(extracted, target)
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError) as err:
        raise corrupt(f"{type(err).__name__}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()  # extracted: the archive is no longer needed
    return target
