"""The margin explorer, driven like a user would: move sliders, pick images, check what it shows."""

import numpy as np
import pytest
import torch

from bgad_lite import BGADConfig, compute_boundaries, pipeline
from bgad_lite.explore import margins, widgets
from bgad_lite.data.textures import make_texture_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BGAD model (64 px, 2 + 2 epochs) with per-epoch snapshots."""
    tmp = tmp_path_factory.mktemp("widgets")
    make_texture_dataset(tmp / "data", "brick", seed=3, n_train=8, n_test_good=4, n_per_type=3, size=64)
    cfg = BGADConfig(data_dir=str(tmp / "data"), category="brick", image_size=64, n_anomalies=2, n_cutpaste=2,
                     epochs_phase1=2, epochs_phase2=2, n_blocks=2, cond_dim=16,
                     cache_dir=str(tmp / "cache"))
    prep = pipeline.prepare(cfg, progress=False)
    phase1, _ = pipeline.fit_phase1(prep, progress=False)
    rec = margins.EpochRecorder(prep, prep.cfg.normalizer, prep.cfg.cond_dim, level=1, max_fibers=500)
    rec.record(0, phase1)
    flows, _, _ = pipeline.fit_variant(prep, phase1, "bgad", progress=False, on_epoch_end=rec)
    return prep, flows, rec


@pytest.fixture
def explorer(trained):
    prep, flows, rec = trained
    return widgets.margin_explorer(flows, prep, snapshots=rec, title="tiny bgad")


def _expected_boundaries(ex, beta, tau):
    """compute_boundaries on every training-normal fiber of the selected level (an explicit all-normal mask)."""
    prep = ex.prep
    logp = ex.ev["train_logps"][ex.level.value].reshape(-1)
    b_n, b_a = compute_boundaries(logp, torch.zeros_like(logp, dtype=torch.bool), beta, tau, prep.cfg.normalizer)
    return float(b_n), float(b_a)


def _expected_fractions(ex, b_n, b_a):
    """Below / inside / above the margin, counted here from the test logps and the masks."""
    from bgad_lite.flow import fiber_labels

    prep = ex.prep
    logp = ex.ev["test_logps"][ex.level.value]  # (N, H, W)
    fiber = fiber_labels(torch.from_numpy(prep.test_masks), logp.shape[1], logp.shape[2])[0].numpy()
    seen = np.isin(prep.test_types, prep.split.seen_types)[:, None, None]
    l = logp.double().numpy() / prep.cfg.normalizer
    out = {}
    for g, sel in (("normal", ~fiber), ("seen", fiber & seen), ("unseen", fiber & ~seen)):
        v = l[sel]
        out[g] = (np.mean(v < b_a), np.mean((v >= b_a) & (v <= b_n)), np.mean(v > b_n)) if len(v) else None
    return out


def test_it_is_a_widget_drawn_once_at_construction(explorer):
    import ipywidgets

    assert isinstance(explorer, ipywidgets.VBox)
    for view in ("hist", "scores", "overlay", "epoch"):
        assert explorer.png[view].startswith(b"\x89PNG")
    for view, image in (("hist", explorer.hist_image), ("scores", explorer.score_image),
                        ("overlay", explorer.overlay_image), ("epoch", explorer.epoch_image)):
        assert isinstance(image, ipywidgets.Image) and bytes(image.value) == explorer.png[view]
    assert "b<sub>n</sub>" in explorer.boundary_html.value and "TPR" in explorer.metrics_html.value


def test_beta_and_tau_move_the_boundaries_as_compute_boundaries_says(explorer):
    cfg = explorer.prep.cfg
    assert explorer.state["b_n"] == pytest.approx(_expected_boundaries(explorer, cfg.beta, cfg.tau)[0], abs=1e-9)
    before = (explorer.png["hist"], explorer.boundary_html.value, bytes(explorer.hist_image.value))
    explorer.beta.value = 0.2
    b_n, b_a = _expected_boundaries(explorer, 0.2, explorer.tau.value)
    assert explorer.state["b_n"] == pytest.approx(b_n, abs=1e-9)
    assert explorer.state["b_a"] == pytest.approx(b_a, abs=1e-9)
    assert f"{b_n:.4f}" in explorer.boundary_html.value
    assert explorer.png["hist"] != before[0] and explorer.boundary_html.value != before[1]
    assert bytes(explorer.hist_image.value) != before[2]
    explorer.tau.value = 0.5
    assert explorer.state["b_n"] == pytest.approx(b_n, abs=1e-9)  # τ does not move b_n ...
    assert explorer.state["b_a"] == pytest.approx(b_n - 0.5, abs=1e-6)  # ... only b_a = b_n − τ (float32 logp)
    assert explorer.state["epoch_b_n"] > explorer.state["epoch_b_a"]  # the epoch view follows β, τ too
    explorer.level.value = 2
    assert explorer.state["b_n"] == pytest.approx(_expected_boundaries(explorer, 0.2, 0.5)[0], abs=1e-9)
    assert explorer.state["train_below_bn"] <= 0.2 + 1e-9
    assert explorer.state["level"] == 2


def test_fiber_table_counts_what_lies_below_inside_and_above_the_margin(explorer):
    for level, beta, tau in ((explorer.level.value, 0.01, 0.1), (1, 0.1, 0.3)):
        explorer.level.value, explorer.beta.value, explorer.tau.value = level, beta, tau
        b_n, b_a = _expected_boundaries(explorer, beta, tau)
        want = _expected_fractions(explorer, b_n, b_a)
        got = explorer.state["fiber_fractions"]
        for g, fractions in want.items():
            if fractions is None:
                assert np.isnan(got[g]["margin"])
            else:
                assert (got[g]["below_ba"], got[g]["margin"], got[g]["above_bn"]) == pytest.approx(fractions)
        assert sum(len(v) for v in explorer.l_test[level].values()) == explorer.ev["test_logps"][level].numel()


def test_threshold_gives_the_tpr_and_fpr_of_a_hand_count(explorer):
    scores, types = explorer.scores, explorer.prep.test_types
    seen = np.isin(types, explorer.prep.split.seen_types)
    normal = types == "good"
    for q in (0.2, 0.5, 0.8):
        t = float(np.quantile(scores, q))
        explorer.threshold.value = t
        t = explorer.threshold.value  # the slider rounds to its step
        assert explorer.state["fpr"] == pytest.approx(np.mean(scores[normal] >= t))
        assert explorer.state["tpr_seen"] == pytest.approx(np.mean(scores[seen] >= t))
        assert explorer.state["tpr_unseen"] == pytest.approx(np.mean(scores[~seen & ~normal] >= t))
        assert f"{int((scores[normal] >= t).sum())}/{int(normal.sum())}" in explorer.metrics_html.value


def test_selecting_another_image_redraws_the_overlay(explorer):
    before = (explorer.png["overlay"], bytes(explorer.overlay_image.value))
    other = next(i for _, i in explorer.image.options if i != explorer.image.value)
    explorer.image.value = other
    assert explorer.state["image"] == other
    assert explorer.png["overlay"] != before[0] and bytes(explorer.overlay_image.value) != before[1]


def test_epoch_slider_replays_the_snapshots(explorer, trained):
    _, _, rec = trained
    assert [s.epoch for s in rec.snapshots] == [0, 1, 2]
    before = explorer.png["epoch"]
    explorer.epoch.value = 0
    assert explorer.state["epoch"] == 0 and explorer.png["epoch"] != before
    # the epoch panel's boundaries: compute_boundaries on that snapshot's training normals (l = logp / N)
    l_train = torch.from_numpy(rec.snapshots[0].l_train.astype(np.float64))
    b_n, b_a = compute_boundaries(l_train, None, explorer.beta.value, explorer.tau.value, 1.0)
    assert (explorer.state["epoch_b_n"], explorer.state["epoch_b_a"]) == pytest.approx((float(b_n), float(b_a)))


def test_recorder_matches_flow_logp_and_does_not_move_the_flows(trained):
    from bgad_lite.flow import flow_logp

    prep, flows, rec = trained
    feats = prep.test_features[1]
    pos = prep.phase1_levels(prep.cfg.cond_dim)[1].pos
    full = flow_logp(flows[1], feats, pos).reshape(-1).numpy() / prep.cfg.normalizer
    snap = rec.record(99, flows)
    assert np.isin(np.round(snap.l_test, 4), np.round(full, 4)).all()
    assert len(rec.groups) == len(snap.l_test) and set(rec.groups) <= {"normal", "seen", "unseen"}
    all_groups = margins.fiber_groups(prep, feats.shape[2], feats.shape[3])  # (N, H, W)
    for g in ("normal", "seen", "unseen"):  # at most max_fibers = 500 of each group
        assert (rec.groups == g).sum() == min((all_groups == g).sum(), 500)


def test_static_figure_shows_the_current_state(explorer):
    explorer.beta.value, explorer.tau.value = 0.05, 0.2
    explorer.threshold.value = float(np.median(explorer.scores))
    fig = explorer.static_figure()
    hist, scores, *gallery = fig.axes
    s = explorer.state
    assert sorted(ln.get_xdata()[0] for ln in hist.get_lines()) == pytest.approx([s["b_a"], s["b_n"]])
    assert "β=0.050, τ=0.200" in hist.get_title()
    assert scores.get_lines()[0].get_xdata()[0] == pytest.approx(explorer.threshold.value)
    # the selected image and the highest-scoring image of each other group
    picks = [explorer.image.value]
    for g in ("normal", "seen", "unseen"):
        others = [j for j in np.flatnonzero(explorer.groups == g) if j not in picks]
        if others and len(picks) < 4:
            picks.append(max(others, key=lambda j: explorer.scores[j]))
    assert [ax.get_title().split()[0] for ax in gallery] == [f"#{j}" for j in picks]


def test_explorer_views_are_shown_at_their_pixel_size(explorer):
    """Each view's PNG is drawn at the size its Image widget shows it (no flex stretching)."""
    from PIL import Image as PILImage
    import io

    for view, image in (("hist", explorer.hist_image), ("scores", explorer.score_image),
                        ("overlay", explorer.overlay_image), ("epoch", explorer.epoch_image)):
        w, h = PILImage.open(io.BytesIO(explorer.png[view])).size
        assert (f"{w}px", f"{h}px") == (image.layout.width, image.layout.height), view
    assert "bgad-explorer" in explorer._dom_classes and "bgad-beta" in explorer.beta._dom_classes
    for control in (explorer.beta, explorer.tau, explorer.level, explorer.threshold, explorer.image, explorer.epoch):
        assert control.description == ""  # ipywidgets 7 would typeset it with MathJax 2 (absent in Lab 4)


def test_status_line_reports_redraws_and_failures(explorer, monkeypatch):
    explorer.threshold.value = explorer.threshold.min
    assert "redrawn" in explorer.status_html.value and "Run All Cells" in explorer.status_html.value

    def broken():
        raise ValueError("boom")

    monkeypatch.setattr(explorer, "update_epoch", broken)
    with pytest.raises(ValueError):
        explorer._on_epoch()
    assert "Redrawing failed" in explorer.status_html.value and "boom" in explorer.status_html.value


def test_finished_progress_bars_hide_instead_of_closing(monkeypatch):
    """In a notebook the library's bars hide when they finish (a closed bar's output would show
    "model not found" after reopening the notebook); tqdm's own class is left as it is."""
    import tqdm.auto
    from tqdm.notebook import tqdm_notebook

    from bgad_lite.runtime import progress_bar

    original = tqdm_notebook.display
    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm_notebook)  # as tqdm.auto picks it inside a kernel
    bar = progress_bar(range(3), leave=False, display=False)
    for _ in bar:
        pass
    assert isinstance(bar, tqdm_notebook)
    assert bar.container.comm is not None, "the bar's widget models were closed"
    assert bar.container.layout.display == "none"
    kept = progress_bar(range(3), leave=True, display=False)
    for _ in kept:
        pass
    assert kept.container.layout.display != "none" and kept.container.children[1].bar_style == "success"
    plain = tqdm_notebook(range(3), leave=False, display=False)  # not the library's: tqdm's own behaviour
    for _ in plain:
        pass
    assert tqdm_notebook.display is original and plain.container.layout.display != "none"
    monkeypatch.undo()
    assert not isinstance(progress_bar(range(2), disable=True), tqdm_notebook)  # a terminal: tqdm's bar


def test_plotly_renderer_imports_nothing_from_a_cdn_before_the_first_figure(monkeypatch):
    import plotly.graph_objects as go
    import plotly.io as pio

    from bgad_lite.course import setup

    monkeypatch.delitem(__import__("sys").modules, "google.colab", raising=False)
    name = setup.plotly_renderer()
    assert name == "plotly_mimetype+bgad_html"
    assert pio.renderers["bgad_html"].global_init is False  # notebook_connected's global CDN import
    bundle = pio.renderers._build_mime_bundle(go.Figure(go.Bar(y=[1, 2])).to_dict(), renderers_string=name)
    assert {"application/vnd.plotly.v1+json", "text/html"} <= set(bundle)  # Lab / exports


def test_widget_frontend_problem_names_the_bad_pairing(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version
    frontend = {"v": "3.0.17"}
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: frontend["v"] if name == "jupyterlab_widgets" else real(name))
    monkeypatch.setattr(widgets.W, "__version__", "7.7.1")
    assert "jupyterlab_widgets>=1.1,<3" in widgets.widget_frontend_problem()
    frontend["v"] = "1.1.11"
    assert widgets.widget_frontend_problem() is None  # ipywidgets 7 with its own frontend
    monkeypatch.setattr(widgets.W, "__version__", "8.1.9")
    frontend["v"] = "3.0.17"
    assert widgets.widget_frontend_problem() is None


def test_threshold_slider_spans_every_score_in_steps_of_the_normals_span(explorer):
    """The slider reaches every score, and its step is 1/400 of the span from the lowest score to the
    default t (or the highest training score): a far-out defect must not make the normals' region coarse."""
    sl, ev = explorer.threshold, explorer.ev
    everything = np.concatenate([explorer.scores, explorer.train_scores])
    assert sl.min <= everything.min() and sl.max >= everything.max()
    normal_hi = max(ev["threshold"], explorer.train_scores.max())
    assert sl.step == pytest.approx(max(min(sl.max - sl.step - sl.min, normal_hi - sl.min) / 400, 1e-6))
    assert sl.step <= (normal_hi - sl.min) / 400 + 1e-12
