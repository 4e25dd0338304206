"""The MVTec AD folder layout: which files are the images and masks of a category.

The layout (also used by the embedded texture set, see :mod:`bgad_lite.data.textures`)::

    <root>/<category>/train/good/000.png          normal training images
    <root>/<category>/test/good/000.png           normal test images
    <root>/<category>/test/<defect type>/000.png  anomalous test images
    <root>/<category>/ground_truth/<defect type>/000_mask.png   their masks

BTAD-style masks named ``000.png`` (without ``_mask``) are accepted too.

:func:`load_category` finds the files and returns a :class:`Category` of
:class:`Sample` records (paths only, nothing is read yet; :mod:`bgad_lite.data.images`
reads pixels, :mod:`bgad_lite.data.fewshot` draws the labelled anomalies,
:mod:`bgad_lite.data.download` fetches MVTec AD). Every user-facing problem raises
:class:`bgad_lite.config.BGADError` with a message that says what is wrong and
what to do about it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import BGADError

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
            f"bgad_lite.data.textures.make_texture_dataset() or bgad_lite.data.download.download_mvtec()."
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
