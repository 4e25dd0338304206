"""Step 7 of a run: scoring the test set and the metrics, for flows or the Gaussian reference.

:func:`evaluate` computes every test fiber's logp, the anomaly maps and image scores
(:mod:`bgad_lite.scoring`), and image AUROC, pixel AUROC and AUPRO
(:mod:`bgad_lite.metrics`) on all test images, on the normals + seen-type anomalies,
on the normals + unseen-type anomalies, per defect type, and the image AUROC of each
feature level alone (:func:`level_image_aurocs`) and of the paper's likelihood sum
(:func:`likelihood_sum_aurocs`).
"""

from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .explore.margins import NORMAL, SEEN, UNSEEN, image_groups, rates_at
from .flow import positional_encoding_2d
from .gaussian import GaussianModel
from .prepare import Prepared
from .scoring import SCORE_TOP, anomaly_maps, image_scores, level_logps, likelihood_maps, normalisation_stats
from .threshold import FALSE_ALARMS, normal_threshold


def _subset_metrics(maps, scores, masks, labels) -> dict[str, float]:
    return {"image_auroc": metrics.image_auroc(scores, labels),
            "pixel_auroc": metrics.pixel_auroc(maps, masks),
            "aupro": metrics.aupro(maps, masks)}


def model_logps(model, features: list[torch.Tensor], cond_dim: int, device: str = "cpu") -> list[torch.Tensor]:
    """Per-dimension logp of every fiber, J x (n, H_j, W_j), from flows (their positional
    encoding has ``cond_dim`` channels) or a :class:`GaussianModel`."""
    if isinstance(model, GaussianModel):
        return model.level_logps(features)
    pos = [positional_encoding_2d(cond_dim, f.shape[2], f.shape[3]) for f in features]
    return level_logps(model, features, pos, device)


def evaluate(model, prep: Prepared) -> dict:
    """Score the test set with flows (or the Gaussian reference); metrics on all / seen /
    unseen and per defect type. A :class:`GaussianModel` is scored on the backbone's features
    (``prep.raw_features``): fit it on ``prep.raw_features("train")``.

    Each level is normalised by its training normals' mean logp per position (m_j, ``level_ref``)
    and the image score is the mean of the map's top :data:`~bgad_lite.scoring.SCORE_TOP` pixels.

    The operating point (:mod:`bgad_lite.threshold`): t from the held-out normal training images
    alone (``prep.calib_features``; the training normals themselves when none are held out), and the
    false-alarm rate and recalls at it, in ``metrics["operating_point"]``.

    Returns {"metrics": {...}, "maps": (N, h, w), "scores": (N,), "test_logps": [J x (n, H_j, W_j)],
    "train_logps": [...], "level_ref": [m_j(h, w)], "threshold": t}.
    """
    cond_dim, device = prep.cfg.cond_dim, prep.cfg.device
    gaussian = isinstance(model, GaussianModel)  # the reference sees the backbone's features, never aligned ones
    train = prep.raw_features("train") if gaussian else prep.train_features
    test = prep.raw_features("test") if gaussian else prep.test_features
    train_logps = model_logps(model, train, cond_dim, device)
    level_ref = normalisation_stats(train_logps)
    test_logps = model_logps(model, test, cond_dim, device)
    maps = anomaly_maps(test_logps, prep.image_hw, level_ref)
    scores = image_scores(maps, SCORE_TOP)
    metrics_ = split_metrics(maps, scores, prep)
    metrics_["per_level"] = level_image_aurocs(test_logps, level_ref, prep)
    metrics_["likelihood_sum"] = likelihood_sum_aurocs(test_logps, level_ref, prep)
    held_out = len(prep.calib_features[0]) > 0
    normal_logps = model_logps(model, prep.raw_features("calib") if gaussian else prep.calib_features,
                               cond_dim, device) if held_out else train_logps
    calib_scores = image_scores(anomaly_maps(normal_logps, prep.image_hw, level_ref), SCORE_TOP)
    threshold = normal_threshold(calib_scores, FALSE_ALARMS)
    metrics_["operating_point"] = operating_point(threshold, scores, prep, len(calib_scores), held_out)
    return {"metrics": metrics_, "maps": maps, "scores": scores, "test_logps": test_logps,
            "train_logps": train_logps, "level_ref": level_ref, "threshold": threshold}


def operating_point(threshold: float, scores: np.ndarray, prep: Prepared, n_normals: int, held_out: bool) -> dict:
    """At ``threshold`` (set from ``n_normals`` normal images alone): the false-alarm rate on the test
    normals and the recall on the seen and the unseen defect types, with the counts behind them."""
    r = rates_at(scores, image_groups(prep), threshold)
    return {"threshold": threshold, "false_alarm_target": FALSE_ALARMS, "n_normals": n_normals,
            "from": "held-out normals" if held_out else "training normals (optimistic)",
            "false_alarms": r["fpr"], "recall_seen": r["tpr_seen"], "recall_unseen": r["tpr_unseen"],
            **{k: v for k, v in r.items() if k.startswith(("n_", "flagged_"))}}


def likelihood_sum_aurocs(test_logps: list[torch.Tensor], level_ref: list, prep: Prepared) -> dict[str, float]:
    """Image AUROC on all / seen / unseen of the paper's likelihood sum (``scoring.likelihood_maps``,
    A = J − Σ_j exp(logp_j − m_j), each level capped at 1) with the same m_j, scored as the map is: how
    the run would rank its images with the paper's way of summing the levels. A diagnostic beside the
    score (the deficits summed in nats), so that the choice can be checked on any data set."""
    return _subset_aurocs(image_scores(likelihood_maps(test_logps, prep.image_hw, level_ref), SCORE_TOP), prep)


def _subset_aurocs(scores: np.ndarray, prep: Prepared) -> dict[str, float]:
    """Image AUROC of (N_test,) scores on all / seen / unseen, each subset that holds an anomaly."""
    groups = image_groups(prep)  # (N_test,) normal / seen / unseen
    subsets = {"all": np.ones(len(groups), bool), "seen": groups != UNSEEN, "unseen": groups != SEEN}
    return {name: metrics.image_auroc(scores[sel], prep.test_labels[sel])
            for name, sel in subsets.items() if (sel & (groups != NORMAL)).any()}


def level_image_aurocs(test_logps: list[torch.Tensor], level_ref: list, prep: Prepared) -> list[dict[str, float]]:
    """Image AUROC from each level alone, on all / seen / unseen: the map of level j by itself
    (A_j = m_j − logp_j, upsampled), scored as the full map is. Where a flow loses to the
    Gaussian reference, this says at which level."""
    return [_subset_aurocs(image_scores(anomaly_maps([logp], prep.image_hw, [ref]), SCORE_TOP), prep)
            for logp, ref in zip(test_logps, level_ref)]


def split_metrics(maps: np.ndarray, scores: np.ndarray, prep: Prepared) -> dict:
    """Image AUROC, pixel AUROC and AUPRO of (N_test, h, w) maps and (N_test,) image scores of
    ``prep``'s test set: on all test images, on the normals + seen-type anomalies ("seen"), the
    normals + unseen-type anomalies ("unseen"), and per defect type (image AUROC and AUPRO)."""
    groups = image_groups(prep)  # (N_test,) normal / seen / unseen
    good = groups == NORMAL
    subsets = {"all": np.ones(len(scores), bool), "seen": groups != UNSEEN, "unseen": groups != SEEN}
    out = {}
    for name, sel in subsets.items():
        if sel.sum() > good.sum():  # at least one anomaly in the subset
            out[name] = _subset_metrics(maps[sel], scores[sel], prep.test_masks[sel], prep.test_labels[sel])
    out["per_type"] = {}
    for t in sorted(set(prep.test_types) - {"good"}):
        sel = good | (prep.test_types == t)
        out["per_type"][t] = {"image_auroc": metrics.image_auroc(scores[sel], prep.test_labels[sel]),
                              "aupro": metrics.aupro(maps[sel], prep.test_masks[sel])}
    return out
