"""Test oracles: slow, literal references the library is checked against (also used by the
AUPRO benchmark), and helpers the tests read the notebooks with."""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from bgad_lite.course.notebooks import REPOSITORY
from bgad_lite.metrics import _check_fpr_limit, _check_maps_and_masks, normalised_area


def aupro_reference(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Slow, literal AUPRO with the same definition as :func:`aupro` (the tests' oracle).

    Loops over every distinct score value as a threshold (descending) and, for
    each threshold, over every region, computing overlaps with plain boolean
    masks. Stops once FPR has passed ``fpr_limit`` (later points cannot affect
    the area). Then the same integration as :func:`aupro`.
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    maps, masks = _check_maps_and_masks(maps, masks)

    # regions as (image index, boolean mask of the region within that image)
    regions = []
    for i in range(masks.shape[0]):
        image_labels, n = ndimage.label(masks[i], structure=np.ones((3, 3), dtype=bool))
        for k in range(1, n + 1):
            regions.append((i, image_labels == k))
    normal = ~masks
    n_normal = int(np.count_nonzero(normal))

    fpr_points = [0.0]
    pro_points = [0.0]
    for t in np.unique(maps)[::-1]:
        flagged = maps >= t
        overlaps = [np.count_nonzero(flagged[i] & region) / np.count_nonzero(region) for i, region in regions]
        pro_points.append(float(np.mean(overlaps)))
        fpr_points.append(np.count_nonzero(flagged & normal) / n_normal)
        if fpr_points[-1] > fpr_limit:
            break
    return normalised_area(np.array(fpr_points), np.array(pro_points), fpr_limit)


def prose_words(nb) -> int:
    """Words of prose in a notebook: the markdown cells, without LaTeX, code spans, links' targets and
    HTML tags (what a reader reads as text)."""
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)  # display maths
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = re.sub(r"<[^>]+>", " ", text)  # HTML tags
    text = re.sub(r"\$[^$]*\$", " ", text)  # inline maths
    text = re.sub(r"`[^`]*`", " ", text)  # code spans
    return len(re.findall(r"[A-Za-z]+(?:['’-][A-Za-z]+)*", text))


def colab_url(name: str) -> str:
    """The "Open in Colab" address of a notebook."""
    gh = REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{gh}/blob/main/notebooks/{name}.ipynb"
