"""Fast checks of the benchmark helpers (the benchmarks themselves run with `python -m benchmarks`)."""

import numpy as np
import pytest

from benchmarks.accuracy import _all_met, compare, rates_summary, render_accuracy
from benchmarks.aupro_bench import aupro_official_style, make_blob_case
from benchmarks.common import fmt_mean_std, mean_std, write_json
from bgad_lite.explore.tables import markdown_table
from benchmarks.jobs import job_key, parse_bsdata_positions
from benchmarks.report import write_results_md
from benchmarks.speed import linear_flops_per_fiber, permutation_flops_per_fiber
from bgad_lite.metrics import aupro
from oracles import aupro_reference


# --- AUPRO ---------------------------------------------------------------------------------

def test_official_style_aupro_equals_the_exact_reference_when_1000_thresholds_hit_every_score():
    maps, masks = make_blob_case(6, 32, seed=3, levels=20)  # 20 distinct scores, evenly spaced
    assert len(np.unique(maps)) <= 20
    exact = aupro_reference(maps, masks)
    assert aupro_official_style(maps, masks) == pytest.approx(exact, abs=1e-12)
    assert aupro(maps, masks) == pytest.approx(exact, abs=1e-12)


def test_official_style_aupro_only_samples_continuous_scores():
    maps, masks = make_blob_case(6, 32, seed=4)
    exact = aupro_reference(maps, masks)
    off = aupro_official_style(maps, masks)
    assert off != exact  # sampled, not exact ...
    assert abs(off - exact) < 1e-3  # ... but close
    # too few thresholds are visibly worse
    assert abs(aupro_official_style(maps, masks, n_thresholds=20) - exact) > abs(off - exact)


def test_official_style_aupro_of_a_perfect_map_is_one():
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 4:8, 4:8] = True
    maps = masks.astype(float)
    assert aupro_official_style(maps, masks) == pytest.approx(1.0)



# --- bsdata README ---------------------------------------------------------------------------

README = """
# bsdata
Some prose | with a pipe.

| folder | files | content |
|---|---|---|
| `test/pitting/` | 100 | images |

| new file | original image | annotation | position | capture time | mask px |
|---|---|---|---|---|---|
| `train/good/000.png` | `data/a.jpg` | — | 430000_180 | 2020-08-28 11:04:00 |  |
| `test/good/003.png` | `data/b.jpg` | — | 585000_090 | 2020-08-28 11:07:48 |  |
| `test/pitting/051.png` | `data/c.jpg` | `label/c.json` | 437500_315 | 2020-09-06 01:00:00 | 16 |
| `test/pitting/052.png` | `data/d.jpg` | `label/d.json` | 585000_090 | 2020-09-06 02:00:00 | 301 |

## Unannotated images excluded (2)
| original image | reason |
|---|---|
| `data/e.jpg` | one of 2 captures before first annotated pitting |
"""


def test_bsdata_position_parser():
    assert parse_bsdata_positions(README) == {"pitting/051.png": "437500_315", "pitting/052.png": "585000_090"}


def test_bsdata_position_parser_finds_the_column_by_its_name():
    text = ("| position | new file |\n|---|---|\n| 100_000 | `test/scratch/007.png` |\n")
    # the file is not in the first column here: not a row of the expected table, so nothing is read
    assert parse_bsdata_positions(text) == {}
    text = ("| new file | where | position |\n|---|---|---|\n| `test/scratch/007.png` | x | 100_000 |\n")
    assert parse_bsdata_positions(text) == {"scratch/007.png": "100_000"}


# --- FLOPs -----------------------------------------------------------------------------------

def test_flop_counter_matches_a_hand_count():
    from bgad_lite.flow import build_flow

    # C = 4, P = 8, one block: split 2 | 2, subnet Linear(2 + 8 -> 20) -> ReLU -> Linear(20 -> 2 * 2)
    assert linear_flops_per_fiber(build_flow(4, 8, 1)) == 2 * (10 * 20 + 20 * 4)  # 560
    # C = 5, P = 8, two blocks: split 3 | 2, Linear(11 -> 22), Linear(22 -> 4) per block
    flow = build_flow(5, 8, 2)
    assert linear_flops_per_fiber(flow) == 2 * 2 * (11 * 22 + 22 * 4)  # 1320
    assert permutation_flops_per_fiber(flow) == 2 * 2 * 5 * 5  # the dense 5x5 soft permutation per block


# --- tables ----------------------------------------------------------------------------------

def test_mean_std_formatter_on_hand_data():
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))  # sample std, ddof = 1
    assert fmt_mean_std([0.8, 0.9, 1.0]) == "0.900 ± 0.100"
    assert fmt_mean_std([0.5]) == "0.500"
    assert fmt_mean_std([1, 2], digits=1) == "1.5 ± 0.7"
    assert fmt_mean_std([]) == "–"


def test_markdown_table_formats_floats_and_checks_row_width():
    assert markdown_table([[1, 0.25]], ["a", "b"]) == "| a | b |\n|---|---|\n| 1 | 0.250 |"
    with pytest.raises(ValueError):
        markdown_table([[1]], ["a", "b"])


MACHINE = {"date": "2026-01-01T00:00:00", "processor": "x86_64", "cpu_model": "cpu", "cpu_count": 2,
           "python": "3.11", "torch": "2", "torch_threads": "1", "omp_wait_policy": "PASSIVE"}


def _fake_run(tex, seed, variant, all_, seen, unseen, below=None, aupro=0.8):
    """One phase-2 run as `accuracy._collect` stores it; ``below``: labelled_below_b_a per level
    (None: no labelled fibers at that level), only for flow variants."""
    m = {"all": {"image_auroc": all_, "pixel_auroc": 0.9, "aupro": aupro},
         "seen": {"image_auroc": seen, "pixel_auroc": 0.9, "aupro": aupro},
         "unseen": {"image_auroc": unseen, "pixel_auroc": 0.9, "aupro": aupro},
         "per_type": {"hole": {"image_auroc": seen, "aupro": 0.8}, "crack": {"image_auroc": unseen, "aupro": 0.8}}}
    rates = None if variant == "gaussian" or below is None else [
        {"b_n": -1.0, "b_a": -1.1, "normal_above_b_n": 0.99, "labelled_fibers": 0 if x is None else 40,
         "labelled_below_b_a": x, "cutpaste_fibers": 100, "cutpaste_below_b_a": 0.5} for x in below]
    counts = [{"fibers_labelled": 0 if x is None else 20, "images_labelled": 10,
               "images_without_labelled": 10 if x is None else 2} for x in (below or [])]
    return {"dataset": tex, "seed": seed, "variant": variant, "metrics": m, "fit_s": 10.0,
            "data": {"seen_types": ["hole"]}, "rates": rates, "label_counts": counts}


def _texture_data():
    """grass meets every check; gravel misses every one; brick sits at 1.0; three seeds."""
    runs = []
    for seed in range(3):
        u = 0.80 + 0.02 * seed  # unsupervised on "all"
        # grass: +0.06 on all, +0.09 on seen, +0.01 on unseen; naive_push 0.03 below bgad on unseen;
        # gaussian 0.01 below unsupervised
        runs += [_fake_run("grass", seed, "unsupervised", u, u - 0.10, 0.90, [0.5, 0.5, None]),
                 _fake_run("grass", seed, "bgad", u + 0.06, u - 0.01, 0.91, [0.95, 0.92, None]),
                 _fake_run("grass", seed, "naive_push", 0.85, 0.85, 0.88, [0.99, 0.99, None]),
                 _fake_run("grass", seed, "gaussian", u - 0.01, u - 0.11, 0.85)]
        # gravel: +0.04 on all, +0.07 on seen, −0.01 on unseen; naive_push equal to bgad on unseen;
        # gaussian 0.04 above unsupervised; bgad leaves level 1 at 80 / 85 / 90 % below b_a
        u = 0.86
        runs += [_fake_run("gravel", seed, "unsupervised", u, 0.80, 0.90, [0.5, 0.5, 0.5]),
                 _fake_run("gravel", seed, "bgad", u + 0.04, 0.87, 0.89, [0.95, 0.80 + 0.05 * seed, 0.91]),
                 _fake_run("gravel", seed, "naive_push", 0.88, 0.88, 0.89, [0.9, 0.9, 0.9]),
                 _fake_run("gravel", seed, "gaussian", 0.90, 0.90, 0.90)]
        runs += [_fake_run("brick", seed, v, 1.0, 1.0, 1.0, None if v == "gaussian" else [1.0, 1.0, 1.0])
                 for v in ("unsupervised", "bgad", "naive_push", "gaussian")]
    return {"textures": ["grass", "gravel", "brick"], "seeds": [0, 1, 2], "overrides": {}, "runs": runs,
            "errors": [], "machine": MACHINE}


def test_accuracy_table_shows_gaussian_the_gaps_and_the_rates():
    data = _texture_data()
    md = render_accuracy(data)
    assert "| grass | gaussian | 0.810 ± 0.020 | 0.710 ± 0.020 | 0.850 ± 0.000 |" in md
    assert "| grass | bgad | 0.880 ± 0.020 |" in md
    assert "| grass | naive_push | 0.850 ± 0.000 | 0.850 ± 0.000 | 0.880 ± 0.000 |" in md
    assert "| texture | variant | crack | hole |" in md  # the per-type table
    # the gaps, bgad − unsupervised, without a verdict: grass +0.06 / +0.09 / +0.01, gravel +0.04 / +0.07 / −0.01
    assert "| grass | +0.060 ± 0.000 | +0.090 ± 0.000 | +0.010 ± 0.000 | +0.000 ± 0.000 |" in md
    assert "| gravel | +0.040 ± 0.000 | +0.070 ± 0.000 | -0.010 ± 0.000 | +0.000 ± 0.000 |" in md
    gaps = md.split("**What the labels add**")[1].split("**After phase 2")[0]
    assert "Reported, not a target" in gaps and "met" not in gaps
    # rates table: gravel level 1, bgad 85 ± 5 %; grass level 2 has no labelled fibers
    assert "| gravel | 1 | 40 | 2.0 of 10 | 50 ± 0 % | 85 ± 5 % | 90 ± 0 % | 50 ± 0 % | 99 ± 0 % |" in md
    assert "| grass | 2 | 0 | 10.0 of 10 | – | – | – |" in md
    assert "- gravel: bgad level 0 95 %, level 1 85 %, level 2 91 % → **missed** (below 90 % at level 1)" in md


def test_rates_summary_on_hand_data():
    runs = _texture_data()["runs"]
    r = {t: rates_summary(runs, t) for t in ("grass", "gravel", "brick")}
    # grass 95 / 92 % (level 2 has no labelled fibers: skipped) -> met; gravel level 1 at 85 % -> missed there only
    assert r["grass"]["met"] is True and r["grass"]["missed_levels"] == []
    assert r["grass"]["levels"][2]["variants"]["bgad"]["labelled_below_b_a"] is None
    assert r["gravel"]["met"] is False and r["gravel"]["missed_levels"] == [1]
    assert r["gravel"]["levels"][1]["variants"]["bgad"]["labelled_below_b_a"] == pytest.approx(0.85)
    assert r["brick"]["met"] is True


def _target_run(ds, seed, variant, all_, seen=None, unseen=None, pixel=0.9, aupro=0.8, op=True):
    m = {"all": {"image_auroc": all_, "pixel_auroc": pixel, "aupro": aupro}}
    if seen is not None:
        m["seen"] = {"image_auroc": seen, "pixel_auroc": pixel, "aupro": aupro}
    if unseen is not None:
        m["unseen"] = {"image_auroc": unseen, "pixel_auroc": pixel, "aupro": aupro}
    if op:
        m["operating_point"] = {"from": "held-out normals", "threshold": 1.0}
    return {"dataset": ds, "seed": seed, "variant": variant, "metrics": m}


def _targets_case():
    """Three seeds. grass: bgad all 0.86 / 0.87 / 0.88, PatchCore exactly 0.03 below (met despite float
    rounding); gravel: PatchCore 0.02 below (missed). bsdata: bgad 0.96, gaussian 0.95 (+0.01, met),
    unsupervised 0.94 (below the Gaussian: missed); the peers below bgad on every metric but PaDiM's
    AUPRO (0.85 against 0.80: missed)."""
    acc, bs, peers = [], [], []
    for s in range(3):
        acc += [_target_run("grass", s, "bgad", 0.86 + 0.01 * s, 0.90, 0.82 + 0.02 * s),
                _target_run("grass", s, "unsupervised", 0.80, 0.85, 0.78),
                _target_run("grass", s, "gaussian", 0.72, 0.78, 0.68),
                _target_run("grass", s, "naive_push", 0.82, 0.88, 0.80),
                _target_run("gravel", s, "bgad", 0.85, 0.95, 0.76 + 0.01 * s),
                _target_run("gravel", s, "unsupervised", 0.80, 0.85, 0.78),
                _target_run("gravel", s, "gaussian", 0.75, 0.81, 0.70),
                _target_run("gravel", s, "naive_push", 0.76, 0.81, 0.74, op=s != 2)]
        bs += [_target_run("bsdata", s, "bgad", 0.96, 0.96, pixel=0.99, aupro=0.80),
               _target_run("bsdata", s, "unsupervised", 0.94, 0.94),
               _target_run("bsdata", s, "gaussian", 0.95, 0.95)]
        peers += [{"dataset": "grass", "seed": s, "peers": {"patchcore": {"metrics": _peer_metrics(
                      0.83 + 0.01 * s, 0.9, 0.8)}}},
                  {"dataset": "gravel", "seed": s, "peers": {"patchcore": {"metrics": _peer_metrics(0.83, 0.9, 0.8)}}},
                  {"dataset": "bsdata", "seed": s, "peers": {
                      "padim": {"metrics": {"all": {"image_auroc": 0.94, "pixel_auroc": 0.98, "aupro": 0.85}}},
                      "patchcore": {"metrics": {"all": {"image_auroc": 0.95, "pixel_auroc": 0.97, "aupro": 0.70}}}}}]
    return acc, bs, {"runs": peers}


def test_targets_judge_bgads_own_accuracy_on_hand_data():
    from benchmarks import targets

    acc, bs, peers = _targets_case()
    g = targets.groups(acc, bs, targets.peer_runs(peers))
    titles = [x["title"] for x in g]
    assert titles[0] == "bsdata: bgad ≥ gaussian + 0.01 image AUROC"
    assert g[0]["met"] is True and g[0]["checks"][0]["diff"] == pytest.approx(0.01)
    # the peers on bsdata: only PaDiM's AUPRO is above bgad's
    assert [c["met"] for c in g[1]["checks"]] == [True, True, False, True, True, True] and g[1]["met"] is False
    assert g[1]["checks"][2]["diff"] == pytest.approx(-0.05)
    # PatchCore + 0.03: grass exactly at the margin (met), gravel 0.02 above (missed)
    assert titles[2] == "grass and gravel: bgad ≥ PatchCore + 0.03 image AUROC"
    assert [c["met"] for c in g[2]["checks"]] == [True, False]
    assert [c["diff"] for c in g[2]["checks"]] == pytest.approx([0.03, 0.02])
    # the unsupervised flow against the Gaussian: grass, gravel, bsdata (−0.01: missed)
    assert [c["label"] for c in g[3]["checks"]] == ["grass", "gravel", "bsdata"]
    assert [c["met"] for c in g[3]["checks"]] == [True, True, False]
    # not below 2026-12-04's figures by more than one std: grass unseen 0.84 ± 0.02 against 0.839 (met);
    # gravel unseen 0.77 ± 0.01 against 0.798 − 0.01 (missed); gravel all 0.85 ± 0 against 0.854 (missed)
    ref = {(c["dataset"], c["subset"]): c for c in g[4]["checks"]}
    assert ref[("grass", "unseen")]["mean"] == pytest.approx(0.84) and ref[("grass", "unseen")]["met"] is True
    assert ref[("gravel", "unseen")]["std"] == pytest.approx(0.01) and ref[("gravel", "unseen")]["met"] is False
    assert ref[("gravel", "all")]["met"] is False and ref[("grass", "all")]["met"] is True
    # naive push on the mean of the textures' unseen: bgad (0.84 + 0.77) / 2 against (0.80 + 0.74) / 2
    assert g[5]["checks"][0]["diff"] == pytest.approx(0.035) and g[5]["met"] is True
    # bgad against unsupervised on unseen: grass +0.06, gravel −0.01
    assert [c["met"] for c in g[6]["checks"]] == [True, False]
    # one gravel naive_push run has no operating point: named
    op = g[7]["checks"][0]
    assert op["met"] is False and op["missing"] == ["gravel 2 naive_push"] and op["n_runs"] == 33
    lines = targets.render(g)
    assert "  - grass *unseen* ≥ 0.839 − std: bgad 0.840 ± 0.020 (change +0.001) → **met**" in lines
    assert "  - 32 of 33 runs → **missed** (without: gravel 2 naive_push)" in lines
    assert ("  - AUPRO, padim: bgad 0.800 ± 0.000, padim 0.850 ± 0.000; difference -0.050 ± 0.000 "
            "(3 seeds: 0, 1, 2) → **missed**") in lines


def test_targets_leave_out_what_was_not_measured():
    from benchmarks import targets

    acc, _, _ = _targets_case()
    titles = [g["title"] for g in targets.groups(acc, [], [])]
    assert not any("bsdata" in t or "PatchCore" in t for t in titles)  # no bsdata, no peers: no such groups
    # gaussian missing on gravel: that check is "not measured" and the group's verdict is open
    g = targets.groups([r for r in acc if not (r["dataset"] == "gravel" and r["variant"] == "gaussian")], [], [])
    uns = next(x for x in g if x["title"].startswith("the unsupervised flow"))
    assert [c["met"] for c in uns["checks"]] == [True, None] and uns["met"] is None
    assert "gravel: not measured" in "\n".join(targets.render(g))


def test_compare_on_missing_data_and_the_combined_verdict():
    assert compare([], ["grass"], "bgad", "unsupervised", "all", "image_auroc", 0.05)["met"] is None
    assert _all_met([{"met": True}, {"met": None}]) is None
    assert _all_met([{"met": True}, {"met": None}, {"met": False}]) is False
    assert _all_met([{"met": True}, {"met": True}]) is True


def test_results_md_lists_the_targets_with_their_figures(tmp_path):
    acc, bs, peers = _targets_case()
    write_json(tmp_path / "accuracy.json", {"textures": ["grass", "gravel"], "runs": acc, "mode": "full"})
    write_json(tmp_path / "bsdata.json", {"runs": bs, "mode": "full"})
    write_json(tmp_path / "peers.json", peers)
    md = write_results_md(tmp_path, tmp_path / "RESULTS.md", [])
    top = md.split("## Targets\n")[1]
    assert "issue" not in top.lower()
    assert "- grass and gravel: bgad ≥ PatchCore + 0.03 image AUROC: **missed**\n" in top
    assert ("  - gravel: bgad 0.850 ± 0.000, patchcore 0.830 ± 0.000; difference +0.020 ± 0.000 (3 seeds: 0, 1, 2) "
            "→ **missed**") in top
    assert "- bsdata: bgad ≥ gaussian + 0.01 image AUROC: **met**" in top
    assert "bgad ≥ unsupervised + 0.05" not in md  # the gaps are no longer targets


def test_results_md_dates_every_section(tmp_path, monkeypatch):
    """The header names the last command only; each stored section's own date is listed, in order."""
    monkeypatch.setattr("benchmarks.report.render_section", lambda name, data: f"({name})")
    write_json(tmp_path / "bsdata.json", {"runs": [], "machine": {"date": "2026-12-04T21:19:47"}})
    write_json(tmp_path / "speed.json", {"machine": {"date": "2026-12-05T06:57:15"}})
    write_json(tmp_path / "aupro.json", {"sizes": []})  # no machine stamp: not listed
    md = write_results_md(tmp_path, tmp_path / "RESULTS.md", ["accuracy", "bsdata", "speed", "aupro"])
    assert ("Each section as last measured (the command above wrote only its own): bsdata 2026-12-04 21:19, "
            "speed 2026-12-05 06:57.\n") in md


def test_job_keys_deduplicate_equal_jobs():
    a = {"kind": "variant", "dataset": "grass", "seed": 0, "overrides": {"beta": 0.05, "tau": 0.1},
         "variant": "bgad", "est_s": 1}
    b = {"kind": "variant", "dataset": "grass", "seed": 0, "overrides": {"tau": 0.1, "beta": 0.05},
         "variant": "bgad", "est_s": 2}
    assert job_key(a) == job_key(b)
    assert job_key(a) != job_key({**a, "seed": 1})


_PROBE = '''
import time


def probe(sleep):
    start = time.time()
    time.sleep(sleep)
    return {"start": start, "end": time.time()}
'''


def test_an_exclusive_job_runs_alone(tmp_path, monkeypatch):
    """The end-to-end timing is queued exclusive: it waits for the job in flight and nothing
    starts beside it, although a worker is free (spawned workers inherit sys.path)."""
    from benchmarks.jobs import JobRunner

    (tmp_path / "runner_probe.py").write_text(_PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    call = lambda name, s: {"kind": "call", "func": "runner_probe:probe", "kwargs": {"sleep": s}, "name": name}  # noqa: E731
    runner = JobRunner(workers=2, log=lambda *_: None)
    jobs = {"first": call("first", 1.5), "alone": call("alone", 1.0), "after": call("after", 0.2)}
    runner.add(jobs["first"], priority=3)
    runner.add(jobs["alone"], priority=2, exclusive=True)
    runner.add(jobs["after"], priority=1)
    runner.run()
    t = {name: runner.result(job) for name, job in jobs.items()}
    assert all("error" not in r for r in t.values()), t
    assert t["alone"]["start"] >= t["first"]["end"]  # it waited for the job in flight
    assert t["after"]["start"] >= t["alone"]["end"]  # and nothing ran beside it


def test_settings_line_names_the_defaults_the_section_was_measured_with():
    from benchmarks.accuracy import _settings_line
    from bgad_lite import BGADConfig

    # a JSON of an older version records settings that are constants now, and some it lacked
    old = {**BGADConfig(epochs_phase2=20).to_dict(), "anomaly_repeats": 1, "score_top": 0.0, "keep_aspect": True}
    line = _settings_line({}, old)
    assert "20 + 20 epochs" in line and "1× per phase-2 epoch" in line and "the maximum of the map" in line
    assert "anomaly_normals" not in line  # "all", what is kept, goes unsaid
    assert 'anomaly_normals="none"' in _settings_line({}, dict(old, anomaly_normals="none"))
    older = {k: v for k, v in old.items() if k != "lr_phase2"}  # JSON from before lr_phase2: one lr
    assert "Adam lr 0.001, phase 2 0.001," in _settings_line({}, older)
    now = _settings_line({"beta": 0.05})
    c = BGADConfig()
    assert f"{c.epochs_phase1} + {c.epochs_phase2} epochs" in now and now.endswith("except `beta=0.05`.")
    assert f"Adam lr {c.lr:g}, phase 2 {c.lr_phase2:g}," in now and "2× per phase-2 epoch" in now
    assert "the mean of the top 1 % of the map" in now
    assert "positions aligned `off`" in _settings_line({}, dict(older, align_positions=False))  # boolean JSON
    before = {k: v for k, v in older.items() if k != "align_positions"}  # JSON from before alignment
    assert "positions aligned `off`" in _settings_line({}, before)
    assert f"positions aligned `{c.align_positions}`" in now
    assert f"about {c.image_size}² px, aspect ratio kept" in now
    unkept = {k: v for k, v in before.items() if k != "keep_aspect"}  # JSON from before keep_aspect: squares
    assert "128 px squares" in _settings_line({}, unkept)
    assert "128 px squares" in _settings_line({}, dict(old, keep_aspect=False))


def test_sensitivity_settings_line_is_not_read_from_the_sweep_centre():
    # the sensitivity JSON's "defaults" are β, τ, k of the sweep; the line must still give today's phase-2 lr
    from bgad_lite import BGADConfig
    from benchmarks.accuracy import render_sensitivity

    machine = {"date": "2026-11-30T00:00:00", "processor": "x86_64", "cpu_model": "cpu", "cpu_count": 2,
               "python": "3.11", "torch": "2.14", "omp_wait_policy": "PASSIVE", "torch_threads": "1"}
    data = {"machine": machine, "seed": 0, "overrides": {}, "points": [],
            "defaults": {"beta": 0.01, "tau": 0.1, "n_anomalies": 10}, "unsupervised": None}
    text = render_sensitivity(data)
    assert f"phase 2 {BGADConfig().lr_phase2:g}," in text


def test_options_compares_paired_seeds_by_hand():
    from benchmarks.options import compare_runs, render

    def run(ds, seed, v, all_, aupro, seen=None):
        m = {"all": {"image_auroc": all_, "aupro": aupro}}
        if seen is not None:
            m["seen"] = {"image_auroc": seen, "aupro": aupro}
        return {"dataset": ds, "seed": seed, "variant": v, "metrics": m}

    base = [run("grass", 0, "bgad", 0.80, 0.60, 0.90), run("grass", 1, "bgad", 0.90, 0.70, 0.80),
            run("grass", 2, "bgad", 0.10, 0.10, 0.10)]  # seed 2 has no new run: left out of both means
    new = [run("grass", 0, "bgad", 0.85, 0.50, 0.95), run("grass", 1, "bgad", 0.95, 0.60),
           run("gravel", 0, "bgad", 0.5, 0.5)]  # gravel has no base run: a row without numbers
    rows = compare_runs(base, new)
    grass = rows[0]
    assert grass["seeds"] == [0, 1]
    assert grass["all/image_auroc"] == pytest.approx((0.85, 0.90, 0.05))
    assert grass["all/aupro"] == pytest.approx((0.65, 0.55, -0.10))
    assert grass["seen/image_auroc"] == pytest.approx((0.90, 0.95, 0.05))  # only seed 0 has "seen" in both
    assert "unseen/image_auroc" not in grass
    assert rows[1]["seeds"] == [] and "all/image_auroc" not in rows[1]
    table = render(rows)
    assert "0.850 → 0.900 (+0.050)" in table and "0.650 → 0.550 (-0.100)" in table and "—" in table


def test_options_reject_a_bad_override_with_a_clear_message(capsys):
    from benchmarks.options import main, parse_overrides

    assert parse_overrides('{"align_positions": "on"}') == {"align_positions": "on"}
    for bad, says in (('{"align_position": "on"}', "unknown config keys"), ("align_positions", "JSON object"),
                      ("{}", "non-empty"), ('{"beta": 2}', "beta must lie")):
        assert main([bad]) == 2
        assert says in capsys.readouterr().err


def _peer_metrics(a, s=None, u=None, px=0.9, pro=0.7):
    out = {"all": {"image_auroc": a, "pixel_auroc": px, "aupro": pro}}
    if s is not None:
        out["seen"] = {"image_auroc": s, "pixel_auroc": px, "aupro": pro}
    if u is not None:
        out["unseen"] = {"image_auroc": u, "pixel_auroc": px, "aupro": pro}
    return out


def test_peers_table_pairs_the_peers_with_bgad_lites_runs_of_the_same_seeds():
    """Two seeds of PaDiM / PatchCore on grass beside bgad-lite's runs: means ± sample std by hand,
    a bgad-lite run of a seed the peers did not run is left out, a data set without bgad-lite
    runs still shows the peers, and a job that failed is listed."""
    from types import SimpleNamespace

    from benchmarks.peers import peer_job, render_peers, summarise_peers

    jobs = [peer_job("grass", 0, {}, "c"), peer_job("grass", 1, {}, "c"), peer_job("bsdata", 0, {}, "c"),
            peer_job("gravel", 0, {}, "c")]

    def peer_run(ds, seed, pad, pc):
        return {"dataset": ds, "seed": seed, "anomalib": "2.7.0", "image_hw": [128, 128], "prepare_s": 1.0,
                "peers": {"padim": {"metrics": pad, "fit_s": 2.0}, "patchcore": {"metrics": pc, "fit_s": 30.0}}}

    results = [peer_run("grass", 0, _peer_metrics(0.70, 0.80, 0.60), _peer_metrics(0.80, 0.90, 0.75)),
               peer_run("grass", 1, _peer_metrics(0.74, 0.84, 0.64), _peer_metrics(0.84, 0.86, 0.79)),
               peer_run("bsdata", 0, _peer_metrics(0.95, 0.95), _peer_metrics(0.94, 0.94)),
               {"error": "RuntimeError: boom"}]
    runner = SimpleNamespace(result=lambda job: results[jobs.index(job)])
    ours = {"runs": [{"dataset": "grass", "seed": s, "variant": v, "metrics": _peer_metrics(a, a + 0.1, a - 0.1),
                      "fit_s": 50.0} for s, v, a in ((0, "bgad", 0.86), (1, "bgad", 0.88), (2, "bgad", 0.10),
                                                     (0, "naive_push", 0.5))]}
    machine = {"date": "2026-11-30T15:00:00", "processor": "x86_64", "cpu_model": "cpu", "cpu_count": 2,
               "python": "3.11", "torch": "2.14.1", "omp_wait_policy": "PASSIVE", "torch_threads": "1"}
    data = summarise_peers(runner, jobs, machine, ours, None)
    assert data["anomalib"] == "2.7.0" and len(data["runs"]) == 3
    assert data["errors"] == [{"dataset": "gravel", "seed": 0, "error": "RuntimeError: boom"}]
    assert set(data["ours"]) == {"grass"} and set(data["ours"]["grass"]) == {"bgad"}  # naive_push is not a row
    text = render_peers(data)
    cells = {}  # (data set, model) -> the row's cells; the data set is named on its first row only
    ds = None
    for line in text.splitlines():
        if line.startswith("| ") and "(" in line:
            row = [c.strip() for c in line.strip("|").split("|")]
            ds = row[0].split(" ")[0] or ds
            cells[(ds, row[1])] = row[2:]
    # padim on grass, seeds 0 and 1: all 0.72 ± 0.028, seen 0.82 ± 0.028, unseen 0.62 ± 0.028, fit 2 s
    assert cells[("grass", "padim (anomalib)")] == ["0.720 ± 0.028", "0.820 ± 0.028", "0.620 ± 0.028",
                                                   "0.900 ± 0.000", "0.700 ± 0.000", "2"]
    assert "grass (128 × 128, seeds 0, 1)" in text
    # bgad-lite's seed 2 is not among the peers' seeds: left out
    assert cells[("grass", "bgad (bgad-lite)")][:3] == ["0.870 ± 0.014", "0.970 ± 0.014", "0.770 ± 0.014"]
    assert ("grass", "gaussian (bgad-lite)") not in cells  # no such run in the section
    assert cells[("bsdata", "patchcore (anomalib)")][:3] == ["0.940", "0.940", "–"]  # one seed, no unseen type
    assert ("bsdata", "bgad (bgad-lite)") not in cells
    assert "Error on gravel seed 0: RuntimeError: boom" in text
    assert render_peers({"absent": "anomalib is not installed"}) == "Not measured: anomalib is not installed."


def test_peers_per_type_table_marks_the_seen_types_and_averages_the_same_seeds():
    from benchmarks.peers import render_peers

    def mets(a, per):
        return {"all": {"image_auroc": a, "pixel_auroc": 0.9, "aupro": 0.7},
                "per_type": {t: {"image_auroc": v, "aupro": 0.5} for t, v in per.items()}}

    runs = [{"dataset": "grass", "seed": s, "anomalib": "2.7.0", "image_hw": [128, 128], "prepare_s": 1.0,
             "peers": {"padim": {"metrics": mets(0.7, {"hole": 0.8, "pit": 0.5 + 0.1 * s}), "fit_s": 1.0},
                       "patchcore": {"metrics": mets(0.8, {"hole": 0.9, "pit": 0.7}), "fit_s": 1.0}}}
            for s in (0, 1)]
    ours = {"grass": {"bgad": [{"seed": s, "metrics": mets(0.85, {"hole": 0.95, "pit": x}), "fit_s": 5.0,
                                "seen_types": ["hole"]} for s, x in ((0, 0.6), (1, 0.64), (2, 0.1))]}}
    machine = {"date": "2026-11-30T15:00:00", "processor": "x86_64", "cpu_model": "cpu", "cpu_count": 2,
               "python": "3.11", "torch": "2.14.1", "omp_wait_policy": "PASSIVE", "torch_threads": "1"}
    text = render_peers({"machine": machine, "anomalib": "2.7.0", "runs": runs, "ours": ours, "errors": []})
    table = text.split("**grass: image AUROC per defect type**")[1]
    assert "| model | hole (seen) | pit |" in table
    assert "| padim (anomalib) | 0.800 ± 0.000 | 0.550 ± 0.071 |" in table
    # bgad-lite's seed 2 is not among the peers' seeds: (0.60 + 0.64) / 2
    assert "| bgad (bgad-lite) | 0.950 ± 0.000 | 0.620 ± 0.028 |" in table


def test_peers_run_padim_and_patchcore_on_the_library_data_when_anomalib_is_installed(tiny_root, tmp_path):
    """Where anomalib is installed: both peers fit the tiny set and give a map per test image at the
    input shape and metrics in the library's format."""
    pytest.importorskip("anomalib")
    from benchmarks.peers import PEERS, run_peer
    from bgad_lite import pipeline
    from bgad_lite.evaluate import split_metrics

    from test_pipeline import tiny_config

    prep = pipeline.prepare(tiny_config(tiny_root, tmp_path), progress=False)
    for name in PEERS:
        maps, scores, _, _ = run_peer(name, prep, 0)
        assert maps.shape == (len(prep.test_images), *prep.image_hw) and scores.shape == (len(prep.test_images),)
        assert set(split_metrics(maps, scores, prep)["all"]) == {"image_auroc", "pixel_auroc", "aupro"}


def test_peers_section_without_anomalib_notes_it_and_keeps_a_measured_table(tmp_path, monkeypatch):
    """Without anomalib, `--only peers` writes a note — but a peers.json measured where anomalib was
    installed keeps its peers' runs as they were (a run in the project's environment must not erase
    them), with bgad-lite's rows taken again from the accuracy section as it is now."""
    import json

    import benchmarks.peers as peers
    from benchmarks.runner import main as bench_main

    monkeypatch.setattr(peers, "anomalib_version", lambda: None)
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    assert bench_main(["--only", "peers", "--out", str(empty), "--workers", "1"]) == 0
    assert "absent" in json.loads((empty / "peers.json").read_text())
    assert "Not measured: anomalib is not installed" in (empty / "RESULTS.md").read_text()
    kept.mkdir()
    machine = {"date": "2026-11-30T15:00:00", "processor": "x86_64", "cpu_model": "cpu", "cpu_count": 2,
               "python": "3.11", "torch": "2.14.1", "omp_wait_policy": "PASSIVE", "torch_threads": "1"}
    run = {"dataset": "grass", "seed": 0, "anomalib": "2.7.0", "image_hw": [128, 128], "prepare_s": 1.0,
           "peers": {p: {"metrics": _peer_metrics(0.8), "fit_s": 1.0} for p in peers.PEERS}}
    write_json(kept / "peers.json", {"machine": machine, "anomalib": "2.7.0", "runs": [run], "errors": [], "ours": {}})
    before = json.loads((kept / "peers.json").read_text())
    assert bench_main(["--only", "peers", "--out", str(kept), "--workers", "1"]) == 0
    assert "| grass (128 × 128, seeds 0) | padim (anomalib) | 0.800 |" in (kept / "RESULTS.md").read_text()
    after = json.loads((kept / "peers.json").read_text())
    assert after["runs"] == before["runs"] and after["machine"] == before["machine"] and after["ours"] == {}
    # a newer accuracy section: its bgad run of the same seed stands beside the kept peers, dated
    newer = {**machine, "date": "2026-12-04T21:19:47"}
    ours = [{"dataset": "grass", "seed": s, "variant": "bgad", "metrics": _peer_metrics(a), "fit_s": 50.0}
            for s, a in ((0, 0.9), (1, 0.5))]  # seed 1: the peers did not run it, so it is left out
    after = peers.refresh_ours(before, {"machine": newer, "runs": ours}, None)
    text = peers.render_peers(after)
    assert "|  | bgad (bgad-lite) | 0.900 | – | – | 0.900 | 0.700 | 50 |" in text
    assert "measured 2026-12-04 21:19, after the peers" in text
    assert after["runs"] == before["runs"] and after["ours_measured"] == ["2026-12-04T21:19:47"]
    assert "as they stood when the peers were measured" in peers.render_peers(before)


def test_a_section_measured_at_other_defaults_says_so(tmp_path):
    from bgad_lite.config import BGADConfig
    from benchmarks.report import stale_defaults

    now = BGADConfig().to_dict()
    assert stale_defaults({"defaults": dict(now)}) == []
    assert stale_defaults({}) == []  # a section that never said what its defaults were
    old = {**now, "n_cutpaste": now["n_cutpaste"] + 1, "seed": 3, "category": "gravel"}  # run settings: not defaults
    del old["align_positions"]
    old["label_rule"] = "half"  # a setting removed since: not today's, not compared
    expected = [f"align_positions (added since; now {now['align_positions']!r})",
                f"n_cutpaste {now['n_cutpaste'] + 1} (now {now['n_cutpaste']})"]
    assert stale_defaults({"defaults": old}) == expected
    # the sensitivity sweep records only its centre values: only those are compared
    centre = {k: now[k] for k in ("beta", "tau", "n_anomalies")}
    assert stale_defaults({"defaults": centre}) == []
    assert stale_defaults({"defaults": {**centre, "beta": 0.5}}) == [f"beta 0.5 (now {now['beta']})"]

    data = _texture_data()
    data["defaults"] = old
    write_json(tmp_path / "accuracy.json", data)
    md = write_results_md(tmp_path, tmp_path / "RESULTS.md", ["accuracy"])
    assert f"> **Measured at other library defaults than today's**: {'; '.join(expected)}." in md
    data["defaults"] = now
    write_json(tmp_path / "accuracy.json", data)
    assert "other library defaults" not in write_results_md(tmp_path, tmp_path / "RESULTS.md", ["accuracy"])


def test_a_failed_end_to_end_run_is_an_error_not_a_fast_run(monkeypatch, tmp_path):
    from benchmarks import speed
    from benchmarks.report import targets_summary

    # the command's entry point broken (as after an editable install's source was removed): it exits at once
    monkeypatch.setattr(speed, "run_with_rusage", lambda *a, **k: {
        "rc": 1, "wall_s": 0.4, "maxrss_kb": 30_000, "user_s": 0.3, "sys_s": 0.05,
        "stderr_tail": "Traceback (most recent call last):\nModuleNotFoundError: No module named 'bgad_lite'\n"})
    e = speed.measure_e2e()
    assert e["rc"] == 1 and "exited with code 1" in e["error"] and "No module named 'bgad_lite'" in e["error"]
    machine = {"date": "2026-11-30T00:00:00", "processor": "x86_64", "cpu_model": "test", "cpu_count": 2,
               "python": "3.11", "torch": "2", "torch_threads": "1", "omp_wait_policy": "PASSIVE"}
    write_json(tmp_path / "speed.json", {"machine": machine, "e2e": e, "mode": "full"})
    md = speed.render_speed({"machine": machine, "e2e": e})
    assert "ERROR:" in md and "met" not in md
    assert not any("bgad-lite run" in line for line in targets_summary(tmp_path))


def test_level_rows_average_each_level_over_seeds_and_skip_older_results():
    from benchmarks.accuracy import level_rows, render_levels

    def run(seed, v, levels, all_):
        return {"dataset": "grass", "variant": v, "seed": seed,
                "metrics": {"all": {"image_auroc": all_}, "per_level": [{"all": a} for a in levels]}}

    runs = [run(0, "bgad", [0.8, 0.6], 0.85), run(1, "bgad", [0.9, 0.7], 0.95),
            {"dataset": "grass", "variant": "gaussian", "seed": 0, "metrics": {"all": {"image_auroc": 0.7}}}]
    rows = level_rows(runs, ["grass"])
    assert rows == [["grass", "bgad", "0.850 ± 0.071", "0.650 ± 0.071", "0.900 ± 0.071", "–"]]  # no per_level: no row
    assert "| data set | variant | level 0 | level 1 | all levels | paper's likelihood sum |" in "\n".join(render_levels(runs, ["grass"]))
    assert render_levels(runs[2:], ["grass"]) == []
    runs[0]["metrics"]["likelihood_sum"] = {"all": 0.8}  # the paper's sum only when every seed has it
    assert level_rows(runs, ["grass"])[0][-1] == "–"
    runs[1]["metrics"]["likelihood_sum"] = {"all": 1.0}
    assert level_rows(runs, ["grass"])[0][-1] == "0.900 ± 0.141"


def test_operating_point_rows_average_over_seeds_and_leave_empty_groups_out():
    from benchmarks.accuracy import render_operating

    def op(fa, seen, unseen):
        return {"operating_point": {"threshold": 1.0, "false_alarm_target": 0.01, "n_normals": 20,
                                    "false_alarms": fa, "recall_seen": seen, "recall_unseen": unseen}}
    runs = [{"dataset": "grass", "variant": "bgad", "seed": 0, "metrics": op(0.0, 0.5, 0.25)},
            {"dataset": "grass", "variant": "bgad", "seed": 1, "metrics": op(0.1, 0.7, 0.75)},
            {"dataset": "bsdata", "variant": "bgad", "seed": 0, "metrics": op(0.02, 0.6, float("nan"))},
            {"dataset": "grass", "variant": "unsupervised", "seed": 0, "metrics": {}}]  # written before
    text = "\n".join(render_operating(runs, ["grass", "bsdata"]))
    assert "| grass | bgad | 20 | 0.050 ± 0.071 | 0.600 ± 0.141 | 0.500 ± 0.354 |" in text
    assert "| bsdata | bgad | 20 | 0.020 | 0.600 | – |" in text
    assert "unsupervised" not in text and "99% quantile" in text
    assert render_operating(runs[3:], ["grass"]) == []
