"""Tests of bgad_lite.data.defects and bgad_lite.data.textures: the embedded texture data set."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgad_lite.config import BGADError
from bgad_lite.data import textures
from bgad_lite.data.defects import DEFECT_TYPES, TEXTURES, add_defect, normal_crop, to_uint8
from bgad_lite.data.layout import load_category
from bgad_lite.data.textures import STAMP_NAME, make_texture_dataset

SMALL = dict(n_train=6, n_test_good=3, n_per_type=3, size=64)


def file_hashes(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_texture_dataset(tmp_path_factory.mktemp("a"), "grass", seed=0, **SMALL)


# ---------------------------------------------------------------------------
# make_texture_dataset
# ---------------------------------------------------------------------------


def test_layout_and_contents(small_set: Path) -> None:
    cat = load_category(small_set.parent, "grass")
    assert cat.defect_types == DEFECT_TYPES and len(DEFECT_TYPES) >= 4
    assert len(cat.train) == 6
    assert sum(not s.is_anomaly for s in cat.test) == 3
    for s in cat.test + cat.train:
        with Image.open(s.path) as img:
            assert img.mode == "RGB" and img.size == (64, 64)
        if s.is_anomaly:
            with Image.open(s.mask_path) as m:
                assert m.mode == "L" and m.size == (64, 64)
                values = np.asarray(m)
            assert set(np.unique(values)) <= {0, 255}  # binary
            assert (values == 255).any()  # non-empty


def test_deterministic(tmp_path: Path, small_set: Path) -> None:
    again = make_texture_dataset(tmp_path / "b", "grass", seed=0, **SMALL)
    assert file_hashes(again) == file_hashes(small_set)


def test_seed_changes_bytes(tmp_path: Path, small_set: Path) -> None:
    other = file_hashes(make_texture_dataset(tmp_path, "grass", seed=1, **SMALL))
    same = file_hashes(small_set)
    assert other.keys() == same.keys()
    images = [k for k in same if k.endswith(".png")]
    assert all(other[k] != same[k] for k in images)


def test_train_and_test_crops_differ(small_set: Path) -> None:
    train = {hashlib.sha256(p.read_bytes()).digest() for p in (small_set / "train" / "good").iterdir()}
    test = {hashlib.sha256(p.read_bytes()).digest() for p in (small_set / "test" / "good").iterdir()}
    assert not train & test


def test_written_defects_change_their_masked_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every clean crop the generator defaces, then check the files on disk."""
    recorded = []
    real = textures.add_defect

    def spy(image: np.ndarray, defect_type: str, rng: np.random.Generator, host: str) -> tuple:
        out, mask = real(image, defect_type, rng, host=host)
        recorded.append((defect_type, image.copy(), mask))
        return out, mask

    monkeypatch.setattr(textures, "add_defect", spy)
    folder = make_texture_dataset(tmp_path, "grass", seed=0, **SMALL)
    assert len(recorded) == len(DEFECT_TYPES) * SMALL["n_per_type"]
    for j, (defect_type, clean, mask) in enumerate(recorded):
        stem = f"{j % SMALL['n_per_type']:03d}"
        written = np.asarray(Image.open(folder / "test" / defect_type / f"{stem}.png"))
        written_mask = np.asarray(Image.open(folder / "ground_truth" / defect_type / f"{stem}_mask.png")) > 0
        assert np.array_equal(written_mask, mask)
        changed = np.any(written != to_uint8(clean), axis=2)
        assert changed[mask].mean() >= 0.25, (defect_type, stem)


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
@pytest.mark.parametrize("size", [64, 256])
def test_add_defect_is_visible_and_local(defect_type: str, size: int) -> None:
    rng = np.random.default_rng(7)
    for texture in TEXTURES:
        for _ in range(3):
            clean = normal_crop(texture, size, rng)
            before = clean.copy()
            image, mask = add_defect(clean, defect_type, rng, host=texture)
            assert np.array_equal(clean, before)  # input untouched
            assert image.shape == clean.shape and image.dtype == np.float32
            assert mask.shape == (size, size) and mask.dtype == bool and mask.any()
            assert 0.0 <= image.min() and image.max() <= 1.0
            diff = np.abs(image - clean).mean(axis=2)
            inside = diff[mask].mean()
            outside = diff[~mask].mean()
            assert inside > 0.03, (texture, defect_type, inside)
            assert inside > 5 * outside, (texture, defect_type, inside, outside)


def test_defect_types_look_different() -> None:
    """A cheap signature per type: stains are coloured, holes are dark, scratches thin, patches keep colour."""
    rng = np.random.default_rng(0)
    clean = normal_crop("grass", 256, rng)
    results = {t: add_defect(clean, t, rng, host="grass") for t in DEFECT_TYPES}
    colourfulness = {t: np.ptp(img[m], axis=1).mean() for t, (img, m) in results.items()}
    assert colourfulness["stain"] > 0.03 and max(colourfulness[t] for t in ("hole", "patch", "scratch")) < 1e-6
    image, mask = results["hole"]
    assert image[mask].mean() < clean[mask].mean() - 0.1  # holes are dark
    thickness = {t: m.sum() / max(1, np.count_nonzero(m & ~np.roll(m, 1, axis=0))) for t, (_, m) in results.items()}
    assert thickness["scratch"] < min(thickness["hole"], thickness["stain"])


def test_unknown_defect_type() -> None:
    with pytest.raises(BGADError, match="unknown defect type 'dent'"):
        add_defect(np.zeros((64, 64, 3), np.float32), "dent", np.random.default_rng(0))


def test_stamp_reuse(small_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_write(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data set should have been reused")

    monkeypatch.setattr(textures, "_write_dataset", must_not_write)
    assert make_texture_dataset(small_set.parent, "grass", seed=0, **SMALL) == small_set
    stamp = json.loads((small_set / STAMP_NAME).read_text())
    assert stamp["seed"] == 0 and stamp["texture"] == "grass" and stamp["size"] == 64


def test_other_settings_refused_then_overwritten(tmp_path: Path) -> None:
    make_texture_dataset(tmp_path, "brick", seed=0, **SMALL)
    with pytest.raises(BGADError, match="overwrite=True"):
        make_texture_dataset(tmp_path, "brick", seed=1, **SMALL)
    make_texture_dataset(tmp_path, "brick", seed=1, overwrite=True, **SMALL)
    assert json.loads((tmp_path / "brick" / STAMP_NAME).read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brick"]  # no temp folders left


def test_an_older_generator_version_is_regenerated(tmp_path: Path) -> None:
    folder = make_texture_dataset(tmp_path, "brick", seed=0, **SMALL)
    stamp = json.loads((folder / STAMP_NAME).read_text())
    old = {**stamp, "version": stamp["version"] - 1, "defect_types": ["hole", "patch", "scratch", "stain"]}
    (folder / STAMP_NAME).write_text(json.dumps(old))
    (folder / "test" / "crack").rename(folder / "stale")  # what an old version did not write
    make_texture_dataset(tmp_path, "brick", seed=0, **SMALL)  # no error: replaced in place
    assert json.loads((folder / STAMP_NAME).read_text()) == stamp
    assert (folder / "test" / "crack").is_dir() and not (folder / "stale").exists()


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "grass").mkdir()
    (tmp_path / "grass" / "my_photos.txt").write_text("precious")
    with pytest.raises(BGADError, match=r"already exists.*overwrite=True.*another root"):
        make_texture_dataset(tmp_path, "grass", **SMALL)
    assert (tmp_path / "grass" / "my_photos.txt").read_text() == "precious"


def test_crash_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def crash(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. the user stops the notebook cell
        return real(*args, **kwargs)

    real = textures.add_defect
    monkeypatch.setattr(textures, "add_defect", crash)
    with pytest.raises(KeyboardInterrupt):
        make_texture_dataset(tmp_path, "gravel", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(texture="sand"), r"unknown texture 'sand'.*'grass', 'brick', 'gravel'"),
        (dict(size=1024), "size must be an integer between 32 and 512"),
        (dict(n_train=0), "n_train must be an integer >= 1"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(BGADError, match=message):
        make_texture_dataset(tmp_path, **{**SMALL, **kwargs})
    assert list(tmp_path.iterdir()) == []
