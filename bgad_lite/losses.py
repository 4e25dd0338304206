"""Step 4 — the losses: maximum likelihood, and the boundary-guided semi-push-pull.

All functions take per-dimension log-likelihoods ``logp`` (see ``flow.log_likelihood``)
and return scalar tensors. An empty selection gives exactly 0, never NaN
(``torch.mean`` of an empty tensor is NaN — a bug of the official code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (optionally weighted); 0 for an empty tensor."""
    if values.numel() == 0:
        return values.sum()  # 0.0, keeps dtype, device and the graph
    if weights is None:
        return values.mean()
    return (values * weights).mean()


def ml_loss(logp: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Maximum-likelihood loss on normal fibers, in the official code's form:

        L_ml = mean( −log σ(logp) )

    which, like −logp, rewards a high log-likelihood, but saturates once logp ≫ 0.
    """
    return _weighted_mean(-F.logsigmoid(logp), weights)


def bg_spp_loss(logp: torch.Tensor, is_anomaly: torch.Tensor, b_n: torch.Tensor | float,
                b_a: torch.Tensor | float, normalizer: float,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary-guided semi-push-pull loss; returns (pull, push).

    With l = logp / N:

        pull = mean over normal fibers with l ≤ b_n of (b_n − l)
        push = mean over anomalous fibers with l ≥ b_a of (l − b_a)

    Normals below b_n are pulled up over the boundary; anomalies above b_a are
    pushed down below it. Anomalies are never pulled towards each other ("semi"),
    and nothing pushes an anomaly further once it is below b_a, so the model is
    not fitted to the seen anomaly types. BGAD's total loss is
    L = L_ml(normals) + λ·(pull + push).

    logp (M,), is_anomaly (M,) bool, weights (M,) or None.
    """
    l = logp / normalizer
    a = is_anomaly.bool()
    sel_n = ~a & (l <= b_n)
    sel_a = a & (l >= b_a)
    w_n = None if weights is None else weights[sel_n]
    w_a = None if weights is None else weights[sel_a]
    pull = _weighted_mean(b_n - l[sel_n], w_n)
    push = _weighted_mean(l[sel_a] - b_a, w_a)
    return pull, push


def naive_push_loss(logp: torch.Tensor, is_anomaly: torch.Tensor, normalizer: float) -> torch.Tensor:
    """The comparison baseline: a plain supervised objective with no boundary.

        L = mean over anomalous fibers of −log σ(−l),   l = logp / N

    Its gradient with respect to l is σ(l): it fades as l → −∞ but is never zero, so it
    keeps lowering every labelled anomaly, ever more slowly, with no boundary and no
    margin — which fits the model to the seen anomaly types, the bias BGAD avoids.
    (Added to the ML loss on normals by the trainer.)
    """
    l = logp[is_anomaly.bool()] / normalizer
    return _weighted_mean(-F.logsigmoid(-l), None)


def focal_weights(logp: torch.Tensor, is_anomaly: torch.Tensor, normalizer: float = 10.0) -> torch.Tensor:
    """Asymmetric focal weighting (official ``--focal_weighting``), on detached l = logp / N:

        normal:    1 if l > −0.2, else 11.7·(1 − eˡ)^0.5·|l|
        anomalous: 1 if l ≤ −1,   else 0.53·(1 + eˡ)²/|l|

    Hard normals (low l) and hard anomalies (high l) get larger weights.
    """
    l = logp.detach() / normalizer
    a = is_anomaly.bool()
    w_normal = torch.where(l > -0.2, torch.ones_like(l), 11.7 * (1 - torch.exp(l)).clamp_min(0).sqrt() * l.abs())
    w_anom = torch.where(l <= -1, torch.ones_like(l), 0.53 * (1 + torch.exp(l)) ** 2 / l.abs().clamp_min(1e-6))
    return torch.where(a, w_anom, w_normal)
