"""The 2-D toy of notebook 00 (bgad_lite/course/plane.py): the data, the three objectives, the
multi-seed measurement, and the notebook's two exercises, whose checks must FAIL plausible slips."""

from __future__ import annotations

import ast

import matplotlib
import nbformat
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bgad_lite.boundary import compute_boundaries
from bgad_lite.config import BGADError
from bgad_lite.course import exercises, plane, student
from bgad_lite.course.notebooks import notebooks_dir
from bgad_lite.flow import log_likelihood

matplotlib.use("Agg")
NOTEBOOK = "00_idea_in_2d"


# --- the data --------------------------------------------------------------------------------


def test_toy_shapes_seeds_and_clusters():
    toy = plane.make_toy(0, n_normal=300, n_labelled=7, n_test=50)
    assert toy.normals.shape == (300, 2) and toy.labelled.shape == (7, 2)
    assert toy.test_normals.shape == toy.test_seen.shape == toy.test_unseen.shape == (50, 2)
    again, other = plane.make_toy(0, n_normal=300, n_labelled=7, n_test=50), plane.make_toy(1, n_normal=300)
    assert torch.equal(again.normals, toy.normals) and not torch.equal(other.normals[:10], toy.normals[:10])
    radius = toy.normals.norm(dim=1)
    assert abs(float(radius.mean()) - 1.0) < 0.02 and (toy.normals[:, 1] > -0.4).all()  # an upper half-ring
    big = plane.make_toy(0, n_labelled=2000)
    assert torch.allclose(big.labelled.mean(0), torch.tensor(plane.SEEN_CLUSTER[0]), atol=0.01)
    assert torch.allclose(big.test_unseen.mean(0), torch.tensor(plane.UNSEEN_CLUSTER[0]), atol=0.01)


def test_normals_are_not_gaussian_their_mean_lies_off_the_data():
    normals = plane.make_toy(0).normals  # (400, 2)
    mu, cov = normals.mean(0), torch.cov(normals.T)
    g = torch.Generator().manual_seed(0)
    gaussian = mu + torch.randn(len(normals), 2, generator=g) @ torch.linalg.cholesky(cov).T  # same mean, covariance
    nearest = float((normals - mu).norm(dim=1).min())
    nearest_gaussian = float((gaussian - mu).norm(dim=1).min())
    # a Gaussian's densest point is its mean, and some sample lies close to it; no normal point does
    assert nearest > 0.1 and nearest > 3 * nearest_gaussian


# --- the losses and the training loop ----------------------------------------------------------


def test_bgad_lowers_anomalies_above_b_a_and_raises_normals_below_b_n():
    toy = plane.make_toy(0, n_normal=200)
    start = plane.fit(plane.toy_flow(0, n_blocks=2), toy.normals, None, "ml", 30)
    anomalies = plane.cluster(6, (0.0, 0.75), 0.03, torch.Generator().manual_seed(0))  # at the band's inner edge
    x = torch.cat([toy.normals, anomalies])
    is_anomaly = torch.arange(len(x)) >= len(toy.normals)
    with torch.no_grad():
        logp0 = plane.toy_logp(start, x)
    b_n, b_a = compute_boundaries(logp0, is_anomaly, 0.05, 0.1, 10.0)
    pulled, pushed = plane.touched(logp0 / 10.0, is_anomaly, b_n, b_a)
    assert pushed.sum() == 6 and pulled.sum() >= 10
    after = {}
    for objective in ("unsupervised", "bgad"):
        flow = plane.fit(start, toy.normals, anomalies, objective, 40, beta=0.05)
        with torch.no_grad():
            after[objective] = plane.toy_logp(flow, x)
    # against the same steps without the BG-SPP terms: the pushed points went down, the pulled ones up
    assert float((after["bgad"][pushed] - after["unsupervised"][pushed]).mean()) < 0
    assert float((after["bgad"][pulled] - after["unsupervised"][pulled]).mean()) > 0
    fresh = plane.toy_flow(0, n_blocks=2)
    assert any(not torch.equal(p, q) for p, q in zip(start.parameters(), fresh.parameters()))  # phase 1 trained,
    plane.fit(fresh, toy.normals, anomalies, "bgad", 2)
    again = plane.toy_flow(0, n_blocks=2)
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), again.parameters()))  # the flow passed in did not


def test_one_bgad_step_on_free_log_likelihoods_moves_exactly_the_touched_points():
    # a "model" whose outputs are the logp themselves: one SGD step of bgad minus one of unsupervised
    # is the BG-SPP gradient alone — down for anomalies at or above b_a, up for normals at or below b_n
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0, -1.0, -2.5, -6.0])
    is_anomaly = torch.tensor([False] * 4 + [True] * 3)
    b_n, b_a = compute_boundaries(logp, is_anomaly, 0.25, 0.1, 10.0)
    assert (float(b_n), float(b_a)) == pytest.approx((-0.3, -0.4))
    moved = {}
    for objective in ("unsupervised", "bgad"):
        p = logp.clone().requires_grad_(True)
        plane.phase2_loss(p, is_anomaly, objective, beta=0.25).backward()
        moved[objective] = (logp - 0.1 * p.grad)  # one SGD step, lr 0.1
    delta = (moved["bgad"] - moved["unsupervised"]).tolist()
    # normals -0.1, -0.2 above b_n: untouched; -0.3 (on b_n) and -0.4 pulled up by lr / (N · 2)
    assert delta[:4] == pytest.approx([0.0, 0.0, 0.005, 0.005], abs=1e-6)
    # anomalies -0.1 and -0.25 above b_a pushed down by lr / (N · 2); -0.6 below b_a untouched
    assert delta[4:] == pytest.approx([-0.005, -0.005, 0.0], abs=1e-6)


def test_phase2_loss_matches_the_library_losses_and_refuses_unknown_objectives():
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0, -1.5, -6.0])
    is_anomaly = torch.tensor([False, False, False, False, True, True])
    from bgad_lite.losses import bg_spp_loss, ml_loss, naive_push_loss

    ml = ml_loss(logp[~is_anomaly])
    assert torch.equal(plane.phase2_loss(logp, is_anomaly, "unsupervised"), ml)
    assert torch.allclose(plane.phase2_loss(logp, is_anomaly, "naive_push", lam=2.0),
                          ml + 2.0 * naive_push_loss(logp, is_anomaly, 10.0))
    b_n, b_a = compute_boundaries(logp, is_anomaly, 0.25, 0.1, 10.0)  # b_n = -0.3 (the second lowest normal)
    pull, push = bg_spp_loss(logp, is_anomaly, b_n, b_a, 10.0)
    assert torch.allclose(plane.phase2_loss(logp, is_anomaly, "bgad", beta=0.25), ml + pull + push)
    with pytest.raises(BGADError, match="objective"):
        plane.phase2_loss(logp, is_anomaly, "bg-spp")


def test_touched_reads_the_gradient_ties_included_and_empty_selections():
    l = torch.tensor([-0.5, -0.25, -0.75, -0.75, -0.5, -1.0])  # exact in binary: ties are ties
    a = torch.tensor([False, False, False, True, True, True])
    pulled, pushed = plane.touched(l, a, -0.5, -0.75)
    assert pulled.tolist() == [True, False, True, False, False, False]  # the normal on b_n is pulled
    assert pushed.tolist() == [False, False, False, True, True, False]  # the anomaly on b_a is pushed
    pulled, pushed = plane.touched(l[:3], a[:3], -0.9, -1.0)  # nothing below b_n, no anomaly at all
    assert not pulled.any() and not pushed.any()


# --- measuring ---------------------------------------------------------------------------------


class _Identity(torch.nn.Module):
    """A "flow" z = x: logp is a known function of the distance to the origin."""

    def forward(self, x, c):
        return x, torch.zeros(len(x))


def test_measure_scores_by_minus_logp_against_the_test_normals():
    g = torch.Generator().manual_seed(0)
    near = torch.randn(60, 2, generator=g) * 0.5
    toy = plane.Toy(normals=torch.randn(100, 2, generator=g), labelled=torch.zeros(1, 2), test_normals=near,
                    test_seen=near + 10.0, test_unseen=torch.randn(60, 2, generator=g))
    out = plane.measure(_Identity(), toy, beta=0.1, normalizer=10.0)
    assert out["seen"] == 1.0  # far from the origin: lower logp, higher score
    def score(x):
        return -log_likelihood(x, torch.zeros(len(x))).numpy()

    y = np.r_[np.zeros(60), np.ones(60)]
    assert out["unseen"] == pytest.approx(roc_auc_score(y, np.r_[score(near), score(toy.test_unseen)]))
    logp_normals = log_likelihood(toy.normals, torch.zeros(len(toy.normals)))
    assert out["b_n"] == pytest.approx(float(compute_boundaries(logp_normals, None, 0.1, 0.1, 10.0)[0]))


def test_per_seed_table_gives_one_row_of_aurocs_per_seed():
    rows, runs = plane.per_seed_table([3, 4], steps1=5, steps2=3, n_labelled=4)
    assert [r["seed"] for r in rows] == [3, 4] and set(runs) == {3, 4}
    for r in rows:
        toy, flows = runs[r["seed"]]
        assert set(flows) == {"phase 1", *plane.OBJECTIVES} and len(toy.labelled) == 4
        for o in plane.OBJECTIVES:  # each row holds what measure() says of that seed's flows
            assert {k: r[f"{o} {k}"] for k in ("seen", "unseen", "b_n")} == plane.measure(flows[o], toy)


def test_median_seed_and_disagreements_on_hand_made_rows():
    def row(seed, unsup, naive, bgad, bn=(-0.2, -0.3, -0.1)):
        return {"seed": seed, "unsupervised seen": 0.9, "naive_push seen": 0.95, "bgad seen": 0.96,
                "unsupervised unseen": unsup, "naive_push unseen": naive, "bgad unseen": bgad,
                "unsupervised b_n": bn[0], "naive_push b_n": bn[1], "bgad b_n": bn[2]}

    rows = [row(0, 0.9, 0.8, 0.85), row(1, 0.9, 0.8, 0.95), row(2, 0.9, 0.92, 0.91, (-0.2, -0.1, -0.3))]
    assert plane.median_seed(rows) == 2  # gains -0.05, +0.05, +0.01
    d = plane.disagreements(rows)
    assert d["bgad ≥ naive_push on unseen"] == [2] and d["bgad ≥ unsupervised on unseen"] == [0]
    assert d["bgad ≥ unsupervised on seen"] == [] and d["b_n of bgad ≥ b_n of unsupervised"] == [2]
    assert d["b_n of naive_push ≤ b_n of unsupervised"] == [2]


def test_figure_draws_both_boundaries_from_the_training_normals():
    toy = plane.make_toy(0, n_normal=100)
    flow = plane.toy_flow(0, n_blocks=2)
    fig = plane.figure({o: flow for o in plane.OBJECTIVES}, toy)
    assert len(fig.axes) == 6
    import matplotlib.pyplot as plt

    fig2, ax = plt.subplots()
    with torch.no_grad():
        expected = compute_boundaries(plane.toy_logp(flow, toy.normals), None, 0.01, 0.1, 10.0)
    assert plane.draw(ax, flow, toy, boundaries=True) == pytest.approx(tuple(float(b) for b in expected))
    assert plane.draw(ax, flow, toy, boundaries=False) is None
    plt.close(fig)
    plt.close(fig2)


# --- the two exercises of notebook 00: the reference passes, a plausible slip FAILs -------------


def _exercise(exercise: str, function: str, slip: tuple[str, str] | None = None):
    """The function of ``exercise`` from the solution notebook, or with ``slip = (old, new)`` a wrong answer."""
    nb = nbformat.read(notebooks_dir() / f"{NOTEBOOK}.ipynb", as_version=4)
    cell = student.solution_cells(nb, NOTEBOOK)[exercise]
    node = next(n for n in ast.parse(cell).body if isinstance(n, ast.FunctionDef) and n.name == function)
    source = ast.get_source_segment(cell, node)
    if slip is not None:
        assert slip[0] in source, f"{exercise}: the solution no longer contains {slip[0]!r}; update this test"
        source = source.replace(*slip)
    namespace = {"torch": torch, "math": __import__("math")}
    exec(source, namespace)  # noqa: S102 the notebook's own solution
    return namespace[function]


def test_exercise_00_1_b_n_of_fails_for_the_wrong_index():
    logp = torch.randn(400, generator=torch.Generator().manual_seed(0)) - 2.0
    hundred = torch.arange(100.0)
    cases = [((logp, 0.01, 10.0), compute_boundaries(logp, None, 0.01, 0.1, 10.0)[0]),
             ((logp[:333], 0.05, 10.0), compute_boundaries(logp[:333], None, 0.05, 0.1, 10.0)[0]),
             ((hundred, 0.29, 1.0), compute_boundaries(hundred, None, 0.29, 0.1, 1.0)[0])]

    def run(f):
        return exercises.check_cases("00.1", f, cases)

    assert run(_exercise("00.1", "b_n_of")) == "pass"
    slips = [(" + 1e-9)", ")"),  # int(0.29 * 100) = 28
             ("int(beta * len(l) + 1e-9)", "int(beta * len(l) + 1e-9) - 1"),  # one index too low
             ("int(beta * len(l) + 1e-9)", "math.ceil(beta * len(l))"),  # ⌈β·n⌉
             ("torch.sort(logp_normal).values", "torch.sort(logp_normal, descending=True).values")]
    for slip in slips:
        assert run(_exercise("00.1", "b_n_of", slip)) == "FAIL", slip
    def quantile(logp, beta, n):  # interpolates between two sorted values
        return torch.quantile(logp / n, beta)

    assert run(quantile) == "FAIL"


def test_exercise_00_2_touched_points_fails_for_strict_inequalities():
    hand = (torch.tensor([-0.5, -0.25, -0.75, -0.75, -0.5, -1.0]), torch.tensor([False] * 3 + [True] * 3), -0.5, -0.75)
    logp = torch.cat([torch.randn(200, generator=torch.Generator().manual_seed(1)) - 2.0, torch.tensor([-2.0, -9.0])])
    a = torch.arange(202) >= 200
    b_n, b_a = compute_boundaries(logp, a, 0.01, 0.1, 10.0)
    toyish = (logp / 10.0, a, b_n, b_a)  # one normal lies exactly on b_n
    cases = [(hand, plane.touched(*hand)), (toyish, plane.touched(*toyish))]

    def run(f):
        return exercises.check_cases("00.2", f, cases)

    assert run(_exercise("00.2", "touched_points")) == "pass"
    for slip in [("l <= b_n", "l < b_n"), ("l >= b_a", "l > b_a"), ("~is_anomaly & (l <= b_n)", "(l <= b_n)")]:
        assert run(_exercise("00.2", "touched_points", slip)) == "FAIL", slip
