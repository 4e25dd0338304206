"""Reading pixels: images as float RGB in [0, 1], masks as bool, resized to one shape.

:func:`input_shape` chooses that shape for a data set: about ``image_size²`` pixels with the
images' own aspect ratio (a square data set: ``image_size × image_size``).
:func:`load_image` and :func:`load_mask` read one file; :func:`load_split` reads the
:class:`~bgad_lite.data.layout.Sample` records of a split into arrays, with a progress bar.
Unreadable or mismatched files raise :class:`~bgad_lite.config.BGADError` naming the file.
A ``size`` is one side length (a square) or a ``(height, width)`` pair.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..config import BGADError
from ..runtime import progress_bar
from .layout import Sample

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


def _resize_float(array: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 ``(H, W, C)`` array to ``(h, w, C)``."""
    h, w = as_hw(size)
    if array.shape[:2] == (h, w):
        return array.astype(np.float32, copy=False)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(array[..., c], dtype=np.float32)).resize(
                (w, h), Image.Resampling.BILINEAR  # PIL sizes are (width, height)
            )
        )
        for c in range(array.shape[2])
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` from one side length or a pair, checked."""
    try:
        hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    except TypeError:
        hw = ()
    if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in hw):
        raise BGADError(f"image size must be a positive integer or a (height, width) pair of them, got {size!r}; "
                        "e.g. size=128.")
    return int(hw[0]), int(hw[1])


# ---------------------------------------------------------------------------
# The shape every image of a data set is resized to
# ---------------------------------------------------------------------------

#: Both sides are multiples of this: the coarsest feature level has stride 16.
SIDE_MULTIPLE = 16


def shape_for_aspect(aspect: float, image_size: int) -> tuple[int, int]:
    """``(height, width)`` with about ``image_size²`` pixels and width / height ≈ ``aspect``.

    h = 16·round(S / √a / 16), w = 16·round(S·√a / 16), each at least 32: a square data set
    (a = 1) gets S × S; BSData's 480 × 195 images (a = 2.46) at S = 160 get 96 × 256 instead of
    a 160 × 160 square that would squeeze every pit to a third of its width.
    """
    if not (aspect > 0 and np.isfinite(aspect)):
        raise BGADError(f"aspect ratio (width / height) must be a positive number, got {aspect!r}.")
    root = float(np.sqrt(aspect))
    side = lambda v: max(2 * SIDE_MULTIPLE, SIDE_MULTIPLE * int(round(v / SIDE_MULTIPLE)))  # noqa: E731
    return side(image_size / root), side(image_size * root)


def input_shape(samples: Sequence[Sample], image_size: int, keep_aspect: bool = True) -> tuple[int, int]:
    """The ``(height, width)`` every image of a data set is resized to.

    ``keep_aspect``: :func:`shape_for_aspect` of the median width / height of ``samples`` (the
    training images; only their headers are read), so the pixel budget stays that of an
    ``image_size`` square; images of another aspect are stretched to it. Otherwise the square
    ``image_size × image_size`` (the paper's resize).
    """
    if not keep_aspect or not samples:
        return image_size, image_size
    ratios = []
    for sample in samples:
        try:
            with Image.open(sample.path) as img:  # lazy: reads the header only
                ratios.append(img.width / img.height)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            raise BGADError(f"could not read image {sample.path}: {err}; delete or replace it.") from err
    return shape_for_aspect(float(np.median(ratios)), image_size)


def load_image(path: str | os.PathLike[str], size: int | tuple[int, int]) -> np.ndarray:
    """Read an image as float32 ``(h, w, 3)`` RGB in [0, 1] (``size``: a side or ``(h, w)``).

    Colour, greyscale (8-bit, 16-bit, 1-bit), palette and RGBA images are all
    returned as RGB (transparent pixels become black). The image is resized
    with bilinear interpolation to exactly that shape.

    Raises:
        BGADError: the file cannot be read or decoded.
    """
    as_hw(size)
    return _resize_float(_to_float_rgb(_open_image(Path(path))), size)


def load_mask(
    path: str | os.PathLike[str],
    size: int | tuple[int, int],
    image_size_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a ground-truth mask as bool ``(h, w)`` (``size``: a side or ``(h, w)``).

    A pixel is anomalous when its grey value is > 127, or > 0 for masks
    stored as 0/1. Resizing uses nearest neighbour so the mask stays binary.

    Args:
        path: the mask file.
        size: output side length, or ``(height, width)``.
        image_size_hw: ``(height, width)`` of the image the mask belongs to;
            when given, a mask of another original size is an error (it would
            silently be misaligned after resizing).

    Raises:
        BGADError: unreadable file, or the mask size differs from the image size.
    """
    h, w = as_hw(size)
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
    small = Image.fromarray(binary.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(small) > 127


def load_split(samples: Sequence[Sample], size: int | tuple[int, int],
               progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a list of samples into arrays, each image resized to ``size`` (a side or ``(h, w)``).

    Returns:
        images: float32 ``(N, h, w, 3)`` in [0, 1];
        masks: bool ``(N, h, w)``, all False for normal images;
        labels: int64 ``(N,)``, 1 for anomalies and 0 for normal images.

    Raises:
        BGADError: an unreadable file, an anomaly without ``mask_path``, or a
            mask whose size differs from its image.
    """
    h, w = as_hw(size)
    n = len(samples)
    images = np.zeros((n, h, w, 3), dtype=np.float32)
    masks = np.zeros((n, h, w), dtype=bool)
    labels = np.zeros((n,), dtype=np.int64)
    bar = progress_bar(samples, desc="loading images", unit="img", disable=n < 64 or not progress, leave=False)
    for i, sample in enumerate(bar):
        img = _open_image(sample.path)
        images[i] = _resize_float(_to_float_rgb(img), (h, w))
        if sample.is_anomaly:
            labels[i] = 1
            if sample.mask_path is None:
                raise BGADError(
                    f"the anomalous sample {sample.path} has no mask_path; give it the path of its "
                    f"ground-truth mask (load_category does this for you)."
                )
            masks[i] = load_mask(sample.mask_path, (h, w), image_size_hw=(img.height, img.width))
    return images, masks, labels
