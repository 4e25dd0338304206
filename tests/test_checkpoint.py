"""Tests for bgad_lite.checkpoint: round trip, config mismatch, missing files, atomic writes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import bgad_lite.checkpoint as ckpt
from bgad_lite import BGADConfig, BGADError
from bgad_lite.checkpoint import load_checkpoint, save_checkpoint
from bgad_lite.train import make_flows

CHANNELS = [8, 12]


@pytest.fixture
def cfg() -> BGADConfig:
    return BGADConfig(n_blocks=2, cond_dim=8)


def _trained_like(cfg: BGADConfig, seed: int = 11):
    """make_flows, then every trainable parameter moved, so that loading must really restore the weights
    (a freshly built model would equal another freshly built one without any loading)."""
    flows = make_flows(CHANNELS, cfg.cond_dim, cfg.n_blocks, cfg.seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in flows.named_parameters():
            if "perm" not in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return flows.eval()


def _inputs():
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(10, c, generator=g), torch.randn(10, 8, generator=g)) for c in CHANNELS]


def _outputs(flows):
    with torch.no_grad():
        return [f(x, c=[c]) for f, (x, c) in zip(flows, _inputs())]


def test_round_trip_gives_identical_outputs(tmp_path, cfg):
    flows = _trained_like(cfg)
    path = save_checkpoint(tmp_path / "ck", flows, cfg, CHANNELS, [1.5, -0.25],
                           boundaries=[(torch.tensor(-0.2), torch.tensor(-0.3)), (0.1, 0.0)])
    assert (path / "model.pt").is_file() and (path / "config.json").is_file()
    loaded, saved_cfg, payload = load_checkpoint(path)
    assert saved_cfg == cfg
    assert payload["channels"] == CHANNELS
    assert payload["level_ref"] == [1.5, -0.25]
    assert [pair for pair in payload["boundaries"]] == [pytest.approx([-0.2, -0.3]), pytest.approx([0.1, 0.0])]
    fresh = make_flows(CHANNELS, cfg.cond_dim, cfg.n_blocks, cfg.seed)
    for (z0, j0), (z1, j1), (zf, _) in zip(_outputs(flows), _outputs(loaded), _outputs(fresh.eval())):
        assert torch.equal(z0, z1) and torch.equal(j0, j1)
        assert not torch.allclose(z0, zf)  # the weights really came from the file
    assert not any(m.training for m in loaded.modules())
    # loading with an equal config, or one that differs only in non-model settings, is fine
    load_checkpoint(path, cfg)
    load_checkpoint(path, dataclasses.replace(cfg, lr=5e-4, epochs_phase2=3, out_dir="elsewhere"))


@pytest.mark.parametrize("change, keys", [
    (dict(n_blocks=3), ["n_blocks"]),
    (dict(backbone="resnet18"), ["backbone"]),
    (dict(n_blocks=4, backbone="wide_resnet50_2"), ["n_blocks", "backbone"]),
    (dict(cond_dim=16), ["cond_dim"]),
])
def test_load_with_differing_config_names_the_keys(tmp_path, cfg, change, keys):
    save_checkpoint(tmp_path / "ck", _trained_like(cfg), cfg, CHANNELS, [0.0, 0.0])
    with pytest.raises(BGADError) as e:
        load_checkpoint(tmp_path / "ck", dataclasses.replace(cfg, **change))
    for k in keys:
        assert k in str(e.value)


def test_the_seed_matters_only_for_a_random_backbone(tmp_path, cfg):
    """Random backbone weights are drawn under the seed, so flows trained on them do not fit
    another seed's features; pretrained features do not depend on the seed."""
    save_checkpoint(tmp_path / "pre", _trained_like(cfg), cfg, CHANNELS, [0.0, 0.0])
    load_checkpoint(tmp_path / "pre", dataclasses.replace(cfg, seed=3))
    rnd = dataclasses.replace(cfg, pretrained=False)
    save_checkpoint(tmp_path / "rnd", _trained_like(rnd), rnd, CHANNELS, [0.0, 0.0])
    load_checkpoint(tmp_path / "rnd", rnd)
    with pytest.raises(BGADError, match="seed: saved 0 vs asked 3"):
        load_checkpoint(tmp_path / "rnd", dataclasses.replace(rnd, seed=3))


def test_folder_without_model_pt_raises(tmp_path, cfg):
    with pytest.raises(BGADError):
        load_checkpoint(tmp_path / "does_not_exist")
    d = tmp_path / "half"
    d.mkdir()
    cfg.to_json(d / "config.json")
    with pytest.raises(BGADError):
        load_checkpoint(d)


def test_failed_save_leaves_nothing_and_keeps_old_checkpoint(tmp_path, cfg, monkeypatch):
    parent = tmp_path / "runs"
    target = parent / "ck"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    # 1) no checkpoint before: a failed save leaves no folder and no temp dir
    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, _trained_like(cfg), cfg, CHANNELS, [0.0, 0.0])
    assert not target.exists()
    assert list(parent.iterdir()) == []
    monkeypatch.undo()

    # 2) an older checkpoint at that path survives a failed save intact
    old = _trained_like(cfg, seed=1)
    save_checkpoint(target, old, cfg, CHANNELS, [1.0, 2.0])
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(target, _trained_like(cfg, seed=2), dataclasses.replace(cfg, seed=3), CHANNELS, [9.0, 9.0])
    monkeypatch.undo()
    assert sorted(p.name for p in parent.iterdir()) == ["ck"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    loaded, saved_cfg, payload = load_checkpoint(target)
    assert saved_cfg == cfg and payload["level_ref"] == [1.0, 2.0]
    for (z0, _), (z1, _) in zip(_outputs(old), _outputs(loaded)):
        assert torch.equal(z0, z1)


def test_save_overwrites_an_existing_checkpoint(tmp_path, cfg):
    target = tmp_path / "ck"
    save_checkpoint(target, _trained_like(cfg, seed=1), cfg, CHANNELS, [1.0, 2.0])
    new = _trained_like(cfg, seed=2)
    save_checkpoint(target, new, cfg, CHANNELS, [3.0, 4.0])
    loaded, _, payload = load_checkpoint(target)
    assert payload["level_ref"] == [3.0, 4.0]
    for (z0, _), (z1, _) in zip(_outputs(new), _outputs(loaded)):
        assert torch.equal(z0, z1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_standardisation_statistics_are_saved(tmp_path, cfg):
    from bgad_lite.train import set_input_statistics

    flows = _trained_like(cfg)
    feats = [torch.randn(3, c, 2, 2) * 4 + 1 for c in CHANNELS]
    set_input_statistics(flows, feats)
    path = save_checkpoint(tmp_path / "ck", flows, cfg, CHANNELS, [0.0, 0.0])
    loaded, _, _ = load_checkpoint(path)
    for a, b in zip(flows, loaded):
        assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std) and not torch.all(b.std == 1)
    for (z0, j0), (z1, j1) in zip(_outputs(flows), _outputs(loaded)):
        assert torch.equal(z0, z1) and torch.equal(j0, j1)
