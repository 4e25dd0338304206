"""Downloading MVTec AD for a notebook (e.g. Colab): one category, verified, extracted safely.

Nothing in the library or its tests downloads on its own; :func:`download_mvtec` is
called by the notebooks when ``DATASET = "mvtec"``. Offline, it fails with a message
that says where to put the data by hand.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from ..config import BGADError
from ..runtime import progress_bar
from .layout import GOOD

logger = logging.getLogger(__name__)

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
            with open(part, "ab" if resumed else "wb") as f, progress_bar(
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
