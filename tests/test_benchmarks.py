"""Fast checks of the benchmark helpers (the benchmarks themselves run with `python -m benchmarks`)."""

import numpy as np
import pytest

from benchmarks.accuracy import accuracy_target, render_accuracy
from benchmarks.aupro_bench import aupro_official_style, make_blob_case
from benchmarks.common import fmt_mean_std, md_table, mean_std
from benchmarks.jobs import job_key, parse_bsdata_positions
from benchmarks.speed import linear_flops_per_fiber, permutation_flops_per_fiber
from bgad_lite.metrics import aupro, aupro_reference


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


def test_md_table_checks_row_width():
    assert md_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError):
        md_table(["a", "b"], [[1]])


def _fake_run(tex, seed, variant, all_, unseen):
    m = {"all": {"image_auroc": all_, "pixel_auroc": 0.9, "aupro": 0.8},
         "seen": {"image_auroc": all_, "pixel_auroc": 0.9, "aupro": 0.8},
         "unseen": {"image_auroc": unseen, "pixel_auroc": 0.9, "aupro": 0.8},
         "per_type": {"hole": {"image_auroc": all_, "aupro": 0.8}}}
    return {"dataset": tex, "seed": seed, "variant": variant, "metrics": m, "fit_s": 10.0,
            "data": {"seen_types": ["hole"]}}


def test_accuracy_table_and_target_on_hand_data():
    runs = []
    for seed, (u, b) in enumerate([(0.80, 0.86), (0.82, 0.88), (0.84, 0.90)]):
        runs += [_fake_run("grass", seed, "unsupervised", u, u), _fake_run("grass", seed, "bgad", b, u + 0.01),
                 _fake_run("grass", seed, "naive_push", u, u - 0.05),
                 _fake_run("brick", seed, "unsupervised", 0.99, 0.99), _fake_run("brick", seed, "bgad", 0.99, 0.97),
                 _fake_run("brick", seed, "naive_push", 0.99, 0.99)]
    data = {"textures": ["grass", "brick"], "seeds": [0, 1, 2], "overrides": {}, "runs": runs, "errors": [],
            "machine": {"date": "2026-01-01T00:00:00", "processor": "x86_64", "cpu_model": "cpu", "cpu_count": 2,
                        "python": "3.11", "torch": "2", "torch_threads": "1", "omp_wait_policy": "PASSIVE"}}
    t = accuracy_target(data)
    assert t["textures_below_0.95"] == ["grass"]  # brick's unsupervised 0.99 is excluded from the gain
    assert t["mean_gain_all"] == pytest.approx(0.06) and t["gain_met"]
    assert not t["per_texture"]["brick"]["unseen_ok"]  # -0.02 with zero spread
    assert not t["unseen_met"]
    data["target"] = t
    md = render_accuracy(data)
    assert "| grass | unsupervised | 0.820 ± 0.020 | 0.820 ± 0.020 | 0.820 ± 0.020 |" in md
    assert "| grass | bgad | 0.880 ± 0.020 |" in md
    assert "**met**" in md and "**missed**" in md


def test_job_keys_deduplicate_equal_jobs():
    a = {"kind": "variant", "dataset": "grass", "seed": 0, "overrides": {"beta": 0.05, "tau": 0.1},
         "variant": "bgad", "est_s": 1}
    b = {"kind": "variant", "dataset": "grass", "seed": 0, "overrides": {"tau": 0.1, "beta": 0.05},
         "variant": "bgad", "est_s": 2}
    assert job_key(a) == job_key(b)
    assert job_key(a) != job_key({**a, "seed": 1})
