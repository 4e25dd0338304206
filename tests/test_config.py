"""Tests for bgad_lite.BGADConfig: frozen, JSON round trip, unknown keys, validation, dataclasses.replace."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bgad_lite import BGADConfig, BGADError


def test_frozen():
    cfg = BGADConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.beta = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seen_types = ("hole",)  # type: ignore[misc]
    assert cfg.beta == 0.01


def test_defaults_follow_method():
    cfg = BGADConfig()
    assert (cfg.beta, cfg.tau, cfg.normalizer, cfg.bgspp_lambda) == (0.01, 0.1, 10.0, 1.0)
    assert cfg.boundary in ("fixed", "per_batch")
    assert cfg.backbone == "tf_efficientnet_lite0"
    hash(cfg)  # hashable: tuples, not lists


def test_the_config_holds_only_the_knobs_that_matter():
    """≤ 25 settings; fixed design choices are constants beside the code that uses them."""
    from bgad_lite.features import LEVELS
    from bgad_lite.flow import CLAMP
    from bgad_lite.prepare import ANOMALY_REPEATS
    from bgad_lite.scoring import SCORE_TOP
    from bgad_lite.train import BATCH_IMAGES, FIBER_CHUNK

    assert len(dataclasses.fields(BGADConfig)) <= 25
    assert (LEVELS, CLAMP, ANOMALY_REPEATS, SCORE_TOP, BATCH_IMAGES, FIBER_CHUNK) == ((1, 2, 3), 1.9, 2, 0.01, 32, 4096)


def test_json_round_trip_preserves_tuples():
    cfg = BGADConfig(seen_types=("crack", "hole"), beta=0.05, tau=0.2, boundary="fixed", image_size=256, cond_dim=32, data_dir="/x/y")
    text = cfg.to_json()
    assert isinstance(json.loads(text), dict)
    back = BGADConfig.from_json(text)
    assert back == cfg
    assert isinstance(back.seen_types, tuple) and back.seen_types == ("crack", "hole")
    # default config too (seen_types None)
    assert BGADConfig.from_json(BGADConfig().to_json()) == BGADConfig()


def test_from_json_of_a_file_path(tmp_path):
    cfg = BGADConfig(n_blocks=2, cond_dim=8, seed=7, seen_types=("pit",))
    p = tmp_path / "sub dir" / "config.json"
    p.parent.mkdir()
    cfg.to_json(p)
    assert BGADConfig.from_json(p) == cfg
    assert BGADConfig.from_json(str(p)) == cfg


def test_unknown_keys_raise_naming_them():
    data = BGADConfig().to_dict()
    data["lerning_rate"] = 0.1
    data["zzz_extra"] = 1
    with pytest.raises(BGADError) as e:
        BGADConfig.from_dict(data)
    assert "lerning_rate" in str(e.value) and "zzz_extra" in str(e.value)
    with pytest.raises(BGADError, match="bogus"):
        BGADConfig.from_json('{"bogus": 1}')


@pytest.mark.parametrize("kwargs, field", [
    (dict(beta=0.0), "beta"),
    (dict(beta=1.0), "beta"),
    (dict(beta=-0.1), "beta"),
    (dict(beta=1.5), "beta"),
    (dict(tau=0.0), "tau"),
    (dict(tau=-1.0), "tau"),
    (dict(lr=0.0), "lr"),
    (dict(lr_phase2=-1e-3), "lr_phase2"),
    (dict(align_positions="yes"), "align_positions"),
    (dict(boundary="adaptive"), "boundary"),
    (dict(boundary="Fixed"), "boundary"),
    (dict(image_size=120), "image_size"),
    (dict(image_size=100), "image_size"),
    (dict(image_size=16), "image_size"),
    (dict(cond_dim=62), "cond_dim"),
    (dict(cond_dim=6), "cond_dim"),
    (dict(n_blocks=0), "n_blocks"),
])
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(BGADError) as e:
        BGADConfig(**kwargs)
    assert field in str(e.value)


def test_valid_edge_values_are_accepted():
    BGADConfig(beta=1e-6, tau=1e-9, image_size=32, cond_dim=4, boundary="fixed", epochs_phase2=0, n_cutpaste=0)
    assert BGADConfig(image_size=48, cond_dim=132, seen_types=["pit"]).seen_types == ("pit",)  # a list becomes a tuple


def test_validation_from_json_too():
    data = BGADConfig().to_dict()
    data["beta"] = 2.0
    with pytest.raises(BGADError, match="beta"):
        BGADConfig.from_json(json.dumps(data))


def test_replace_works_and_revalidates():
    cfg = BGADConfig()
    new = dataclasses.replace(cfg, n_blocks=2, beta=0.05)
    assert new.n_blocks == 2 and new.beta == 0.05 and cfg.n_blocks == 4
    assert new != cfg
    assert new.diff(cfg) == {"n_blocks": (2, 4), "beta": (0.05, 0.01)}
    with pytest.raises(BGADError, match="tau"):
        dataclasses.replace(cfg, tau=0.0)
    with pytest.raises(BGADError, match="image_size"):
        dataclasses.replace(cfg, image_size=130)


def test_presets_and_their_errors():
    from bgad_lite.cli import _parser, config_from_args
    from bgad_lite.config import PRESETS, with_preset

    paper = with_preset(BGADConfig(), "paper")
    assert (paper.backbone, paper.image_size, paper.n_blocks, paper.cond_dim, paper.lr) == \
        ("tf_efficientnet_b6", 256, 8, 128, 2e-4)
    assert (paper.epochs_phase1, paper.epochs_phase2) == (8, 24 * 8)  # 25 meta-epochs x 8, the first normal-only
    assert paper.lr_phase2 == 2e-4  # the paper trains both phases at 2e-4
    assert with_preset(BGADConfig(seed=3), "default") == BGADConfig(seed=3)
    with pytest.raises(BGADError, match="unknown preset 'papr'"):
        with_preset(BGADConfig(), "papr")
    # the CLI: a preset first, then the flags on top of it
    cfg = config_from_args(_parser().parse_args(["run", "--preset", "paper", "--image-size", "128"]))
    assert cfg.backbone == "tf_efficientnet_b6" and cfg.image_size == 128
    fast = config_from_args(_parser().parse_args(["run", "--preset", "fast"]))
    assert {k: getattr(fast, k) for k in PRESETS["fast"]} == PRESETS["fast"]
    from bgad_lite.course import setup
    assert setup.make_config(preset="paper").n_blocks == 8
    with pytest.raises(BGADError, match="unknown preset"):
        setup.make_config(preset="nope")


def test_a_malformed_config_file_is_a_clear_error(tmp_path, capsys):
    from bgad_lite.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "beta": 0.01,\n  "tau": 0.1,,\n}\n')
    with pytest.raises(BGADError, match=r"bad\.json is not valid JSON: Expecting property name .* line 3, column 14"):
        BGADConfig.from_json(bad)
    with pytest.raises(BGADError, match="cannot read the config file"):
        BGADConfig.from_json(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(BGADError, match="JSON object"):
        BGADConfig.from_json(tmp_path / "list.json")
    assert main(["run", "--config", str(bad), "--quiet", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgad-lite: error:") and "line 3, column 14" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written
