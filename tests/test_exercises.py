"""The course kit's machinery: exercise checks that can fail and never raise, training steps by
hand against train_flows, concept questions, student copies, slide figures."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from oracles import prose_words
from bgad_lite.course import exercises, student
from bgad_lite.boundary import compute_boundaries
from bgad_lite.config import BGADConfig, BGADError
from bgad_lite.flow import build_flow, log_likelihood, positional_encoding_2d, to_fibers
from bgad_lite.losses import bg_spp_loss, ml_loss
from bgad_lite.flow import LevelData


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
    assert "parameters differ" in _last_line(capsys)
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
    assert len(written) == 5
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
