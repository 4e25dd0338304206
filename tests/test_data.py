"""Tests of bgad_lite.data.layout, images, fewshot and download: layout checks, pixel loading, few-shot splits, download (offline)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgad_lite.data import download
from bgad_lite.config import BGADError
from bgad_lite.data.layout import Category, Sample, load_category, with_groups
from bgad_lite.data.download import download_mvtec
from bgad_lite.data.fewshot import few_shot_split
from bgad_lite.data.images import input_shape, load_image, load_mask, load_split, shape_for_aspect
from bgad_lite.data.defects import DEFECT_TYPES
from bgad_lite.data.textures import make_texture_dataset

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rgb(h: int = 16, w: int = 16, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def _mask(h: int = 16, w: int = 16) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[4:8, 4:8] = 255
    return m


def make_layout(root: Path, name: str = "widget", types: dict[str, int] | None = None, n_train: int = 2, n_good: int = 2) -> Path:
    """A tiny hand-made MVTec-layout category with 16x16 images."""
    types = {"crack": 2, "dent": 2} if types is None else types
    cat = root / name
    for i in range(n_train):
        _png(cat / "train" / "good" / f"{i:03d}.png", _rgb())
    for i in range(n_good):
        _png(cat / "test" / "good" / f"{i:03d}.png", _rgb())
    for t, n in types.items():
        for i in range(n):
            _png(cat / "test" / t / f"{i:03d}.png", _rgb(value=200))
            _png(cat / "ground_truth" / t / f"{i:03d}_mask.png", _mask())
    return cat


@pytest.fixture(scope="module")
def texture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tex")
    make_texture_dataset(root, "grass", seed=0, n_train=6, n_test_good=3, n_per_type=3, size=64)
    return root


def fake_category(types: dict[str, int], n_good: int = 3) -> Category:
    """A Category of made-up paths (nothing on disk): enough for few_shot_split."""
    root = Path("/nowhere/cat")
    test = [Sample(root / "test" / "good" / f"{i:03d}.png", "good", None) for i in range(n_good)]
    for t, n in types.items():
        for i in range(n):
            test.append(Sample(root / "test" / t / f"{i:03d}.png", t, root / "ground_truth" / t / f"{i:03d}_mask.png"))
    test.sort(key=lambda s: (s.defect_type, s.path.name))
    train = (Sample(root / "train" / "good" / "000.png", "good", None),)
    return Category(root=root, name="cat", train=train, test=tuple(test))


# ---------------------------------------------------------------------------
# load_category
# ---------------------------------------------------------------------------


def test_load_category_on_generated_set(texture_root: Path) -> None:
    cat = load_category(texture_root, "grass")
    assert cat.name == "grass" and cat.root == texture_root / "grass"
    assert len(cat.train) == 6 and all(not s.is_anomaly and s.mask_path is None for s in cat.train)
    assert cat.defect_types == tuple(sorted(DEFECT_TYPES))
    counts = Counter(s.defect_type for s in cat.test)
    assert counts == {"good": 3, **{t: 3 for t in DEFECT_TYPES}}
    assert list(cat.test) == sorted(cat.test, key=lambda s: (s.defect_type, s.path.name))
    for s in cat.test:
        assert s.is_anomaly == (s.defect_type != "good")
        if s.is_anomaly:
            assert s.mask_path is not None and s.mask_path.name == s.path.stem + "_mask.png"


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(BGADError, match="does not exist"):
        load_category(tmp_path / "nope", "widget")


def test_missing_category_lists_existing(tmp_path: Path) -> None:
    make_layout(tmp_path, "widget")
    make_layout(tmp_path, "gadget")
    with pytest.raises(BGADError, match=r"'bottle' not found.*'gadget', 'widget'"):
        load_category(tmp_path, "bottle")


def test_root_that_is_a_category_gets_a_hint(tmp_path: Path) -> None:
    cat = make_layout(tmp_path, "widget")
    with pytest.raises(BGADError, match="looks like a category folder"):
        load_category(cat, "widget")


def test_missing_train_good(tmp_path: Path) -> None:
    cat = make_layout(tmp_path)
    for p in (cat / "train" / "good").iterdir():
        p.unlink()
    (cat / "train" / "good").rmdir()
    with pytest.raises(BGADError, match=r"not in MVTec AD layout.*train/good"):
        load_category(tmp_path, "widget")


def test_missing_test(tmp_path: Path) -> None:
    cat = tmp_path / "widget"
    _png(cat / "train" / "good" / "000.png", _rgb())
    with pytest.raises(BGADError, match=r"not in MVTec AD layout.*test/ is missing"):
        load_category(tmp_path, "widget")


def test_no_training_images(tmp_path: Path) -> None:
    cat = make_layout(tmp_path, n_train=0)
    (cat / "train" / "good").mkdir(parents=True)
    (cat / "train" / "good" / "notes.txt").write_text("not an image")
    with pytest.raises(BGADError, match="no training images"):
        load_category(tmp_path, "widget")


def test_defect_image_without_mask(tmp_path: Path) -> None:
    cat = make_layout(tmp_path)
    (cat / "ground_truth" / "dent" / "001_mask.png").unlink()
    expected = cat / "ground_truth" / "dent" / "001_mask.png"
    with pytest.raises(BGADError, match="has no mask") as info:
        load_category(tmp_path, "widget")
    assert str(cat / "test" / "dent" / "001.png") in str(info.value)
    assert str(expected) in str(info.value)


def test_btad_style_mask_names(tmp_path: Path) -> None:
    cat = make_layout(tmp_path, types={"ko": 1})
    (cat / "ground_truth" / "ko" / "000_mask.png").rename(cat / "ground_truth" / "ko" / "000.png")
    loaded = load_category(tmp_path, "widget")
    (anomaly,) = [s for s in loaded.test if s.is_anomaly]
    assert anomaly.mask_path == cat / "ground_truth" / "ko" / "000.png"


def test_test_folder_without_defect_types(tmp_path: Path) -> None:
    make_layout(tmp_path, types={})
    with pytest.raises(BGADError, match="holds no defect types"):
        load_category(tmp_path, "widget")


# ---------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8),  # RGB
        np.random.default_rng(1).integers(0, 256, (20, 30), dtype=np.uint8),  # L
        np.random.default_rng(2).integers(0, 256, (20, 30, 4), dtype=np.uint8),  # RGBA
        np.random.default_rng(3).integers(0, 65536, (20, 30), dtype=np.uint16),  # I;16
    ],
    ids=["rgb", "grey", "rgba", "grey16"],
)
def test_load_image_modes(tmp_path: Path, array: np.ndarray) -> None:
    path = _png(tmp_path / "x.png", array)
    image = load_image(path, 24)
    assert image.shape == (24, 24, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.max() > 0.5  # not squashed to black (e.g. 16-bit read as 8-bit)


def test_load_image_values(tmp_path: Path) -> None:
    grey16 = np.full((8, 8), 65535, dtype=np.uint16)
    assert np.allclose(load_image(_png(tmp_path / "a.png", grey16), 8), 1.0)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white but fully transparent -> black
    assert np.allclose(load_image(_png(tmp_path / "b.png", rgba), 8), 0.0)
    grey = np.full((8, 8), 51, dtype=np.uint8)
    image = load_image(_png(tmp_path / "c.png", grey), 8)
    assert np.allclose(image, 0.2, atol=1e-6)
    bilevel = Image.fromarray(np.eye(8, dtype=bool))
    bilevel.save(tmp_path / "d.png")
    assert load_image(tmp_path / "d.png", 8).shape == (8, 8, 3)


def test_unreadable_image(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(BGADError, match=r"could not read image .*broken\.png.*delete or replace it"):
        load_image(bad, 8)


def test_truncated_image(tmp_path: Path) -> None:
    path = _png(tmp_path / "t.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BGADError, match="could not read image"):
        load_image(path, 8)


def test_load_mask_binary_and_size_check(tmp_path: Path) -> None:
    path = _png(tmp_path / "m.png", _mask())
    mask = load_mask(path, 8)
    assert mask.dtype == bool and mask.shape == (8, 8) and 0 < mask.sum() < 64
    ones = _png(tmp_path / "m01.png", (_mask() > 0).astype(np.uint8))  # a 0/1 mask
    assert load_mask(ones, 8).sum() == mask.sum()
    with pytest.raises(BGADError, match=r"16x16 \(HxW\) but its image is 20x16"):
        load_mask(path, 8, image_size_hw=(20, 16))


def test_load_split(texture_root: Path) -> None:
    cat = load_category(texture_root, "grass")
    images, masks, labels = load_split(cat.test, 32)
    n = len(cat.test)
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.float32
    assert masks.shape == (n, 32, 32) and masks.dtype == bool
    assert labels.dtype == np.int64 and labels.tolist() == [int(s.is_anomaly) for s in cat.test]
    assert not masks[labels == 0].any()
    assert all(m.any() for m in masks[labels == 1])


def test_load_split_mask_of_another_size(tmp_path: Path) -> None:
    cat = make_layout(tmp_path)
    _png(cat / "ground_truth" / "crack" / "000_mask.png", _mask(12, 16))
    samples = load_category(tmp_path, "widget").test
    with pytest.raises(BGADError, match=r"000_mask\.png is 12x16 .* image is 16x16"):
        load_split(samples, 8)


def test_shape_for_aspect_hand_computed() -> None:
    # h = 16·round(S / √a / 16), w = 16·round(S·√a / 16): BSData's 480 x 195 at S = 160:
    # √a = 1.569, 160 / 1.569 = 102.0 -> 96, 160 · 1.569 = 251.0 -> 256
    assert shape_for_aspect(480 / 195, 160) == (96, 256)
    assert shape_for_aspect(480 / 195, 128) == (80, 208)  # 81.6 -> 80, 200.8 -> 208
    assert shape_for_aspect(195 / 480, 160) == (256, 96)  # a tall image: the same, transposed
    assert shape_for_aspect(1.0, 128) == (128, 128)  # a square data set keeps the paper's square
    assert shape_for_aspect(1.02, 128) == (128, 128)  # nearly square rounds to the square
    assert shape_for_aspect(100.0, 64) == (32, 640)  # never below 32 px: 64 / 10 = 6.4 -> 32
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(BGADError, match="aspect ratio"):
            shape_for_aspect(bad, 128)


def test_input_shape_takes_the_median_aspect_of_the_images(tmp_path: Path) -> None:
    samples = []
    for i, (h, w) in enumerate([(20, 48), (20, 50), (10, 80)]):  # aspects 2.4, 2.5, 8: the median is 2.5
        samples.append(Sample(_png(tmp_path / f"{i}.png", _rgb(h, w)), "good", None))
    # 2.5: √a = 1.581, 64 / 1.581 = 40.5 -> 48, 64 · 1.581 = 101.2 -> 96
    assert input_shape(samples, 64) == shape_for_aspect(2.5, 64) == (48, 96)
    assert input_shape(samples, 64, keep_aspect=False) == (64, 64)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(BGADError, match=r"could not read image .*bad\.png"):
        input_shape(samples + [Sample(tmp_path / "bad.png", "good", None)], 64)


def test_load_split_to_a_non_square_shape_keeps_the_mask_in_place(tmp_path: Path) -> None:
    cat = tmp_path / "wide"
    image = np.zeros((20, 40, 3), np.uint8)
    image[:10, :20] = 255  # the top-left quarter is white
    _png(cat / "train" / "good" / "000.png", image)
    _png(cat / "test" / "dent" / "000.png", image)
    mask = np.zeros((20, 40), np.uint8)
    mask[:10, :20] = 255  # and is the defect
    _png(cat / "ground_truth" / "dent" / "000_mask.png", mask)
    samples = load_category(tmp_path, "wide").test
    images, masks, _ = load_split(samples, (16, 32))
    assert images.shape == (1, 16, 32, 3) and masks.shape == (1, 16, 32)
    expected = np.zeros((16, 32), bool)
    expected[:8, :16] = True  # nearest neighbour: exactly the top-left quarter
    np.testing.assert_array_equal(masks[0], expected)
    assert images[0, :7, :15].min() == 1.0 and images[0, 9:, 17:].max() == 0.0
    assert load_image(samples[0].path, (16, 32)).shape == (16, 32, 3)
    with pytest.raises(BGADError, match=r"\(height, width\) pair"):
        load_split(samples, (16, 0))


# ---------------------------------------------------------------------------
# few_shot_split
# ---------------------------------------------------------------------------


def test_few_shot_default_seen_types_and_balance() -> None:
    cat = fake_category({"a": 6, "b": 6, "c": 6, "d": 6, "e": 6})
    split = few_shot_split(cat, k=7, seen_types=None, seed=0)
    assert split.seen_types == ("a", "b", "c") and split.unseen_types == ("d", "e")
    counts = Counter(s.defect_type for s in split.labelled)
    assert set(counts) == {"a", "b", "c"} and sorted(counts.values()) == [2, 2, 3]
    assert len(split.labelled) == 7
    assert not set(split.labelled) & set(split.test)
    assert set(split.labelled) | set(split.test) == set(cat.test)


def test_few_shot_balance_when_a_type_runs_out() -> None:
    cat = fake_category({"a": 1, "b": 9, "z": 3})
    split = few_shot_split(cat, k=6, seen_types=("a", "b"), seed=3)
    assert Counter(s.defect_type for s in split.labelled) == {"a": 1, "b": 5}


def test_few_shot_deterministic_and_seed_dependent() -> None:
    cat = fake_category({"a": 10, "b": 10, "c": 10})
    first = few_shot_split(cat, k=4, seen_types=None, seed=5)
    assert first == few_shot_split(cat, k=4, seen_types=None, seed=5)
    others = {few_shot_split(cat, k=4, seen_types=None, seed=s).labelled for s in range(6)}
    assert len(others) > 1


def test_few_shot_k_zero() -> None:
    cat = fake_category({"a": 2, "b": 2})
    split = few_shot_split(cat, k=0, seen_types=None, seed=0)
    assert split.labelled == () and split.test == cat.test


def test_few_shot_single_type() -> None:
    cat = fake_category({"pitting": 5})
    with pytest.raises(BGADError, match=r"only one defect type \('pitting'\).*seen_types=\('pitting',\)"):
        few_shot_split(cat, k=2, seen_types=None, seed=0)
    split = few_shot_split(cat, k=2, seen_types=("pitting",), seed=0)
    assert split.unseen_types == () and len(split.labelled) == 2
    assert sum(s.is_anomaly for s in split.test) == 3
    with pytest.raises(BGADError, match="nothing is left"):
        few_shot_split(cat, k=2, seen_types=("pitting",), seed=0, require_unseen=True)


def test_few_shot_unknown_type_and_string() -> None:
    cat = fake_category({"a": 2, "b": 2})
    with pytest.raises(BGADError, match=r"unknown defect type.*'x'.*valid types are \['a', 'b'\]"):
        few_shot_split(cat, k=1, seen_types=("a", "x"), seed=0)
    with pytest.raises(BGADError, match=r"write seen_types=\('a',\)"):
        few_shot_split(cat, k=1, seen_types="a", seed=0)


def test_few_shot_too_few_anomalies() -> None:
    cat = fake_category({"a": 3, "b": 3, "c": 9})
    with pytest.raises(BGADError, match=r"k=10 .* have only 6 images; lower n_anomalies"):
        few_shot_split(cat, k=10, seen_types=("a", "b"), seed=0)


def test_few_shot_groups_remove_near_duplicates() -> None:
    cat = fake_category({"a": 6, "b": 6, "c": 6})
    # Images i of every type share group "g{i // 2}": pairs of near-duplicates, across types.
    groups = {s.key: f"g{int(s.path.stem) // 2}" for s in cat.test if s.is_anomaly}
    grouped = with_groups(cat, groups)
    split = few_shot_split(grouped, k=3, seen_types=("a", "b"), seed=1)
    assert len(split.labelled) == 3
    assert all(s.defect_type in ("a", "b") for s in split.labelled)
    used = {s.group for s in split.labelled}
    assert not set(split.labelled) & set(split.test)
    for s in split.test:
        if s.defect_type in ("a", "b"):
            assert s.group not in used  # no seen-type near-duplicate leaks into the test set
    # Unseen types are kept whole, whatever their group.
    assert sum(s.defect_type == "c" for s in split.test) == 6
    assert split == few_shot_split(grouped, k=3, seen_types=("a", "b"), seed=1)


def test_few_shot_groups_take_exactly_k() -> None:
    cat = fake_category({"a": 8, "b": 2})
    grouped = with_groups(cat, {s.key: "big" for s in cat.test if s.defect_type == "a"})
    split = few_shot_split(grouped, k=3, seen_types=("a",), seed=0)
    assert len(split.labelled) == 3 and {s.group for s in split.labelled} == {"big"}
    assert not any(s.defect_type == "a" for s in split.test)  # the rest of the group is removed


def test_with_groups_unknown_key() -> None:
    cat = fake_category({"a": 2})
    with pytest.raises(BGADError, match=r"name no test image.*'a/000\.png'"):
        with_groups(cat, {"a/999.png": "g"})


# ---------------------------------------------------------------------------
# download_mvtec (never touches the network)
# ---------------------------------------------------------------------------


class FakeResponse(io.BytesIO):
    """Stands in for the object urllib.request.urlopen returns."""

    def __init__(self, payload: bytes, status: int = 200) -> None:
        super().__init__(payload)
        self.status = status
        self.headers = {"Content-Length": str(len(payload))}


def _tiny_mvtec_archive() -> bytes:
    """A .tar.xz with two categories in the layout of the real archive."""
    buffer = io.BytesIO()
    png = io.BytesIO()
    Image.fromarray(_rgb()).save(png, format="PNG")
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name in ("bottle/train/good/000.png", "bottle/test/good/000.png", "cable/train/good/000.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png.getvalue())
            tar.addfile(info, io.BytesIO(png.getvalue()))
        readme = b"readme"
        info = tarfile.TarInfo("readme.txt")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return buffer.getvalue()


def test_download_unknown_category(tmp_path: Path) -> None:
    with pytest.raises(BGADError, match=r"unknown MVTec AD category 'bottles'.*'zipper'"):
        download_mvtec("bottles", tmp_path)


def test_download_already_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "screw" / "train" / "good").mkdir(parents=True)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network must not be used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert download_mvtec("screw", tmp_path) == tmp_path / "screw"


def test_download_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in the test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(BGADError, match=r"could not reach .*no network in the test.*by hand from https://www\.mvtec\.com"):
        download_mvtec("bottle", tmp_path, timeout=1.0)
    assert not (tmp_path / "bottle").exists()


def test_download_garbage_is_corrupt_and_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(b"garbage"))
    with pytest.raises(BGADError, match="corrupt"):
        download_mvtec("bottle", tmp_path)
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_download_checksum_mismatch_deletes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _tiny_mvtec_archive()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload))
    with pytest.raises(BGADError, match=r"corrupt \(SHA-256 [0-9a-f]{64}, expected 0+\)"):
        download_mvtec("bottle", tmp_path, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_truncated_archive_is_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _tiny_mvtec_archive()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload[: len(payload) // 2]))
    with pytest.raises(BGADError, match="corrupt"):
        download_mvtec("bottle", tmp_path)
    assert not (tmp_path / "bottle").exists() and not (tmp_path / "bottle.tar.xz").exists()


def test_download_resumes_and_extracts_one_category(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _tiny_mvtec_archive()
    (tmp_path / "bottle.tar.xz.part").write_bytes(payload[:100])
    seen = []

    def serve(request: urllib.request.Request, timeout: float) -> FakeResponse:
        seen.append((request.full_url, request.get_header("Range")))
        return FakeResponse(payload[100:], status=206)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    target = download_mvtec("bottle", tmp_path, sha256=hashlib.sha256(payload).hexdigest())
    assert seen == [(download.MVTEC_URLS["bottle"], "bytes=100-")]
    assert download.MVTEC_URLS["bottle"].endswith("/bottle.tar.xz")
    assert target == tmp_path / "bottle"
    assert (target / "train" / "good" / "000.png").is_file()
    assert not (tmp_path / "cable").exists()  # only the requested category
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bottle"]  # archive removed after extraction


def test_download_restarts_when_the_server_ignores_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = _tiny_mvtec_archive()
    (tmp_path / "cable.tar.xz.part").write_bytes(b"stale bytes")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload, status=200))
    assert (download_mvtec("cable", tmp_path) / "train" / "good" / "000.png").is_file()
