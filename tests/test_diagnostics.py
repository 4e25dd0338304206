"""Phase-2 diagnostics: label counts per level and the rates below b_a / above b_n, on hand-made cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bgad_lite.diagnostics import boundary_rates, format_rates, label_counts


class Identity(nn.Module):
    """z = x, log|det J| = 0: logp = −½·log(2π) − ½‖x‖²/C per dimension."""

    def forward(self, x, c):
        return x, torch.zeros(len(x), dtype=x.dtype)


def _prep():
    s = 16
    masks = np.zeros((3, s, s), bool)
    masks[0, 0:8, 0:8] = True  # labelled: one whole 8x8 cell at level 1 (2x2), 4 cells at level 0 (4x4)
    masks[1, 0:8, 8:16] = True  # its flip
    masks[2, 2:4, 2:4] = True  # a CutPaste of a 2x2 speck: a quarter of a level-0 cell
    train = [torch.zeros(5, 2, 4, 4), torch.zeros(5, 2, 2, 2)]  # normals at x = 0: logp = −½·log(2π)
    anomaly = [torch.full((3, 2, 4, 4), 0.0), torch.full((3, 2, 2, 2), 0.0)]
    for f in anomaly:  # anomalous cells far away (x = 3: logp = −½·log(2π) − 4.5)
        f[0, :, : f.shape[2] // 2, : f.shape[3] // 2] = 3.0
    return SimpleNamespace(anomaly_masks=masks, anomaly_kinds=["labelled", "flip", "cutpaste"],
                           train_features=train, anomaly_features=anomaly)


def test_label_counts_per_level_and_kind():
    counts = label_counts(_prep())
    assert counts[0] == {"fibers_labelled": 4, "images_without_labelled": 0, "images_labelled": 1,
                         "fibers_flip": 4, "images_without_flip": 0, "images_flip": 1,
                         "fibers_cutpaste": 1, "images_without_cutpaste": 0, "images_cutpaste": 1}
    # the speck covers no cell by half, but keeps the one it covers most, at every level
    assert counts[1]["fibers_labelled"] == 1 and counts[1]["fibers_cutpaste"] == 1


def test_boundary_rates_by_hand():
    prep = _prep()
    rates = boundary_rates(nn.ModuleList([Identity(), Identity()]), prep, cond_dim=4, beta=0.01, tau=0.1,
                           normalizer=10.0)
    b_n = -0.5 * math.log(2 * math.pi) / 10  # every normal fiber has the same l
    for row in rates:
        assert row["b_n"] == pytest.approx(b_n, abs=1e-6) and row["b_a"] == pytest.approx(b_n - 0.1, abs=1e-6)
        assert row["normal_above_b_n"] == 0.0  # none strictly above a boundary they sit on
    # labelled (image 0): 4 cells at x = 3, l = b_n − 0.45 < b_a; flip (image 1): 4 cells at x = 0, l = b_n
    assert rates[0]["labelled_fibers"] == 8 and rates[0]["labelled_below_b_a"] == pytest.approx(0.5)
    assert rates[0]["cutpaste_fibers"] == 1 and rates[0]["cutpaste_below_b_a"] == 0.0  # the speck's cell: x = 0
    assert rates[1]["labelled_fibers"] == 2 and rates[1]["labelled_below_b_a"] == pytest.approx(0.5)
    table = format_rates(rates, rates)
    assert "| 0 | 8 | 1 | 50 % → 50 % | 0 % → 0 % | 0 % → 0 % |" in table
    empty = dict(rates[0], cutpaste_fibers=0, cutpaste_below_b_a=None)  # a group without fibers: a dash
    assert "| 0 | 8 | 0 | 50 % → 50 % | – → – | 0 % → 0 % |" in format_rates([empty], [empty])
