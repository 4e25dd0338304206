"""The course kit's machinery: exercise checks that can fail and never raise, training steps by
hand against train_flows, concept questions, student copies, slide figures."""

from __future__ import annotations

import ast
import copy
import dataclasses
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from oracles import prose_words
from bgad_lite.course import exercises, student
from bgad_lite.boundary import compute_boundaries
from bgad_lite.config import BGADConfig, BGADError
from bgad_lite.flow import build_flow, log_likelihood, positional_encoding_2d, to_fibers
from bgad_lite.losses import bg_spp_loss, focal_weights, ml_loss, naive_push_loss
from bgad_lite.flow import LevelData
from bgad_lite import flow as flow_module
from bgad_lite.course.notebooks import NOTEBOOKS, notebooks_dir
from bgad_lite.explore import margins
from bgad_lite.scoring import SCORE_TOP, image_scores


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_check_passes_fails_with_what_differed_and_never_raises(capsys):
    ref = torch.tensor([1.0, 2.0, 3.0])
    assert exercises.check("9.1", lambda: ref.clone(), ref, "same") == "pass"
    assert exercises.check("9.1", lambda: ref * 2, ref, "doubled") == "FAIL"
    line = _last_line(capsys)
    assert line.startswith("[exercise 9.1] FAIL") and "expected 3" in line and "got 6" in line
    assert exercises.check("9.1", lambda: ref[:2], ref) == "FAIL"
    assert "shape (3,) expected, got (2,)" in _last_line(capsys)
    assert exercises.check("9.1", lambda: None, ref) == "FAIL"
    assert "None" in _last_line(capsys)

    def crashes():
        raise IndexError("index 7 is out of bounds")

    assert exercises.check("9.1", crashes, ref) == "FAIL"
    assert "IndexError: index 7" in _last_line(capsys)

    def placeholder():
        # YOUR CODE HERE
        raise NotImplementedError()

    assert exercises.check("9.1", placeholder, ref, "what") == "not attempted"
    assert "the reference is used from here on" in _last_line(capsys)
    assert exercises.check("9.1", lambda: torch.tensor([1.0, float("nan"), 3.0]), ref) == "FAIL"


def test_check_compares_tuples_dicts_and_booleans(capsys):
    assert exercises.check("9.2", lambda: (0.1, 0.225), (torch.tensor(0.1), torch.tensor(0.225))) == "pass"
    assert exercises.check("9.2", lambda: (0.225, 0.1), (0.1, 0.225)) == "FAIL"
    assert "value 0" in _last_line(capsys)
    assert exercises.check("9.2", lambda: {"fpr": 0.5}, {"fpr": 0.5, "tpr_seen": 1.0}) == "FAIL"
    assert "'tpr_seen' is missing" in _last_line(capsys)
    mask = torch.tensor([True, False, True])
    assert exercises.check("9.2", lambda: ~mask, mask) == "FAIL"
    assert "3 of 3 entries differ" in _last_line(capsys)
    cases = [((1.0,), 2.0), ((2.0,), 4.0)]
    assert exercises.check_cases("9.3", lambda v: 2 * v, cases) == "pass"
    assert exercises.check_cases("9.3", lambda v: v + 1, cases) == "FAIL"
    assert "for the arguments (2.0)" in _last_line(capsys)


# --- one training step by hand, against train_flows ------------------------------------------


def _tiny(with_anomalies: bool):
    cfg = dataclasses.replace(BGADConfig(), cond_dim=8, n_blocks=2, device="cpu", seed=3)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 6, 4, 4, generator=g)  # (n, C, H, W)
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    if with_anomalies:
        feats[2, :, :2, :2] += 3.0
        masks[2, :2, :2] = True
    # float64: the hand step and train_flows then agree to ~1e-15 (Adam's first step amplifies float32 rounding)
    return cfg, build_flow(6, 8, 2, seed=1).double(), LevelData(feats.double(), masks, positional_encoding_2d(8, 4, 4).double())


def _step(flow, level, cfg, loss_of):
    flow = copy.deepcopy(flow).train()
    opt = torch.optim.Adam(flow.parameters(), lr=cfg.lr)
    x, c, a = to_fibers(level.features, level.pos, level.masks)
    z, ljd = flow(x, c=[c])
    loss = loss_of(log_likelihood(z, ljd), a)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return flow


def test_phase1_step_by_hand_matches_train_flows_and_a_wrong_loss_fails(capsys):
    cfg, flow, level = _tiny(False)
    right = lambda: _step(flow, level, cfg, lambda logp, a: ml_loss(logp))  # noqa: E731
    assert exercises.check_step("9.4", right, flow, level, "ml", cfg.lr, atol=1e-10) == "pass"
    wrong = lambda: _step(flow, level, cfg, lambda logp, a: -logp.mean())  # noqa: E731
    assert exercises.check_step("9.4", wrong, flow, level, "ml", cfg.lr) == "FAIL"
    assert "gradients differ" in _last_line(capsys)  # the gradients are compared before the parameters
    assert exercises.check_step("9.4", lambda: flow, flow, level, "ml", cfg.lr) == "FAIL"  # not stepped


def test_bgad_step_by_hand_matches_train_flows_and_a_boundary_from_all_fibers_fails(capsys):
    cfg, flow, level = _tiny(True)

    def bgad(logp, a, boundary_mask=None):
        b_n, b_a = compute_boundaries(logp, a if boundary_mask is None else boundary_mask, cfg.beta, cfg.tau,
                                      cfg.normalizer)
        pull, push = bg_spp_loss(logp, a, b_n, b_a, cfg.normalizer)
        return ml_loss(logp[~a]) + cfg.bgspp_lambda * (pull + push)

    right = lambda: _step(flow, level, cfg, bgad)  # noqa: E731
    assert exercises.check_step("9.5", right, flow, level, "bgad", cfg.lr, cfg.beta, cfg.tau, cfg.normalizer,
                                atol=1e-10) == "pass"
    cfg_hi = dataclasses.replace(cfg, beta=0.3)  # a boundary the anomalies can drag down
    wrong = lambda: _step(flow, level, cfg_hi, lambda logp, a: bgad(logp, a, torch.zeros_like(a)))  # noqa: E731
    right_hi = lambda: _step(flow, level, cfg_hi, lambda logp, a: ml_loss(logp[~a]) + sum(  # noqa: E731
        bg_spp_loss(logp, a, *compute_boundaries(logp, a, 0.3, cfg.tau, cfg.normalizer), cfg.normalizer)))
    assert exercises.check_step("9.5", right_hi, flow, level, "bgad", cfg.lr, 0.3, cfg.tau, cfg.normalizer,
                                atol=1e-10) == "pass"
    assert exercises.check_step("9.5", wrong, flow, level, "bgad", cfg.lr, 0.3, cfg.tau, cfg.normalizer) == "FAIL"


# --- concept questions ----------------------------------------------------------------------


def test_quiz_gives_immediate_feedback_and_builds_a_widget():
    q = exercises.Quiz("2 + 2?", ["3", "4"], 1, ["too small", "yes"])
    w = q.build()
    assert "2 + 2?" in w.children[0].value and len(w.children[1].children) == 2
    assert q.choose(0).startswith("<b style='color:#b22222'>Not quite") and "too small" in w.children[-1].value
    w.children[1].children[1].click()  # what a student's click does
    assert "Right." in w.children[-1].value and "yes" in w.children[-1].value
    assert "**2 + 2?**" in q._repr_markdown_()
    with pytest.raises(ValueError):
        exercises.Quiz("?", ["a"], 1)


# --- student copies -------------------------------------------------------------------------


def test_strip_solutions_keeps_indentation_and_refuses_broken_markers():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\nprint(f)"
    out = student.strip_solutions(src)
    assert out == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nprint(f)"
    assert student.strip_solutions("a\n### BEGIN SOLUTION\nanswer\n### END SOLUTION", "markdown") == "a\nYOUR ANSWER HERE"
    for broken in ("### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"):
        with pytest.raises(BGADError):
            student.strip_solutions(broken)


def test_student_copies_are_regenerated_by_one_command(tmp_path):
    from bgad_lite.cli import main

    assert main(["student", "--check"]) == 0
    written = student.write_student_copies(out_dir=tmp_path)
    assert len(written) == len(NOTEBOOKS)
    assert student.stale_student_copies(out_dir=tmp_path) == []
    written[0].write_text(written[0].read_text().replace("YOUR CODE HERE", "an answer"))
    assert student.stale_student_copies(out_dir=tmp_path) == [written[0].stem]


def test_prose_words_counts_text_not_maths_or_code():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("Two words $x^2 + y$ `code here`\n$$a = b$$"),
                                         nbformat.v4.new_code_cell("not counted at all")])
    assert prose_words(nb) == 2


# --- slide figures --------------------------------------------------------------------------


@pytest.mark.slow
def test_slides_command_writes_projector_figures(tmp_path, monkeypatch):
    from PIL import Image

    from bgad_lite.cli import main

    monkeypatch.setenv("BGAD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    out = tmp_path / "slides"
    assert main(["slides", "--out", str(out), "--cache", str(tmp_path / "cache"), "--smoke", "--dpi", "100"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["anomaly_maps.png", "boundary_histograms.png", "margin_over_epochs.png", "seen_unseen.png"]
    assert all(Image.open(out / n).size == (1280, 720) for n in names)  # 16:9 at the asked dpi
    assert "| bgad |" in (out / "README.md").read_text()


# --- a loss off by a constant factor fails the step checks -----------------------------------


def test_check_step_fails_for_a_rescaled_loss_and_for_missing_gradients(capsys):
    cfg, flow, level = _tiny(False)
    doubled = lambda: _step(flow, level, cfg, lambda logp, a: 2 * ml_loss(logp))  # noqa: E731
    assert exercises.check_step("9.6", doubled, flow, level, "ml", cfg.lr, atol=1e-6) == "FAIL"
    assert "2 times those of train_flows" in _last_line(capsys)
    summed = lambda: _step(flow, level, cfg, lambda logp, a: -torch.nn.functional.logsigmoid(logp).sum())  # noqa: E731
    assert exercises.check_step("9.6", summed, flow, level, "ml", cfg.lr, atol=1e-6) == "FAIL"
    assert "the loss is scaled" in _last_line(capsys)

    def zeroed_after_the_step():
        stepped = _step(flow, level, cfg, lambda logp, a: ml_loss(logp))
        stepped.zero_grad(set_to_none=True)
        return stepped

    assert exercises.check_step("9.6", zeroed_after_the_step, flow, level, "ml", cfg.lr) == "FAIL"
    assert "no gradients" in _last_line(capsys)


# --- every exercise of the notebooks: the reference passes, a plausible wrong answer FAILs ----
#
# Each test takes the exercise's function from its solution notebook (the reference), and a
# mutant of it (one plausible slip, made by replacing text in the solution), and runs the same
# kind of check as the notebook's check cell on small synthetic data. No notebook is executed.

def _solution_source(exercise: str, function: str) -> str:
    """The source of ``def function`` in the solution cell of ``exercise`` (markers included)."""
    name = next(n for n in NOTEBOOKS if n.startswith(exercise[:2]))
    cell = student.solution_cells(nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4), name)[exercise]
    node = next(n for n in ast.parse(cell).body if isinstance(n, ast.FunctionDef) and n.name == function)
    return ast.get_source_segment(cell, node)


def _define(exercise: str, function: str, slip: tuple[str, str] | None = None, **names):
    """The reference function of ``exercise``, or with ``slip = (old, new)`` a wrong answer."""
    source = _solution_source(exercise, function)
    if slip is not None:
        assert slip[0] in source, f"{exercise}: the solution no longer contains {slip[0]!r}; update this test"
        source = source.replace(slip[0], slip[1])
    namespace = dict(np=np, torch=torch, math=math, copy=copy, ndimage=ndimage, to_fibers=to_fibers,
                     log_likelihood=log_likelihood, ml_loss=ml_loss, compute_boundaries=compute_boundaries,
                     bg_spp_loss=bg_spp_loss, **names)
    exec(source, namespace)
    return namespace[function]


def _right_and_wrong(exercise, function, slips, run, **names):
    """``run(f)`` is the check of one candidate; the reference must pass and every slip FAIL."""
    assert run(_define(exercise, function, **names)) == "pass", f"{exercise}: the reference fails its own check"
    for slip in slips:
        assert run(_define(exercise, function, slip, **names)) == "FAIL", f"{exercise}: {slip} passes the check"


def test_exercise_01_1_fibers_of():
    feats = [torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(c)) for c, h, w in ((5, 4, 6), (7, 2, 3))]
    expected = [to_fibers(f, positional_encoding_2d(8, *f.shape[2:]))[0] for f in feats]
    _right_and_wrong("01.1", "fibers_of", [(".permute(0, 2, 3, 1)", ""), ("permute(0, 2, 3, 1)", "permute(0, 3, 2, 1)")],
                     lambda f: exercises.check("01.1", lambda: [f(x) for x in feats], expected))


def test_exercise_01_2_fiber_labels_is_the_rule_training_uses():
    rng = np.random.default_rng(0)
    blobs = [torch.from_numpy(ndimage.binary_dilation(rng.random((32, 32)) < 0.01, iterations=i)) for i in (0, 1, 3)]
    masks = [(m, 8, 8) for m in blobs] + [(m, 4, 4) for m in blobs] + [(exercises.label_rule_mask(c), 8, 8) for c in (4, 8)]
    cases = [((m, h, w), flow_module.fiber_labels(m[None], h, w)[0][0]) for m, h, w in masks]
    half_only = ("if not (f >= 0.5).any():", "if False:")
    strict = (">= 0.5  # rule 1", "> 0.5  # rule 1")
    last_on_a_tie = ("int(f.argmax())", "int(len(f.view(-1)) - 1 - f.view(-1).flip(0).argmax())")
    _right_and_wrong("01.2", "fiber_labels", [half_only, strict, last_on_a_tie],
                     lambda f: exercises.check_cases("01.2", f, cases))


def test_exercise_01_3_half_sq_mahalanobis():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(5, 5))
    cov, mu, x = a @ a.T + 0.5 * np.eye(5), rng.normal(size=5), rng.normal(size=(20, 5)) * 2
    expected = -stats.multivariate_normal(mu, cov).logpdf(x) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
    _right_and_wrong("01.3", "half_sq_mahalanobis", [("0.5 * np.einsum", "np.einsum"),
                                                     ("np.linalg.solve(cov, d.T).T", "d")],
                     lambda f: exercises.check("01.3", lambda: f(x, mu, cov), expected))


def test_exercise_02_1_encoding_at():
    pe = positional_encoding_2d(16, 12, 12)
    cases = [((h, w), pe[:, h, w]) for h, w in ((0, 0), (0, 5), (3, 0), (7, 11), (11, 2))]
    _right_and_wrong("02.1", "encoding_at", [("torch.cat([pairs(float(w)), pairs(float(h))])",
                                              "torch.cat([pairs(float(h)), pairs(float(w))])"),
                                             ("(-2 * i / (P // 2))", "(-2 * i / P)")],
                     lambda f: exercises.check_cases("02.1", lambda h, w: f(16, h, w), cases))


def test_exercise_02_2_my_log_likelihood():
    g = torch.Generator().manual_seed(2)
    z, ljd = torch.randn(50, 8, generator=g), torch.randn(50, generator=g)
    z1, ljd1 = torch.randn(20, 1, generator=g), torch.full((20,), 0.7)
    cases = [((z, ljd), log_likelihood(z, ljd)), ((z1, ljd1), log_likelihood(z1, ljd1))]
    _right_and_wrong("02.2", "my_log_likelihood", [(" + log_jac_det) / C", " + log_jac_det)"),
                                                   ("(z ** 2).sum(1)", "(z ** 2).sum()")],
                     lambda f: exercises.check_cases("02.2", f, cases))


def test_exercise_02_3_my_ml_loss():
    cases = [((t,), ml_loss(t)) for t in (torch.linspace(-8, 6, 50), torch.tensor([-200.0, 0.0, 3.0]), torch.tensor([40.0]))]
    _right_and_wrong("02.3", "my_ml_loss", [("(-torch.nn.functional.logsigmoid(logp)).mean()",
                                             "(-torch.log(torch.sigmoid(logp))).mean()"),
                                            ("(-torch.nn.functional.logsigmoid(logp)).mean()",
                                             "(-torch.nn.functional.logsigmoid(logp)).sum()")],
                     lambda f: exercises.check_cases("02.3", f, cases, rtol=1e-6))


def test_exercise_02_4_phase1_step_fails_for_a_sum_or_plain_likelihood():
    cfg, flow, level = _tiny(False)
    slips = [("loss = ml_loss(logp)", "loss = -torch.nn.functional.logsigmoid(logp).sum()"),  # a sum: Adam alone would pass it
             ("loss = ml_loss(logp)", "loss = -logp.mean()")]
    _right_and_wrong("02.4", "phase1_step", slips,
                     lambda f: exercises.check_step("02.4", lambda: f(flow, level, cfg.lr), flow, level, "ml", cfg.lr,
                                                    atol=1e-6))


def test_exercise_03_1_my_boundaries():
    tiny = torch.tensor([-2.0, -4.0, -6.0, -8.0, -3.0, -6.5, -9.0]), torch.tensor([False] * 4 + [True] * 3)
    hundred = torch.arange(100.0), torch.zeros(100, dtype=torch.bool)
    cases = [((*tiny, 0.25, 0.1, 10.0), compute_boundaries(*tiny, 0.25, 0.1, 10.0)),
             ((*hundred, 0.29, 0.1, 1.0), compute_boundaries(*hundred, 0.29, 0.1, 1.0))]
    _right_and_wrong("03.1", "my_boundaries", [("logp[~is_anomaly]", "logp"), (" + 1e-9)", ")")],
                     lambda f: exercises.check_cases("03.1", f, cases))


def test_exercise_03_2_rates_below_catches_less_or_equal():
    rng = np.random.default_rng(3)
    normal, anomalous = rng.normal(-0.3, 0.1, 500), rng.normal(-0.6, 0.2, 80)
    cases = [((np.array([-0.1, -0.5, -0.9]), np.array([-0.8, -0.2]), -0.6), (1 / 3, 1 / 2)),
             ((np.array([-0.1, -0.5, -0.9]), np.array([-0.8, -0.5]), -0.5), (1 / 3, 1 / 2)),
             ((normal, anomalous, -0.5), (float((normal < -0.5).mean()), float((anomalous < -0.5).mean())))]
    _right_and_wrong("03.2", "rates_below", [("< boundary", "<= boundary")],
                     lambda f: exercises.check_cases("03.2", f, cases))


def test_exercise_03_3_chunk_boundaries_of():
    cfg = BGADConfig()
    lp = torch.cat([torch.randn(2000, generator=torch.Generator().manual_seed(3)) - 3, torch.full((300,), -5.0)])
    an = torch.cat([torch.arange(2000) % 5 == 0, torch.ones(300, dtype=torch.bool)])
    def expected(n):
        return [float(compute_boundaries(lp[s:min(s + 256, n)], an[s:min(s + 256, n)], 0.05, cfg.tau, cfg.normalizer)[0])
                for s in range(0, n, 256) if (~an[s:min(s + 256, n)]).any()]

    cases = [((lp[:n], an[:n], 256, 0.05), expected(n)) for n in (len(lp), 1900)]
    slips = [("if (~a).any():", "if True:"),  # a chunk without normals: compute_boundaries refuses it
             ("range(0, len(logp), chunk)", "range(0, len(logp) - chunk, chunk)")]  # the short last chunks dropped
    _right_and_wrong("03.3", "chunk_boundaries_of", slips,
                     lambda f: exercises.check_cases("03.3", f, cases),
                     cfg=cfg, N=cfg.normalizer)


def test_exercise_04_1_my_pull_push():
    logp = torch.tensor([-2.0, -4.0, -6.0, -8.0, -3.0, -6.5, -9.0])
    is_anomaly = torch.tensor([False] * 4 + [True] * 3)
    b_n, b_a = compute_boundaries(logp, is_anomaly, 0.25, 0.1, 10.0)
    g = torch.Generator().manual_seed(4)
    rnd = torch.randn(500, generator=g) * 5 - 5, torch.rand(500, generator=g) < 0.2
    cases = [((logp, is_anomaly, b_n, b_a, 10.0), (0.1, 0.225)),
             ((torch.tensor([-2.0, -9.0]), torch.tensor([False, True]), b_n, b_a, 10.0), (0.0, 0.0)),
             ((*rnd, -0.8, -0.9, 10.0), bg_spp_loss(*rnd, -0.8, -0.9, 10.0))]
    slips = [("(l <= b_n)", "(l < b_n)"),
             ("if len(pushed) else torch.zeros(())", "if True else None"),  # torch.mean of nothing: NaN
             ("pull = (b_n - pulled).mean()", "pull = (b_n - pulled).sum()")]
    _right_and_wrong("04.1", "my_pull_push", slips, lambda f: exercises.check_cases("04.1", f, cases))


def test_exercise_04_2_my_naive_push():
    g = torch.Generator().manual_seed(4)
    rnd = torch.randn(500, generator=g) * 5 - 5, torch.rand(500, generator=g) < 0.2
    both = torch.tensor([True, True])
    cases = [((*rnd, 10.0), naive_push_loss(*rnd, 10.0))]
    cases += [((t, both, 10.0), naive_push_loss(t, both, 10.0)) for t in (torch.tensor([-1000.0, -3.0]),
                                                                           torch.tensor([2000.0, -3.0]))]
    slips = [("logsigmoid(-l)", "logsigmoid(l)"), ("/ normalizer", ""),
             ("(-torch.nn.functional.logsigmoid(-l))", "(-torch.log(torch.sigmoid(-l)))")]
    _right_and_wrong("04.2", "my_naive_push", slips, lambda f: exercises.check_cases("04.2", f, cases))


def test_exercise_04_3_bgad_step_fails_for_a_summed_term_or_a_boundary_from_all_fibers():
    cfg, flow, level = _tiny(True)
    cfg = dataclasses.replace(cfg, beta=0.3)  # a β that the anomalous fibers reach into (as the notebook's 0.2)
    slips = [("compute_boundaries(logp, is_anomaly,", "compute_boundaries(logp, torch.zeros_like(is_anomaly),"),
             ("ml_loss(logp[~is_anomaly])", "(-torch.nn.functional.logsigmoid(logp[~is_anomaly])).sum()"),
             ("loss = ml_loss(", "loss = 0.5 * ml_loss(")]
    _right_and_wrong("04.3", "bgad_step", slips,
                     lambda f: exercises.check_step("04.3", lambda: f(flow, level, cfg), flow, level, "bgad", cfg.lr,
                                                    cfg.beta, cfg.tau, cfg.normalizer, cfg.bgspp_lambda, atol=1e-6))


def test_exercise_04_4_my_focal_weights():
    lg = torch.linspace(-2.5, 0.3, 281)[torch.linspace(-2.5, 0.3, 281).abs() > 1e-3]
    mixed = torch.arange(len(lg)) % 2 == 1
    cases = [((lg, m), focal_weights(lg * 10, m, 10.0)) for m in (torch.zeros_like(mixed), torch.ones_like(mixed), mixed)]
    slips = [("torch.where(is_anomaly, w_anomalous, w_normal)", "torch.where(is_anomaly, w_normal, w_anomalous)"),
             ("(1 - torch.exp(l)).sqrt()", "(1 - torch.exp(l))")]
    _right_and_wrong("04.4", "my_focal_weights", slips, lambda f: exercises.check_cases("04.4", f, cases, rtol=1e-4))


def test_exercise_05_1_image_score():
    maps = np.random.default_rng(1).random((6, 32, 32))
    _right_and_wrong("05.1", "image_score", [("np.sort(flat, axis=1)[:, -k:].mean(axis=1)", "flat.max(axis=1)"),
                                             ("np.sort(flat, axis=1)[:, -k:]", "np.sort(flat, axis=1)[:, :k]")],
                     lambda f: exercises.check("05.1", lambda: f(maps, SCORE_TOP), image_scores(maps, SCORE_TOP)))


def test_exercise_05_2_rates_at_threshold():
    rng = np.random.default_rng(2)
    scores, groups = rng.random(60), rng.choice(["normal", "seen", "unseen"], 60)
    ref = margins.rates_at(scores, groups, 0.6)
    hand = (np.array([0.1, 0.5, 0.9, 0.7, 0.2]), np.array(["normal", "normal", "seen", "seen", "unseen"]), 0.5)
    cases = [(hand, {"fpr": 0.5, "tpr_seen": 1.0, "tpr_unseen": 0.0}),
             ((scores, groups, 0.6), {k: ref[k] for k in ("fpr", "tpr_seen", "tpr_unseen")})]
    _right_and_wrong("05.2", "rates_at_threshold", [(">= t", "> t")],
                     lambda f: exercises.check_cases("05.2", f, cases))


def test_exercise_05_3_margin_fractions():
    l = np.random.default_rng(3).normal(-0.5, 0.2, 300)
    cases = [((np.array([-1.0, -0.75, -0.625, -0.5, -0.25]), -0.5, -0.75), {"below_ba": 0.2, "margin": 0.6, "above_bn": 0.2}),
             ((l, -0.45, -0.55), margins.margin_fractions(l, -0.45, -0.55))]
    _right_and_wrong("05.3", "margin_fractions", [("(l >= b_a) & (l <= b_n)", "(l > b_a) & (l < b_n)")],
                     lambda f: exercises.check_cases("05.3", f, cases))


def test_every_exercise_has_a_wrong_answer_test():
    tested = {name.removeprefix("test_exercise_")[:4].replace("_", ".") for name in globals()
              if name.startswith("test_exercise_")}
    from bgad_lite.course.solutions import SOLUTIONS

    course = {e for e in SOLUTIONS if e[:2] in {"01", "02", "03", "04", "05"}}  # notebooks 01-05
    assert len(course) >= 17 and course <= tested, f"exercises without a wrong-answer test: {sorted(course - tested)}"


# --- hidden answers and reference solutions ---------------------------------------------------


def test_quiz_answers_come_from_the_library_and_not_from_the_notebooks():
    from bgad_lite.course.answers import QUIZ_ANSWERS

    seen = set()
    for name in NOTEBOOKS:
        for copy_ in (notebooks_dir() / f"{name}.ipynb", notebooks_dir() / "student" / f"{name}.ipynb"):
            for cell in nbformat.read(copy_, as_version=4).cells:
                if cell.cell_type != "code" or "exercises.quiz(" not in cell.source:
                    continue
                call = ast.parse(cell.source).body[0].value
                assert len(call.args) == 3 and not call.keywords, f"{name}: quiz(id, question, options) only"
                quiz_id, _, options = (ast.literal_eval(a) for a in call.args)
                answer, why = exercises.answer_key(quiz_id, options)  # raises when the two disagree
                assert QUIZ_ANSWERS[quiz_id]["right"] == options[answer]
                assert not any(w in cell.source for w in why), f"{name}: an explanation is in the notebook"
                seen.add(quiz_id)
    assert seen == set(QUIZ_ANSWERS), f"answers without a question: {sorted(set(QUIZ_ANSWERS) - seen)}"
    with pytest.raises(BGADError, match="differ"):
        exercises.answer_key("01.Q1", ["a", "b"])


def test_show_solution_prints_the_reference_after_the_check(capsys):
    from bgad_lite.course.solutions import SOLUTIONS

    assert exercises.show_solution("03.2") is None or ("03.2", "pass") in exercises.RESULTS
    exercises.RESULTS.append(("03.2", "FAIL"))
    text = exercises.show_solution("03.2")
    assert "def rates_below" in text and student.BEGIN in text and "< boundary" in text
    assert "def rates_below" in capsys.readouterr().out
    assert "def my_focal_weights" in exercises.show_solution("04.4", force=True)
    with pytest.raises(BGADError, match="no exercise"):
        exercises.show_solution("09.9")
    assert student.solutions_text() == (Path(exercises.__file__).with_name("solutions.py")).read_text(encoding="utf-8")
    assert len(SOLUTIONS) >= 17
