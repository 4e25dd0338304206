"""The operating point from normal images only (bgad_lite.threshold, evaluate's operating_point)."""

import dataclasses

import numpy as np
import pytest

from bgad_lite import pipeline
from bgad_lite import threshold
from bgad_lite.config import BGADError
from bgad_lite.evaluate import evaluate
from bgad_lite.gaussian import GaussianModel
from bgad_lite.scoring import SCORE_TOP, anomaly_maps, image_scores
from bgad_lite.threshold import CALIBRATION, FALSE_ALARMS, calibration_split, normal_threshold
from test_pipeline import tiny_config


def test_calibration_split_holds_out_a_share_disjointly_and_reproducibly():
    fit, cal = calibration_split(100, seed=3)
    assert CALIBRATION == 0.2 and len(cal) == 20 and len(fit) == 80
    assert sorted(np.concatenate([fit, cal]).tolist()) == list(range(100))  # a partition
    assert np.array_equal(cal, np.sort(cal)) and np.array_equal(fit, np.sort(fit))
    again, cal_again = calibration_split(100, seed=3)
    assert np.array_equal(cal, cal_again) and np.array_equal(fit, again)
    assert not np.array_equal(cal, calibration_split(100, seed=4)[1])  # the seed draws them
    assert len(calibration_split(10, seed=0, share=0.25)[1]) == 2  # round(2.5) = 2
    fit0, cal0 = calibration_split(7, seed=0, share=0.0)
    assert len(cal0) == 0 and fit0.tolist() == list(range(7))


@pytest.mark.parametrize("n, share", [(2, 0.2), (4, 0.5), (4, 0.1), (1, 0.9)])
def test_calibration_split_holds_nothing_out_of_too_few_images(n, share):
    fit, cal = calibration_split(n, seed=0, share=share)
    assert len(cal) == 0 and fit.tolist() == list(range(n))
    with pytest.raises(BGADError, match="share"):
        calibration_split(n, seed=0, share=1.0)


def test_threshold_by_hand():
    # 20 normals, α = 1 %: n·α < 1, so t lies just above the highest one and flags none of them
    s = np.arange(1.0, 21.0)
    t = normal_threshold(s, 0.01)
    assert 20.0 < t < 20.0 + 1e-9
    # 10 normals, α = 20 %: the 0.8-quantile rounded up to an observed score is 9 (position 7.2 -> 8),
    # so t is just above 9 and flags exactly one of them (the 10)
    t = normal_threshold(np.arange(1.0, 11.0)[::-1], 0.2)
    assert 9.0 < t < 9.0 + 1e-9
    assert (np.arange(1.0, 11.0) >= t).sum() == 1
    with pytest.raises(BGADError):
        normal_threshold(np.array([]))
    with pytest.raises(BGADError):
        normal_threshold(s, 1.0)


@pytest.mark.parametrize("n", [5, 40, 100, 1000])
@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.05, 0.3])
def test_threshold_flags_at_most_alpha_of_its_normals(n, alpha):
    rng = np.random.default_rng(n)
    s = np.round(rng.gamma(2.0, size=n), 2)  # with ties
    t = normal_threshold(s, alpha)
    assert (s >= t).mean() <= alpha + 1e-12
    assert (s >= np.nextafter(t, -np.inf) - 1e-9).any() or alpha == 0.0 or n * alpha < 1  # t is tight
    if n * alpha < 1:
        assert (s >= t).sum() == 0


def test_prepare_holds_the_calibration_normals_out_of_every_fit(tiny_root, tmp_path, monkeypatch):
    prep = pipeline.prepare(tiny_config(tiny_root, tmp_path), progress=False)
    monkeypatch.setattr(threshold, "CALIBRATION", 0.0)
    none = pipeline.prepare(tiny_config(tiny_root, tmp_path), progress=False)
    n_all = len(none.train_images)
    assert len(prep.train_images) + len(prep.calib_features[0]) == n_all == 8
    assert len(prep.calib_features[0]) == 2 and len(none.calib_features[0]) == 0  # round(0.2 * 8) = 2
    fit, cal = calibration_split(n_all, prep.cfg.seed + 2, share=0.2)
    assert np.array_equal(prep.train_images, none.train_images[fit])
    for j in range(len(prep.train_features)):  # the features of the same images, split
        assert np.allclose(prep.calib_features[j].numpy(), none.train_features[j][cal].numpy())
        assert np.allclose(prep.train_features[j].numpy(), none.train_features[j][fit].numpy())


def test_operating_point_uses_no_test_label(tiny_root, tmp_path):
    prep = pipeline.prepare(tiny_config(tiny_root, tmp_path), progress=False)
    model = GaussianModel.fit(prep.raw_features("train"))
    ev = evaluate(model, prep)
    # t from the held-out normals alone, scored as test images are
    ref = ev["level_ref"]
    cal_scores = image_scores(anomaly_maps(model.level_logps(prep.raw_features("calib")), prep.image_hw, ref),
                              SCORE_TOP)
    assert ev["threshold"] == normal_threshold(cal_scores, FALSE_ALARMS)
    op = ev["metrics"]["operating_point"]
    assert op["n_normals"] == 2 and op["from"] == "held-out normals"
    normal = prep.test_labels == 0
    assert op["false_alarms"] == pytest.approx((ev["scores"][normal] >= ev["threshold"]).mean())
    # the same threshold whatever the test set's labels, masks and types say
    rng = np.random.default_rng(0)
    order = rng.permutation(len(prep.test_labels))
    shuffled = dataclasses.replace(prep, test_labels=prep.test_labels[order], test_types=prep.test_types[order],
                                   test_masks=prep.test_masks[order])
    assert not np.array_equal(shuffled.test_labels, prep.test_labels)
    assert evaluate(model, shuffled)["threshold"] == ev["threshold"]
    # and without held-out normals it falls back to the training normals, said so
    flat = dataclasses.replace(prep, calib_features=[f[:0] for f in prep.calib_features])
    op0 = evaluate(model, flat)["metrics"]["operating_point"]
    assert op0["from"].startswith("training normals") and op0["n_normals"] == len(prep.train_images)
