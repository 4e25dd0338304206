"""BGAD in the plane: a 2-D toy that shows the idea in one picture (notebook 00).

Normal points lie on a crescent, a curved band that no single Gaussian fits. A small flow
(:func:`bgad_lite.build_flow` with C = 2 channels) learns its density. The flow takes a condition;
here it is a constant zero vector of ``COND_DIM`` numbers that carries no information (its
length only sets the width of the coupling subnets, 2·(1 + P) hidden units). With the
per-dimension log-likelihood logp = log p(x) / C and the normalizer N,

    l(x) = logp(x) / N,    b_n = l_(⌊β·n⌋) of the n sorted normal values,    b_a = b_n − τ,

and phase 2 trains, from the same phase-1 flow, one of three objectives (the library's names):

    "unsupervised":  L = L_ml(normals)
    "naive_push":    L = L_ml(normals) + λ·mean over anomalies of −log σ(−l)
    "bgad":          L = L_ml(normals) + λ·(pull + push),
                     pull = mean over normals with l ≤ b_n of (b_n − l),
                     push = mean over anomalies with l ≥ b_a of (l − b_a).

Every step sees the whole training set (one batch), so the official per-batch boundary is here
the boundary of all n normals, recomputed at every step. The anomalies are a few labelled points
of one cluster ("seen"); a second cluster ("unseen") never reaches training. Every random draw
comes from a seed; nothing global is changed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..boundary import compute_boundaries
from ..config import BGADError
from ..explore.margins import NORMAL, SEEN, UNSEEN
from ..explore.plots import COLORS
from ..flow import build_flow, log_likelihood
from ..losses import bg_spp_loss, ml_loss, naive_push_loss
from ..metrics import image_auroc
from ..runtime import torch_threads

#: Length P of the zero condition: it sets the subnet width (2·(1 + P) hidden units), nothing else.
COND_DIM = 15
#: The phase-2 objectives, in the order of every table and figure.
OBJECTIVES = ("unsupervised", "naive_push", "bgad")
#: Centre (x, y) and spread (standard deviation) of each anomaly cluster.
SEEN_CLUSTER = ((0.0, 0.64), 0.07)  # in the soft inner edge of the band, at its top
UNSEEN_CLUSTER = ((0.27, 0.69), 0.06)  # the same edge, a little to the right; never labelled
#: (x_min, x_max, y_min, y_max) of the whole plane, and of the close-up on the two clusters.
EXTENT, ZOOM = (-1.6, 1.6, -0.45, 1.55), (-0.35, 0.6, 0.35, 1.0)
_BOX = {"fc": "white", "alpha": 0.8, "lw": 0}  # behind the numbers printed on a panel


@dataclass(frozen=True)
class Toy:
    """One draw of the toy: training and test points, each (n, 2)."""

    normals: torch.Tensor  # (n_normal, 2) training normals
    labelled: torch.Tensor  # (k, 2) the labelled anomalies, all from the seen cluster
    test_normals: torch.Tensor  # (n_test, 2)
    test_seen: torch.Tensor  # (n_test, 2) more points of the seen cluster
    test_unseen: torch.Tensor  # (n_test, 2) the cluster no label came from


def crescent(n: int, gen: torch.Generator, width: float = 0.1) -> torch.Tensor:
    """n points of the upper half-ring: θ ~ U(0, π), radius 1 + width·ε with ε ~ N(0, 1) -> (n, 2).

    Its mean, near (0, 0.64), lies in the empty middle of the ring, where no normal point is.
    """
    theta = torch.rand(n, generator=gen) * math.pi  # (n,)
    r = 1.0 + width * torch.randn(n, generator=gen)  # (n,)
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)  # (n, 2)


def cluster(n: int, centre, spread: float, gen: torch.Generator) -> torch.Tensor:
    """n points of an isotropic Gaussian blob -> (n, 2)."""
    return torch.tensor(centre, dtype=torch.float32) + spread * torch.randn(n, 2, generator=gen)


def make_toy(seed: int, n_normal: int = 400, n_labelled: int = 20, n_test: int = 400) -> Toy:
    """Normals on the crescent, ``n_labelled`` labelled points of the seen cluster, and the test sets."""
    gen = torch.Generator().manual_seed(seed)
    return Toy(crescent(n_normal, gen), cluster(n_labelled, *SEEN_CLUSTER, gen), crescent(n_test, gen),
               cluster(n_test, *SEEN_CLUSTER, gen), cluster(n_test, *UNSEEN_CLUSTER, gen))


def toy_flow(seed: int, n_blocks: int = 6):
    """The library's flow for 2-D points: ``build_flow(2, COND_DIM, n_blocks, seed=seed)``."""
    return build_flow(2, COND_DIM, n_blocks, seed=seed)


def toy_logp(flow, x: torch.Tensor) -> torch.Tensor:
    """Per-dimension log-likelihood of points under the flow, (M, 2) -> (M,), with the zero condition."""
    z, log_jac_det = flow(x, c=[x.new_zeros(len(x), COND_DIM)])  # (M, 2), (M,)
    return log_likelihood(z, log_jac_det)


def phase2_loss(logp: torch.Tensor, is_anomaly: torch.Tensor, objective: str, beta: float = 0.01,
                tau: float = 0.1, normalizer: float = 10.0, lam: float = 1.0) -> torch.Tensor:
    """The loss of one objective on logp (M,) and is_anomaly (M,) bool; "ml" = "unsupervised"."""
    loss = ml_loss(logp[~is_anomaly])  # normals only
    if objective == "naive_push":
        loss = loss + lam * naive_push_loss(logp, is_anomaly, normalizer)
    elif objective == "bgad":
        b_n, b_a = compute_boundaries(logp, is_anomaly, beta, tau, normalizer)  # from the normals alone
        pull, push = bg_spp_loss(logp, is_anomaly, b_n, b_a, normalizer)
        loss = loss + lam * (pull + push)
    elif objective not in ("ml", "unsupervised"):
        raise BGADError(f"objective must be 'ml' or one of {OBJECTIVES}, got {objective!r}.")
    return loss


def fit(flow, normals: torch.Tensor, anomalies: torch.Tensor | None, objective: str, steps: int,
        lr: float = 5e-3, **loss_args):
    """A trained deep copy of ``flow`` (the one passed in is unchanged): ``steps`` full-batch Adam
    steps on :func:`phase2_loss`. normals (n, 2), anomalies (k, 2) or None; ``loss_args``: β, τ, N, λ."""
    flow = copy.deepcopy(flow)
    x = normals if anomalies is None else torch.cat([normals, anomalies])  # (n + k, 2)
    is_anomaly = torch.arange(len(x)) >= len(normals)  # (n + k,) the anomalies come last
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    with torch_threads(1):  # steps this small run fastest on one thread
        for _ in range(steps):
            loss = phase2_loss(toy_logp(flow, x), is_anomaly, objective, **loss_args)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return flow


def touched(l: torch.Tensor, is_anomaly: torch.Tensor, b_n, b_a) -> tuple[torch.Tensor, torch.Tensor]:
    """Which points the pull and the push act on, read off the gradients of :func:`bgad_lite.bg_spp_loss`.

    l (M,), is_anomaly (M,) bool -> (pulled, pushed), each (M,) bool: a point is touched by a term
    when that term's gradient with respect to its l is not zero (``bg_spp_loss`` on l with N = 1).
    """
    l = l.detach().clone().requires_grad_(True)
    grads = []
    for term in bg_spp_loss(l, is_anomaly, b_n, b_a, normalizer=1.0):  # (pull, push)
        g = torch.autograd.grad(term, l, allow_unused=True, retain_graph=True)[0] if term.requires_grad else None
        grads.append(torch.zeros_like(l) if g is None else g)
    return grads[0] != 0, grads[1] != 0


@torch.no_grad()
def grid_l(flow, normalizer: float = 10.0, extent=EXTENT, resolution: int = 110):
    """l = logp / N on a grid over ``extent`` -> (X, Y, L), each (resolution, resolution) NumPy."""
    gx, gy = torch.meshgrid(torch.linspace(*extent[:2], resolution), torch.linspace(*extent[2:], resolution),
                            indexing="xy")  # (R, R) each: row = y, column = x
    l = toy_logp(flow, torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)) / normalizer  # (R·R,)
    return gx.numpy(), gy.numpy(), l.reshape(gx.shape).numpy()


@torch.no_grad()
def measure(flow, toy: Toy, beta: float = 0.01, normalizer: float = 10.0) -> dict[str, float]:
    """AUROC of the score −logp, the test normals against the seen and against the unseen test points,
    and b_n of the training normals (how far down the normals' lowest β reach)."""
    normal = -toy_logp(flow, toy.test_normals).numpy()  # (n_test,) higher = more anomalous
    out = {"b_n": float(compute_boundaries(toy_logp(flow, toy.normals), None, beta, 0.1, normalizer)[0])}
    for group, x in (("seen", toy.test_seen), ("unseen", toy.test_unseen)):
        s = -toy_logp(flow, x).numpy()
        out[group] = image_auroc(np.r_[normal, s], np.r_[np.zeros(len(normal)), np.ones(len(s))])
    return out


def run_seed(seed: int, steps1: int = 400, steps2: int = 300, lr: float = 5e-3, n_labelled: int = 20, **loss_args):
    """Phase 1 (ML on normals), then each phase-2 objective from it, for one seed -> (toy, flows {"phase 1",
    *OBJECTIVES}, table {objective: {"seen": AUROC, "unseen": AUROC, "b_n": b_n of the training normals}})."""
    toy = make_toy(seed, n_labelled=n_labelled)
    flows = {"phase 1": fit(toy_flow(seed), toy.normals, None, "ml", steps1, lr)}
    for objective in OBJECTIVES:
        flows[objective] = fit(flows["phase 1"], toy.normals, toy.labelled, objective, steps2, lr, **loss_args)
    beta, normalizer = loss_args.get("beta", 0.01), loss_args.get("normalizer", 10.0)
    return toy, flows, {o: measure(flows[o], toy, beta, normalizer) for o in OBJECTIVES}


def per_seed_table(seeds=range(5), **kwargs) -> tuple[list[dict], dict]:
    """:func:`run_seed` for every seed -> (rows, runs): rows [{"seed": s, "<objective> <key>": value}] for
    each objective and key ("seen", "unseen": AUROC; "b_n"); runs {seed: (toy, flows)} for the figures."""
    rows, runs = [], {}
    for seed in seeds:
        toy, flows, table = run_seed(seed, **kwargs)
        rows.append({"seed": seed, **{f"{o} {k}": v for o in OBJECTIVES for k, v in table[o].items()}})
        runs[seed] = (toy, flows)
    return rows, runs


def median_seed(rows: list[dict]) -> int:
    """The seed whose BG-SPP gain on the unseen cluster (over unsupervised) is the median of the rows."""
    gains = sorted((r["bgad unseen"] - r["unsupervised unseen"], r["seed"]) for r in rows)
    return gains[(len(gains) - 1) // 2][1]


def disagreements(rows: list[dict]) -> dict[str, list[int]]:
    """The seeds where a claim of notebook 00 does *not* hold (a ≥ b fails), per claim."""
    claims = {"bgad ≥ naive_push on unseen": ("bgad unseen", "naive_push unseen"),
              "bgad ≥ unsupervised on unseen": ("bgad unseen", "unsupervised unseen"),
              "bgad ≥ unsupervised on seen": ("bgad seen", "unsupervised seen"),
              "b_n of bgad ≥ b_n of unsupervised": ("bgad b_n", "unsupervised b_n"),
              "b_n of naive_push ≤ b_n of unsupervised": ("unsupervised b_n", "naive_push b_n")}
    return {claim: [r["seed"] for r in rows if r[a] < r[b]] for claim, (a, b) in claims.items()}


def draw(ax, flow, toy: Toy, title: str = "", extent=EXTENT, boundaries: bool = True, beta: float = 0.01,
         tau: float = 0.1, normalizer: float = 10.0, floor: float = -1.0):
    """Shaded l = logp / N (l < ``floor`` drawn at ``floor``; its share of the view is in the legend), the
    b_n and b_a contours with the margin between them, the points; returns (b_n, b_a) or None."""
    gx, gy, l = grid_l(flow, normalizer, extent)
    shades = np.linspace(floor, max(l.max(), floor + 1e-3), 16)
    ax.contourf(gx, gy, np.maximum(l, floor), levels=shades, cmap="Greys")
    bounds = None
    if boundaries:
        with torch.no_grad():
            logp = toy_logp(flow, toy.normals)  # (n,) the training normals decide the boundary
        b_n, b_a = bounds = tuple(float(b) for b in compute_boundaries(logp, None, beta, tau, normalizer))
        ax.contourf(gx, gy, l, levels=[b_a, b_n], colors=[COLORS["margin"]], alpha=0.45)
        ax.contour(gx, gy, l, levels=[b_n], colors=[COLORS[NORMAL]], linestyles="--", linewidths=1.3)
        ax.contour(gx, gy, l, levels=[b_a], colors=[COLORS["anomalous"]], linestyles="--", linewidths=1.3)
        ax.plot([], [], color=COLORS[NORMAL], ls="--", label="$b_n$ (β-quantile of the normals' l)")
        ax.plot([], [], color=COLORS["anomalous"], ls="--", label="$b_a = b_n - τ$")
        ax.fill_between([], [], color=COLORS["margin"], alpha=0.45, label="margin τ")
        ax.text(0.02, 0.02, f"$b_n$ = {b_n:.3f}, $b_a$ = {b_a:.3f}", transform=ax.transAxes, fontsize=7,
                bbox=_BOX)
    ax.scatter(*toy.normals.T, s=3, color=COLORS[NORMAL], label="normal (training)")
    ax.scatter(*toy.test_seen.T, s=3, color=COLORS[SEEN], alpha=0.25, label="seen (test)")
    ax.scatter(*toy.test_unseen.T, s=3, color=COLORS[UNSEEN], alpha=0.25, label="unseen (test)")
    ax.scatter(*toy.labelled.T, s=28, marker="x", color=COLORS[SEEN], label=f"labelled seen ({len(toy.labelled)})")
    ax.text(0.98, 0.02, f"l < {floor} (drawn white): {100 * (l < floor).mean():.0f}% of the view", ha="right",
            transform=ax.transAxes, fontsize=7, bbox=_BOX)
    ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal")
    ax.set_title(title, fontsize=9)
    return bounds


def figure(flows: dict, toy: Toy, table: dict | None = None, names=OBJECTIVES, zoom: bool = True, **draw_args):
    """One column per flow in ``names`` (the whole plane, and with ``zoom`` the close-up below it),
    AUROCs from ``table`` in the titles; returns the Figure."""
    rows = (EXTENT, ZOOM) if zoom else (EXTENT,)
    fig, axes = plt.subplots(len(rows), len(names), figsize=(4.2 * len(names) + 1.8, 3.1 * len(rows)), squeeze=False)
    for j, name in enumerate(names):
        title = name if not table or name not in table else \
            f"{name}: AUROC seen {table[name]['seen']:.3f}, unseen {table[name]['unseen']:.3f}"
        for i, extent in enumerate(rows):
            draw(axes[i, j], flows[name], toy, title if i == 0 else f"{name}, close-up", extent, **draw_args)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig
