"""plots: the one fiber histogram (bars, b_n, b_a, margin, palette, axis) and the epoch figures."""

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from bgad_lite.boundary import boundaries_from_normals
from bgad_lite.explore import margins, plots
from bgad_lite.explore.margins import NORMAL, SEEN, UNSEEN


def _ax():
    return plots.new_figure(4, 3).subplots()


def _bars(ax, color):
    """The histogram bars (not the margin band) drawn in ``color``."""
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_label() != "margin τ"
            and p.get_facecolor()[:3] == pytest.approx(to_rgba(color)[:3])]


def test_histogram_draws_one_bar_per_bin_and_group_and_the_boundaries_where_given():
    l = {NORMAL: np.array([0.05, 0.15, 0.15, 0.95]), SEEN: np.array([0.05]), UNSEEN: np.array([])}
    ax = _ax()
    plots.plot_fiber_histogram(ax, l, b_n=0.4, b_a=0.3, xlim=(0.0, 1.0), bins=10)
    normal = _bars(ax, plots.COLORS[NORMAL])
    assert len(normal) == 10  # `bins` bars on xlim, one group
    heights = [p.get_height() for p in sorted(normal, key=lambda p: p.get_x())]
    # density: 1 / 4 / 0.1, 2 / 4 / 0.1, ..., 1 / 4 / 0.1
    assert heights == pytest.approx([2.5, 5.0, 0, 0, 0, 0, 0, 0, 0, 2.5])
    assert len(_bars(ax, plots.COLORS[SEEN])) == 10 and not _bars(ax, plots.COLORS[UNSEEN])  # empty: nothing
    lines = {ln.get_label().split(" =")[0]: ln for ln in ax.get_lines()}
    assert lines["$b_n$"].get_xdata()[0] == pytest.approx(0.4)
    assert lines["$b_a$"].get_xdata()[0] == pytest.approx(0.3)
    assert to_rgba(lines["$b_n$"].get_color()) == to_rgba(plots.COLORS[NORMAL])
    assert to_rgba(lines["$b_a$"].get_color()) == to_rgba(plots.COLORS["anomalous"])
    band = [p for p in ax.patches if p.get_label() == "margin τ"]
    assert len(band) == 1 and to_rgba(band[0].get_facecolor())[:3] == pytest.approx(to_rgba("gold")[:3])
    assert ax.get_xlim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["normal (4)", "seen (1)"]


def test_histogram_without_boundaries_and_its_default_axis():
    l = {NORMAL: np.linspace(0, 1, 101), "anomalous": np.array([-3.0, -2.0])}
    ax = _ax()
    plots.plot_fiber_histogram(ax, l, bins=20)
    assert not ax.get_lines() and not [p for p in ax.patches if p.get_label() == "margin τ"]
    assert ax.get_xlim() == pytest.approx(margins.l_range(l.values()))  # the one axis rule
    assert len(_bars(ax, plots.COLORS["anomalous"])) == 20


def test_values_outside_the_axis_land_in_the_edge_bars():
    ax = _ax()
    plots.plot_fiber_histogram(ax, {SEEN: np.array([-50.0, 0.5, 50.0])}, xlim=(0.0, 1.0), bins=4)
    heights = [p.get_height() for p in sorted(_bars(ax, plots.COLORS[SEEN]), key=lambda p: p.get_x())]
    assert heights == pytest.approx([4 / 3, 0, 4 / 3, 4 / 3])  # clipped, still counted
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["first bar: 1 fiber\nwith l < 0.00", "last bar: 1 fiber\nwith l > 1.00"]  # what they hold
    ax = _ax()
    plots.plot_fiber_histogram(ax, {SEEN: np.array([0.5, 50.0, 60.0])}, xlim=(0.0, 1.0), bins=4)
    assert [t.get_text() for t in ax.texts] == ["last bar: 2 fibers\nwith l > 1.00"]  # none below: one label


def test_plotly_traces_bin_like_the_histogram():
    traces = plots.fiber_histogram_traces({NORMAL: np.array([0.05, 0.15, 0.15, 0.95])}, (0.0, 1.0), bins=10,
                                          prefix="level 1: ")
    (bar,) = traces
    assert bar.name == "level 1: normal" and bar.marker.color == plots.css_color(NORMAL)
    assert list(bar.y) == pytest.approx([2.5, 5.0, 0, 0, 0, 0, 0, 0, 0, 2.5])


def _recorder():
    rng = np.random.default_rng(0)
    groups = np.array([NORMAL] * 50 + [SEEN] * 10 + [UNSEEN] * 10, dtype=object)
    snaps = [margins.Snapshot(e, np.r_[rng.normal(0, 1, 50), rng.normal(-e, 1, 20)], rng.normal(0, 1, 200))
             for e in range(5)]
    return type("Rec", (), {"snapshots": snaps, "groups": groups, "level": 1})()


def test_epoch_figure_shows_the_chosen_epochs_with_their_own_boundaries():
    rec = _recorder()
    fig = plots.epoch_figure(rec, beta=0.1, tau=0.2, epochs=(0, 4))
    assert [ax.get_title() for ax in fig.axes] == ["epoch 0 (phase 1)", "epoch 4"]
    for ax, s in zip(fig.axes, (rec.snapshots[0], rec.snapshots[4])):
        b_n, b_a = boundaries_from_normals(s.l_train, 0.1, 0.2, normalizer=1.0)
        xs = sorted(ln.get_xdata()[0] for ln in ax.get_lines())
        assert xs == pytest.approx([b_a, b_n])
        assert ax.get_xlim() == pytest.approx(margins.epoch_xlim(rec.snapshots, rec.groups))


def test_epoch_animation_has_a_frame_per_snapshot_with_its_boundaries():
    rec = _recorder()
    fig = plots.epoch_animation(rec, beta=0.1, tau=0.2, bins=30)
    assert [f.name for f in fig.frames] == ["0", "1", "2", "3", "4"]
    b_n, b_a = boundaries_from_normals(rec.snapshots[3].l_train, 0.1, 0.2, normalizer=1.0)
    shapes = fig.frames[3].layout.shapes
    assert (shapes[0].x0, shapes[0].x1) == pytest.approx((b_a, b_n))
    assert [len(t.y) for t in fig.frames[3].data] == [30, 30, 30]


def test_a_far_out_pixel_does_not_set_the_maps_colour_scale():
    """A map in nats is not capped: one pushed pixel thousands of nats out must not turn the rest black."""
    import matplotlib.pyplot as plt

    from bgad_lite.explore.plots import map_vmax, plot_anomaly_maps

    maps = np.tile(np.arange(100, dtype=np.float32).reshape(10, 10), (2, 1, 1))  # (2, 10, 10): 0 .. 99, twice
    assert map_vmax(maps) == pytest.approx(98.01)  # np.percentile's linear rule: 99 % of the way from 0 to 99
    maps[1, 0, 0] = 5000.0  # one far-out pixel
    assert map_vmax(maps) < 100.0
    images, masks = np.zeros((2, 10, 10, 3), np.uint8), np.zeros((2, 10, 10), bool)
    fig = plot_anomaly_maps(images, masks, {"model": maps}, ["a", "b"])
    assert fig.axes[1].images[0].get_clim() == (0.0, pytest.approx(map_vmax(maps)))
    assert plot_anomaly_maps(images, masks, {"model": maps}, ["a", "b"], vmax=7.0).axes[1].images[0].get_clim()[1] == 7.0
    plt.close("all")


def test_image_scores_strip_uses_a_symlog_axis_that_keeps_every_score():
    """Scores in nats are heavy-tailed: linear below 1 nat, logarithmic above, every point drawn."""
    scores = np.array([0.3, 0.8, 1.2, 450.0])
    groups = np.array([NORMAL, NORMAL, SEEN, UNSEEN])
    ax = _ax()
    plots.plot_image_scores(ax, scores, groups, threshold=1.0, selected=3)
    assert ax.get_xscale() == "symlog"
    drawn = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    assert sorted(set(drawn.tolist())) == sorted(set(scores.tolist()))  # the three strips and the circled one
    lo, hi = ax.get_xlim()
    assert lo == 0.0 and hi >= 450.0  # from 0 nats: no padding below it
    ax = _ax()
    plots.plot_image_scores(ax, np.array([-2.0, 0.5, 3.0]), np.array([NORMAL, SEEN, UNSEEN]), threshold=1.0)
    assert ax.get_xlim()[0] == -2.0  # a score below the training mean is still shown
