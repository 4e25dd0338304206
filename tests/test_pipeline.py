"""End to end: a tiny `run` and the `bgad-lite` command on a small generated data set."""

import json

import numpy as np
import pytest
import torch

from bgad_lite import BGADConfig, BGADError, pipeline
from bgad_lite.config import PRESETS
from bgad_lite.checkpoint import load_checkpoint
from bgad_lite.gaussian import GaussianModel
from bgad_lite.cli import main
from bgad_lite.data.defects import DEFECT_TYPES
from bgad_lite.data.textures import make_texture_dataset
from bgad_lite.flow import fiber_labels, make_levels
from bgad_lite.prepare import ANOMALY_REPEATS
from bgad_lite.train import epoch_chunks, make_flows, train_flows


def tiny_config(root, tmp_path, **kw):
    base = dict(data_dir=str(root), category="brick", image_size=64, n_anomalies=2, n_cutpaste=2,
                epochs_phase1=2, epochs_phase2=1, n_blocks=2, cond_dim=16,
                cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "out"))
    base.update(kw)
    return BGADConfig(**base)


@pytest.mark.slow
def test_tiny_run_writes_results_checkpoints_and_figures(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root, tmp_path)
    summary = pipeline.run(cfg, progress=False)
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"] == cfg.to_dict()
    data = saved["data"]
    assert sorted(data["seen_types"] + data["unseen_types"]) == sorted(DEFECT_TYPES)
    assert not set(data["seen_types"]) & set(data["unseen_types"])
    assert data["n_train_normal"] == 6 and data["n_held_out_normal"] == 2  # 8 normals, 20 % held out
    assert data["n_train_anomalies"] == 2
    assert data["n_test"] == 4 + 3 * len(DEFECT_TYPES) - 2  # the labelled anomalies leave the test set
    assert set(saved["results"]) == {"gaussian", "unsupervised", "bgad", "naive_push"}
    for res in saved["results"].values():
        assert set(res) == {"all", "seen", "unseen", "per_type", "per_level", "likelihood_sum", "operating_point"}
        op = res["operating_point"]
        assert op["n_normals"] == 2 and op["from"] == "held-out normals" and op["n_normal"] == 4
        assert op["false_alarms"] == op["flagged_normal"] / 4
        assert len(res["per_level"]) == 3 and all(set(lv) == {"all", "seen", "unseen"} for lv in res["per_level"])
        assert set(res["likelihood_sum"]) == {"all", "seen", "unseen"}
        assert set(res["per_type"]) == set(DEFECT_TYPES)  # every type keeps test images
    assert set(saved["timings_s"]) >= {"data", "features", "phase1", "fit_gaussian", "phase2", "total"}
    diag = saved["diagnostics"]
    assert len(diag["label_counts"]) == 3 and set(diag["rates"]) == {"phase1", "unsupervised", "bgad", "naive_push"}
    for rates in diag["rates"].values():
        for row in rates:
            assert row["b_a"] == pytest.approx(row["b_n"] - cfg.tau)
    assert (out / "figures" / "phase2_diagnostics.png").stat().st_size > 1000
    assert summary["results"] == saved["results"]
    assert (out / "figures" / "anomaly_maps.png").stat().st_size > 1000
    assert (out / "figures" / "logp_histograms.png").stat().st_size > 1000
    flows, saved_cfg, payload = load_checkpoint(out / "checkpoints" / "bgad", cfg)
    assert saved_cfg == cfg and len(flows) == 3 and len(payload["level_ref"]) == 3
    assert not (out / "checkpoints" / "gaussian").exists()  # nothing trained, nothing saved
    # The saved numbers are those of the saved models: re-scoring the checkpoint and refitting
    # the Gaussian on the same data gives results.json's metrics again, and they match
    # the metrics recomputed from the scores by hand-checked functions.
    prep = pipeline.prepare(cfg, progress=False)
    ev = pipeline.evaluate(flows, prep)
    assert ev["metrics"] == saved["results"]["bgad"]
    for a, b in zip(payload["level_ref"], ev["level_ref"]):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-6)
    gauss = pipeline.evaluate(GaussianModel.fit(prep.train_features), prep)
    assert gauss["metrics"] == saved["results"]["gaussian"]
    from sklearn.metrics import roc_auc_score

    assert saved["results"]["bgad"]["all"]["image_auroc"] == pytest.approx(roc_auc_score(prep.test_labels, ev["scores"]))
    seen = (prep.test_types == "good") | np.isin(prep.test_types, prep.split.seen_types)
    assert saved["results"]["bgad"]["seen"]["image_auroc"] == pytest.approx(
        roc_auc_score(prep.test_labels[seen], ev["scores"][seen]))


@pytest.mark.slow
def test_run_is_reproducible_and_reuses_the_phase1_cache(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root, tmp_path)
    first = pipeline.run(cfg, progress=False, variants=("bgad",))
    second = pipeline.run(cfg, progress=False, variants=("bgad",))
    assert set(first["results"]) == {"bgad"} and first["variants"] == ["bgad"]
    assert not first["phase1_from_cache"] and second["phase1_from_cache"]
    assert first["results"] == second["results"]


@pytest.mark.slow
def test_cli_run_prints_the_table(tiny_root, tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tiny_root, tmp_path)
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    assert main(["run", "--config", str(path), "--seed", "1", "--quiet", "--variants", "unsupervised, bgad"]) == 0
    out = capsys.readouterr().out
    assert "| bgad | unseen |" in out and "results.json" in out
    assert "| variant | level 0 alone | level 1 alone | level 2 alone | all levels | paper's likelihood sum |" in out
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    levels = ", ".join(str(j) for j, on in enumerate(summary["data"]["aligned_levels"]) if on) or "none"
    assert "positions aligned (--align-positions auto): alpha per level" in out and f"levels aligned: {levels}" in out
    assert summary["config"]["seed"] == 1 and set(summary["results"]) == {"unsupervised", "bgad"}


@pytest.fixture(scope="module")
def wide_root(tiny_root, tmp_path_factory):
    """The tiny brick set stretched to 64 x 128 (height x width): every image and mask twice as wide."""
    from PIL import Image

    root = tmp_path_factory.mktemp("wide")
    for src in (tiny_root / "brick").rglob("*.png"):
        dst = root / "brick" / src.relative_to(tiny_root / "brick")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as img:
            resample = Image.Resampling.NEAREST if "ground_truth" in src.parts else Image.Resampling.BILINEAR
            img.resize((2 * img.width, img.height), resample).save(dst)
    return root


@pytest.mark.slow
def test_non_square_images_keep_their_aspect_ratio(wide_root, tmp_path, capsys):
    # aspect 2 at image_size 64: √2 = 1.414, 64 / 1.414 = 45.3 -> 48, 64 · 1.414 = 90.5 -> 96
    cfg = tiny_config(wide_root, tmp_path)
    prep = pipeline.prepare(cfg, progress=False)
    assert prep.image_hw == (48, 96) and prep.test_masks.shape[1:] == (48, 96)
    assert [tuple(f.shape[2:]) for f in prep.train_features] == [(12, 24), (6, 12), (3, 6)]  # strides 4, 8, 16
    assert prep.anomaly_masks.shape[1:] == (48, 96) and prep.test_masks.any()
    ev = pipeline.evaluate(GaussianModel.fit(prep.raw_features("train")), prep)
    assert ev["maps"].shape == (len(prep.test_images), 48, 96)
    cfg.to_json(tmp_path / "cfg.json")
    assert main(["run", "--config", str(tmp_path / "cfg.json"), "--quiet", "--variants", "bgad"]) == 0
    out = capsys.readouterr().out
    assert "images resized to 48 x 96 (height x width)" in out
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["data"]["image_hw"] == [48, 96]
    flows, saved, _ = load_checkpoint(tmp_path / "out" / "checkpoints" / "bgad", cfg)
    assert saved == cfg and len(flows) == 3


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["run", "--data", str(tmp_path / "nowhere"), "--category", "x", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgad-lite: error:") and "nowhere" in err and "Traceback" not in err


def test_cli_says_when_a_gpu_sits_unused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["run", "--data", str(tmp_path / "nowhere"), "--category", "x", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "torch sees a CUDA GPU" in err and "--device cuda" in err and "nowhere" in err
    main(["run", "--data", str(tmp_path / "nowhere"), "--category", "x", "--quiet", "--device", "cpu"])
    assert "CUDA GPU" not in capsys.readouterr().err  # asked for the CPU: no note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main(["run", "--data", str(tmp_path / "nowhere"), "--category", "x", "--quiet"])
    assert "CUDA GPU" not in capsys.readouterr().err


def test_single_type_category_needs_explicit_seen_types(tmp_path):
    root = tmp_path / "d"
    make_texture_dataset(root, "gravel", seed=0, n_train=4, n_test_good=2, n_per_type=2, size=64)
    for t in DEFECT_TYPES[1:]:  # keep one defect type only
        for sub in ("test", "ground_truth"):
            for f in (root / "gravel" / sub / t).iterdir():
                f.unlink()
            (root / "gravel" / sub / t).rmdir()
    cfg = tiny_config(root, tmp_path, category="gravel", n_anomalies=1)
    with pytest.raises(BGADError, match="unseen"):
        pipeline.prepare(cfg, progress=False)
    prep = pipeline.prepare(BGADConfig(**{**cfg.to_dict(), "seen_types": [DEFECT_TYPES[0]]}), progress=False)
    assert prep.split.unseen_types == ()


def test_non_finite_loss_stops_with_the_step_and_values():
    feats = torch.randn(2, 4, 4, 4)
    feats[1, :, 2, 2] = float("nan")
    levels = make_levels([feats], [torch.zeros(2, 4, 4, dtype=torch.bool)], 8)
    flows = make_flows([4], cond_dim=8, n_blocks=1, seed=0)
    before = [p.detach().clone() for p in flows.parameters()]
    with pytest.raises(BGADError, match=r"non-finite at epoch 1, level 0, step 0.*'ml': nan"):
        train_flows(flows, levels, "ml", epochs=1, lr=1e-3, batch_images=2, fiber_chunk=64, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, flows.parameters()))  # nothing was stepped


def test_train_normalisation_scores_an_image_alone_as_in_the_test_set(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root, tmp_path)
    prep = pipeline.prepare(cfg, progress=False)
    flows, _ = pipeline.fit_phase1(prep, progress=False)
    from bgad_lite.scoring import anomaly_maps, level_logps, likelihood_maps

    ev_train = pipeline.evaluate(flows, prep)
    test_maps = likelihood_maps(ev_train["test_logps"], prep.image_hw, None)  # the paper's code: test-set maxima
    assert ev_train["maps"].shape == (len(prep.test_images), 64, 64)
    assert np.isfinite(ev_train["maps"]).all() and np.isfinite(test_maps).all()
    # One image scored alone gets the same map as inside the test set ("train" mode only).
    one = pipeline.Prepared(**{**prep.__dict__, "test_features": [f[:1] for f in prep.test_features],
                               "test_images": prep.test_images[:1], "test_masks": prep.test_masks[:1],
                               "test_labels": prep.test_labels[:1], "test_types": prep.test_types[:1]})
    pos = [lv.pos for lv in prep.phase1_levels(cfg.cond_dim)]
    one_logps = level_logps(flows, one.test_features, pos)
    alone = anomaly_maps(one_logps, 64, ev_train["level_ref"])
    np.testing.assert_allclose(alone[0], ev_train["maps"][0], rtol=1e-5, atol=1e-6)
    # The paper's test-set normalisation cannot: alone, an image is its own maximum, so its map
    # starts at 0 wherever it peaks, whatever the rest of the test set looks like.
    alone_test = likelihood_maps(one_logps, 64, None)
    assert alone_test[0].min() == 0.0
    assert not np.allclose(alone_test[0], test_maps[0], atol=1e-3)


def test_cli_flags_map_onto_the_config():
    from bgad_lite.cli import _parser, config_from_args

    args = _parser().parse_args(["run", "--seen-types", "hole, scratch", "--n-anomalies", "4", "--image-size", "96",
                                 "--preset", "fast"])
    cfg = config_from_args(args)
    assert cfg.seen_types == ("hole", "scratch") and cfg.n_anomalies == 4 and cfg.image_size == 96  # flags win
    assert (cfg.epochs_phase1, cfg.epochs_phase2) == (PRESETS["fast"]["epochs_phase1"], PRESETS["fast"]["epochs_phase2"])
    assert config_from_args(_parser().parse_args(["run"])) == BGADConfig()
    assert BGADConfig().align_positions == "auto"
    assert config_from_args(_parser().parse_args(["run", "--align-positions", "on"])).align_positions == "on"
    with pytest.raises(SystemExit):  # argparse names the choices
        _parser().parse_args(["run", "--align-positions", "yes"])
    with pytest.raises(SystemExit):  # one flag for a smoke run: --preset fast
        _parser().parse_args(["run", "--fast"])


def test_parallel_variants_equal_sequential_ones(tiny_root, tmp_path):
    """Phase 2 depends on the seed alone, not on the number of processes: three variants trained
    in one process one after another equal those of two processes, which train the nine (variant,
    level) jobs, each level replaying the shuffles and schedule of all (imap_unordered hands a
    worker whichever job comes next)."""
    cfg = tiny_config(tiny_root, tmp_path)
    prep = pipeline.prepare(cfg, progress=False)
    phase1, _ = pipeline.fit_phase1(prep, progress=False)
    variants = ["unsupervised", "bgad", "naive_push"]
    seq = pipeline.fit_variants(prep, phase1, variants, progress=False, workers=1)
    par = pipeline.fit_variants(prep, phase1, variants, progress=False, workers=2)
    assert list(par) == variants
    for v in seq:
        a, b = seq[v][0].state_dict(), par[v][0].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), v
        assert seq[v][1] == par[v][1]
        assert pipeline.evaluate(seq[v][0], prep)["metrics"] == pipeline.evaluate(par[v][0], prep)["metrics"]
    # phase 2 moved the weights away from phase 1, differently per variant
    p1 = phase1.state_dict()
    moved = [k for k in p1 if not torch.equal(p1[k], seq["bgad"][0].state_dict()[k])]
    assert moved and not torch.equal(seq["bgad"][0].state_dict()[moved[0]], seq["naive_push"][0].state_dict()[moved[0]])


def test_phase1_levels_in_parallel_processes_equal_one_process(tiny_root, tmp_path):
    """Phase 1's levels train in separate processes, each replaying the shuffles and the learning-rate
    schedule of all levels: the same flows and training curve as in one process, for 2 and 3 workers."""
    cfg = tiny_config(tiny_root, tmp_path, epochs_phase1=3)
    prep = pipeline.prepare(cfg, progress=False)
    one, hist_one = pipeline.fit_phase1(prep, progress=False, workers=1)
    assert len(hist_one) == 3 and {k.split("/")[1] for k in hist_one[0]} == {"0", "1", "2"}
    for workers in (2, 3):
        par, hist_par = pipeline.fit_phase1(prep, progress=False, workers=workers)
        a, b = one.state_dict(), par.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), workers
        assert hist_par == hist_one and list(hist_par[0]) == list(hist_one[0])
    assert pipeline._level_groups(prep.phase1_levels(cfg.cond_dim), 2) in ([[0, 1], [2]], [[2], [0, 1]],
                                                                            [[0], [1, 2]], [[0, 2], [1]])


def test_no_forked_workers_where_a_gpu_is_visible(tiny_root, tmp_path, monkeypatch, caplog):
    # after a backward pass there, forked processes cannot run autograd: asked-for workers fall back to one
    cfg = tiny_config(tiny_root, tmp_path)
    prep = pipeline.prepare(cfg, progress=False)
    phase1, _ = pipeline.fit_phase1(prep, progress=False)
    monkeypatch.setattr(pipeline, "fork_is_safe", lambda: False)  # as where torch sees a GPU (test_runtime)
    forks = []
    monkeypatch.setattr("multiprocessing.get_context", lambda *a, **k: forks.append(a) or None)
    with caplog.at_level("WARNING", logger="bgad_lite.pipeline"):
        out = pipeline.fit_variants(prep, phase1, ["bgad", "naive_push"], progress=False, workers=2)
    assert not forks and list(out) == ["bgad", "naive_push"]
    assert "one after another" in caplog.text


def test_phase2_lists_every_anomaly_image_r_times_with_its_fiber_labels(tiny_root, tmp_path):
    """Phase 2 sees the N_train normals (every fiber normal, none left out), then r copies of the
    N_anom anomaly images, each with the labels of :func:`fiber_labels`: anomalous fibers, and the
    fibers a defect only touches left out. Phase 1 sees the normals alone."""
    cfg = tiny_config(tiny_root, tmp_path)
    prep = pipeline.prepare(cfg, progress=False)
    n_train, n_anom, r = len(prep.train_images), len(prep.anomaly_images), ANOMALY_REPEATS
    masks = torch.from_numpy(prep.anomaly_masks)
    for lv1, lv2 in zip(prep.phase1_levels(cfg.cond_dim), prep.phase2_levels(cfg.cond_dim)):
        h, w = lv2.masks.shape[1:]
        m, touched = fiber_labels(masks, h, w)
        assert len(lv1.features) == n_train and not lv1.masks.any()
        assert len(lv2.features) == n_train + r * n_anom
        assert torch.equal(lv2.features[:n_train], lv1.features)
        assert not lv2.masks[:n_train].any() and not lv2.ignore[:n_train].any()
        assert torch.equal(lv2.masks[n_train:], torch.cat([m] * r))
        assert torch.equal(lv2.ignore[n_train:], torch.cat([touched] * r))
        # what one epoch feeds this level's flow: every kept fiber once
        chunks = [a for _, _, _, a in epoch_chunks([lv2], 4, 512, normal_only=False,
                                                     gen=torch.Generator().manual_seed(0))]
        assert sum(int((~a).sum()) for a in chunks) == n_train * h * w + r * int((~m & ~touched).sum())
        assert sum(int(a.sum()) for a in chunks) == r * int(m.sum())
    assert prep.phase2_levels(cfg.cond_dim)[0].masks[n_train:].any()  # the finest level has anomalous fibers


def test_lr_phase2_sets_phase_2_alone(tiny_root, tmp_path):
    """``lr_phase2`` is the learning rate of phase 2, ``lr`` that of phase 1 alone: from given phase-1
    flows a variant does not depend on ``lr``; phase 1 (and its cache key) ignore ``lr_phase2``."""
    import dataclasses

    cfg = tiny_config(tiny_root, tmp_path, epochs_phase2=2)
    prep = pipeline.prepare(cfg, progress=False)
    phase1, _ = pipeline.fit_phase1_cached(prep, progress=False)
    split = dataclasses.replace(cfg, lr_phase2=3e-3)
    assert pipeline.phase1_checkpoint_dir(prep, split) == pipeline.phase1_checkpoint_dir(prep, cfg)
    a, hist_a, _ = pipeline.fit_variant(prep, phase1, "bgad", split, progress=False)
    b, hist_b, _ = pipeline.fit_variant(prep, phase1, "bgad", dataclasses.replace(split, lr=5e-4), progress=False)
    c, _, _ = pipeline.fit_variant(prep, phase1, "bgad", cfg, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and hist_a == hist_b
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # another phase-2 lr, other weights
    with pytest.raises(BGADError, match="lr_phase2"):
        tiny_config(tiny_root, tmp_path, lr_phase2=0.0)


def test_a_phase1_cache_entry_that_does_not_fit_is_retrained(tiny_root, tmp_path, caplog):
    """A cached phase-1 checkpoint whose config.json does not fit the asked settings (here: written
    with another P) is refused by load_checkpoint; the cache treats it as a miss, trains phase 1
    again (the same flows: same seed and data) and replaces the entry, instead of stopping the run."""
    import logging

    cfg = tiny_config(tiny_root, tmp_path)
    prep = pipeline.prepare(cfg, progress=False)
    first, _ = pipeline.fit_phase1_cached(prep, progress=False)
    path = pipeline.phase1_checkpoint_dir(prep)
    saved = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**saved, "cond_dim": 8}))
    with pytest.raises(BGADError, match="cond_dim"):
        load_checkpoint(path, cfg)
    assert not pipeline.phase1_is_cached(prep)  # so run() reports phase 1 as trained, not loaded
    with caplog.at_level(logging.WARNING, logger="bgad_lite.pipeline"):
        again, _ = pipeline.fit_phase1_cached(prep, progress=False)
    assert any("training them again" in r.getMessage() for r in caplog.records)
    assert json.loads((path / "config.json").read_text())["cond_dim"] == 16  # the entry was replaced
    sa, sb = first.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bgad_lite.pipeline"):
        pipeline.fit_phase1_cached(prep, progress=False)
    assert not caplog.records and pipeline.phase1_is_cached(prep)  # now a plain hit
