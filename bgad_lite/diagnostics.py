"""Does phase 2 learn? Counts and rates that answer it, per level.

Two things can keep the few labels from reaching the model:

1. **They vanish.** Fiber labels come from the pixel masks downsampled to each
   level (:func:`~bgad_lite.flow.fiber_labels`). A pit of 5 × 5 px covers no 16 × 16 cell
   of the coarsest level by half; it keeps the one cell it covers most.
   :func:`label_counts` counts, per level, the anomalous fibers of the labelled
   anomalies, their flips and the CutPastes, and how many images keep none.
2. **They are not pushed far enough.** With l = logp / N and the boundaries from the
   training normals (b_n: β-quantile, b_a = b_n − τ), BG-SPP wants every anomalous
   fiber below b_a and every normal fiber above b_n. :func:`boundary_rates` measures
   both fractions; run it on the phase-1 flows and on the phase-2 flows to see
   what phase 2 changed.
"""

from __future__ import annotations

import numpy as np
import torch

from .boundary import boundaries_from_normals
from .explore.tables import markdown_table
from .flow import fiber_labels, flow_logp, positional_encoding_2d

KINDS = ("labelled", "flip", "cutpaste")


def _level_masks(prep) -> list[torch.Tensor]:
    """Anomalous-fiber masks of the synthesised anomaly images, per level: L x (N_anom, H_l, W_l)."""
    masks = torch.from_numpy(prep.anomaly_masks)  # (n_anom, h, w)
    return [fiber_labels(masks, f.shape[2], f.shape[3])[0] for f in prep.anomaly_features]


def label_counts(prep) -> list[dict]:
    """Per level: anomalous fibers of each kind, and images of each kind left with none."""
    kinds = np.asarray(prep.anomaly_kinds)
    out = []
    for m in _level_masks(prep):
        per_image = m.reshape(len(m), -1).sum(1).numpy()  # (N_anom,)
        row = {}
        for k in KINDS:
            sel = kinds == k
            if sel.any():
                row[f"fibers_{k}"] = int(per_image[sel].sum())
                row[f"images_without_{k}"] = int((per_image[sel] == 0).sum())
                row[f"images_{k}"] = int(sel.sum())
        out.append(row)
    return out


@torch.no_grad()
def boundary_rates(flows, prep, cond_dim: int, beta: float, tau: float, normalizer: float, device: str = "cpu",
                   train_logps: list[torch.Tensor] | None = None) -> list[dict]:
    """Per level: b_n, b_a from all normal training fibers (β, τ, N), and the fractions of
    labelled (+ flipped) and CutPaste anomalous fibers below b_a and of normal
    training fibers above b_n. Empty groups give ``None``.

    ``train_logps``: the flows' logp of the training fibers, J x (n_train, H_j, W_j), when
    already computed (``pipeline.evaluate`` returns them), so they are not computed again.
    """
    kinds = np.asarray(prep.anomaly_kinds)
    real = torch.from_numpy(np.isin(kinds, ("labelled", "flip")))  # (n_anom,)
    out = []
    for j, (flow, ft, fa, m) in enumerate(zip(flows, prep.train_features, prep.anomaly_features, _level_masks(prep))):
        pos = positional_encoding_2d(cond_dim, ft.shape[2], ft.shape[3])
        l_train = (flow_logp(flow, ft, pos, device=device) if train_logps is None
                   else train_logps[j]).reshape(-1)  # (n_train·H·W,)
        b_n, b_a = boundaries_from_normals(l_train, beta, tau, normalizer)
        l_anom = flow_logp(flow, fa, pos, device=device) / normalizer  # (N_anom, H, W)
        row = {"b_n": b_n, "b_a": b_a, "normal_above_b_n": float((l_train / normalizer > b_n).float().mean())}
        for name, sel in (("labelled", real), ("cutpaste", ~real)):
            l = l_anom[sel][m[sel]]  # anomalous fibers of that kind
            row[f"{name}_fibers"] = int(l.numel())
            row[f"{name}_below_b_a"] = float((l < b_a).float().mean()) if l.numel() else None
        out.append(row)
    return out


def format_rates(before: list[dict], after: list[dict]) -> str:
    """A markdown table: per level, the rates before and after phase 2."""
    def pct(v):
        return "–" if v is None else f"{100 * v:.0f} %"

    rows = [[lvl, b["labelled_fibers"], b["cutpaste_fibers"],
             f"{pct(b['labelled_below_b_a'])} → {pct(a['labelled_below_b_a'])}",
             f"{pct(b['cutpaste_below_b_a'])} → {pct(a['cutpaste_below_b_a'])}",
             f"{pct(b['normal_above_b_n'])} → {pct(a['normal_above_b_n'])}"] for lvl, (b, a) in enumerate(zip(before, after))]
    return markdown_table(rows, ["level", "labelled fibers", "CutPaste fibers", "labelled < b_a", "CutPaste < b_a",
                                 "normals > b_n"])
