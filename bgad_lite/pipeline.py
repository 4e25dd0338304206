"""The whole BGAD pipeline, in the steps a student learns them.

``prepare`` (:mod:`bgad_lite.prepare`: data, few-shot split, training anomalies,
cached features) -> ``fit_phase1`` (unsupervised flows, cached) -> ``fit_variant``
(phase 2: unsupervised, bgad or naive_push, each from the same phase-1 weights;
``fit_variants`` trains them in parallel processes on a CPU) -> ``evaluate``
(:mod:`bgad_lite.evaluate`: anomaly maps, image/pixel AUROC, AUPRO on all / seen /
unseen) -> ``run`` (all of it, with checkpoints, figures and ``results.json``).

``prepare`` and ``evaluate`` are imported here, so a notebook reads the steps in
order as ``pipeline.prepare``, ``pipeline.fit_phase1_cached``, ``pipeline.fit_variant``,
``pipeline.evaluate``.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import time
from pathlib import Path

import torch
from torch import nn

from . import diagnostics
from .boundary import boundaries_from_normals
from .checkpoint import load_checkpoint, save_checkpoint, saved_config
from .config import VARIANTS, BGADConfig, BGADError
from .evaluate import evaluate, model_logps
from .explore import plots
from .explore.tables import markdown_table
from .features import fingerprint
from .gaussian import GaussianModel
from .prepare import Prepared, prepare
from .runtime import (
    atomic_write_text,
    flow_threads,
    fork_is_safe,
    parallel_workers,
    progress_bar,
    seed_everything,
    torch_threads,
)
from .scoring import level_logps, normalisation_stats
from .train import make_flows, set_input_statistics, train_flows

__all__ = ["Prepared", "evaluate", "fit_phase1", "fit_phase1_cached", "fit_variant", "fit_variants", "model_logps",
           "prepare", "results_table", "run"]

log = logging.getLogger(__name__)


def fit_phase1(prep: Prepared, cfg: BGADConfig | None = None, progress: bool = True, workers: int | None = None):
    """Phase 1: flows trained by maximum likelihood on normal fibers -> (flows, history).

    The levels' flows share nothing but the order of the batches, so on a CPU they train in
    parallel processes (``workers``, default: one per core), each replaying that order
    (``train_flows(..., train_levels=...)``): the same numbers as in one process (a test checks it).
    """
    cfg = cfg or prep.cfg
    flows = make_flows(prep.channels, cfg.cond_dim, cfg.n_blocks, cfg.seed)
    set_input_statistics(flows, prep.train_features)
    levels = prep.phase1_levels(cfg.cond_dim)
    kw = dict(objective="ml", epochs=cfg.epochs_phase1, lr=cfg.lr, seed=cfg.seed, device=cfg.device,
              warmup_epochs=min(2, cfg.epochs_phase1 - 1))
    groups = _level_groups(levels, _processes(cfg.device, len(levels), workers, "phase 1"))
    if len(groups) <= 1:
        with torch_threads(flow_threads(cfg.device)):
            return flows, train_flows(flows, levels, progress=progress, desc="phase 1", **kw)
    history = [{} for _ in range(cfg.epochs_phase1)]
    for group, states, hist in _forked(_phase1_worker, groups, (flows, levels, kw),
                                       f"phase 1 ({len(groups)} processes)", progress):
        for j in group:
            flows[j].load_state_dict(states[j])
        _merge_histories(history, hist)
    return flows.eval(), [dict(sorted(h.items())) for h in history]


def _level_groups(levels, workers: int) -> list[list[int]]:
    """The levels split into at most ``workers`` groups of about equal work, largest first. The work of a level is about its fibers · C per image: measured on
    the default run, level 0 (32 × 32 fibers, C = 24) took 2.6 s for 4 epochs, level 1 (16 × 16,
    C = 40) 0.8 s and level 2 (8 × 8, C = 112) 0.5 s, so the small steps' overhead, not C², dominates."""
    cost = {j: _level_cost(lv) for j, lv in enumerate(levels)}
    groups: list[list[int]] = [[] for _ in range(max(1, min(workers, len(levels))))]
    for j in sorted(cost, key=cost.get, reverse=True):
        min(groups, key=lambda g: sum(cost[i] for i in g)).append(j)
    return [sorted(g) for g in groups if g]


def _level_cost(level) -> int:
    """A level's training work per image, about its fibers · C (:func:`_level_groups` says why)."""
    return level.features.shape[1] * level.features.shape[2] * level.features.shape[3]


def _merge_histories(history: list[dict], part: list[dict]) -> None:
    """Add one process's per-epoch loss terms (``"<term>/<level>"``) to ``history``, in place."""
    for merged, epoch in zip(history, part):
        merged.update(epoch)


def _phase1_worker(group: list[int]):
    flows, levels, kw = _SHARED
    history = train_flows(flows, levels, progress=False, train_levels=set(group), **kw)
    return group, {j: flows[j].state_dict() for j in group}, history


PHASE1_KEYS = ("backbone", "pretrained", "image_size", "n_blocks", "cond_dim", "lr", "epochs_phase1", "seed")


def phase1_checkpoint_dir(prep: Prepared, cfg: BGADConfig | None = None) -> Path:
    """Where :func:`fit_phase1_cached` keeps the phase-1 flows: keyed by the settings
    that shape phase 1 and by the training features."""
    cfg = cfg or prep.cfg
    settings = {k: getattr(cfg, k) for k in PHASE1_KEYS}
    key = fingerprint(sorted(settings.items()), *[f.numpy() for f in prep.train_features])
    return Path(cfg.cache_dir) / f"phase1-{key}"


def phase1_is_cached(prep: Prepared, cfg: BGADConfig | None = None) -> bool:
    """Whether :func:`fit_phase1_cached` will load phase 1 instead of training it."""
    return (phase1_checkpoint_dir(prep, cfg) / "model.pt").exists() and _stale_phase1(prep, cfg) is None


def _stale_phase1(prep: Prepared, cfg: BGADConfig | None = None) -> str | None:
    """Why the cached phase-1 entry does not fit ``cfg`` (None: it fits, or there is none)."""
    path = phase1_checkpoint_dir(prep, cfg)
    if not (path / "model.pt").exists():
        return None
    try:
        saved_config(path, cfg or prep.cfg)
    except BGADError as err:
        return str(err)
    return None


def fit_phase1_cached(prep: Prepared, cfg: BGADConfig | None = None, progress: bool = True):
    """:func:`fit_phase1`, or load its result from ``cfg.cache_dir`` when it was trained
    before with the same settings and data -> (flows, history).

    The training curve is kept beside the flows (``history.json``), so a notebook
    that loads them can still plot how they were trained.

    An entry that does not load with ``cfg`` (e.g. written by an older version) is a cache
    miss: phase 1 is trained again and the entry replaced, with a warning — a cache never
    stops a run.
    """
    cfg = cfg or prep.cfg
    path = phase1_checkpoint_dir(prep, cfg)
    stale = _stale_phase1(prep, cfg)
    if stale:
        log.warning("phase 1: the cached flows in %s do not fit these settings (%s); training them again", path, stale)
    elif (path / "model.pt").exists():
        flows, _, _ = load_checkpoint(path, cfg)
        log.info("phase 1: loaded %s", path)
        history = json.loads((path / "history.json").read_text()) if (path / "history.json").exists() else None
        return flows, history
    flows, history = fit_phase1(prep, cfg, progress)
    pos = [lv.pos for lv in prep.phase1_levels(cfg.cond_dim)]
    save_checkpoint(path, flows, cfg, prep.channels, normalisation_stats(level_logps(flows, prep.train_features, pos)))
    atomic_write_text(path / "history.json", json.dumps(history))
    return flows, history


def fit_variant(prep: Prepared, phase1_flows: nn.ModuleList, variant: str, cfg: BGADConfig | None = None,
                progress: bool = True, on_epoch_end=None, train_levels: set[int] | None = None):
    """Phase 2 from a copy of the phase-1 flows -> (flows, history, fixed boundaries or None).

    With ``boundary="fixed"``, bgad's (b_n, b_a) per level come from the phase-1 flows' logp of
    the normal training images (:func:`~bgad_lite.boundary.boundaries_from_normals`) and stay.
    ``train_levels``: train only these levels' flows, with the numbers of a run that trains them all
    (``train.train_flows``), so that :func:`fit_variants` can spread the levels over processes.
    """
    cfg = cfg or prep.cfg
    flows = copy.deepcopy(phase1_flows)
    boundaries = None
    if variant == "bgad" and cfg.boundary == "fixed":
        train_logps = level_logps(flows, prep.train_features, [lv.pos for lv in prep.phase1_levels(cfg.cond_dim)],
                                  cfg.device)
        boundaries = [boundaries_from_normals(t, cfg.beta, cfg.tau, cfg.normalizer) for t in train_logps]
    with torch_threads(flow_threads(cfg.device)):
        history = train_flows(flows, prep.phase2_levels(cfg.cond_dim), variant, cfg.epochs_phase2, cfg.lr_phase2,
                              cfg.seed, cfg.device, cfg.beta, cfg.tau, cfg.normalizer, cfg.bgspp_lambda,
                              cfg.focal_weighting, fixed_boundaries=boundaries, on_epoch_end=on_epoch_end,
                              progress=progress, desc=f"phase 2 {variant}", train_levels=train_levels)
    return flows, history, boundaries


def _processes(device: str, n_jobs: int, asked: int | None, what: str) -> int:
    """How many forked processes train ``n_jobs`` independent jobs: ``asked``, or by default one per
    job on a Linux CPU (:func:`~bgad_lite.runtime.parallel_workers`); 1 where forked workers cannot
    train (a visible GPU, or not Linux), with a warning when more were asked for."""
    n = parallel_workers(device, n_jobs) if asked is None else min(asked, n_jobs)
    if n > 1 and not fork_is_safe():
        log.warning("%s: %d worker processes asked for, but forked workers cannot train here (a GPU is visible, or "
                    "not Linux); training one after another in one process", what, n)
        n = 1
    return max(1, n)


_SHARED: tuple | None = None  # what the forked workers of _forked need, inherited, never pickled


def _forked(worker, items: list, shared: tuple, desc: str, progress: bool, processes: int | None = None):
    """``worker(item)`` for each item in forked single-thread processes (``processes``, default one per
    item), results as they come; the workers read ``shared`` from the module (inherited by the fork)."""
    global _SHARED
    _SHARED = shared
    try:
        with multiprocessing.get_context("fork").Pool(processes or len(items), initializer=torch.set_num_threads,
                                                      initargs=(1,)) as pool:
            bar = progress_bar(total=len(items), desc=desc, disable=not progress, leave=False)
            for result in pool.imap_unordered(worker, items):
                bar.update(1)
                yield result
            bar.close()
    finally:
        _SHARED = None


def _fit_variant_worker(item: tuple[str, int]):
    prep, phase1_flows, cfg = _SHARED
    variant, j = item
    flows, history, boundaries = fit_variant(prep, phase1_flows, variant, cfg, progress=False, train_levels={j})
    return variant, j, flows[j].state_dict(), history, boundaries


def fit_variants(prep: Prepared, phase1_flows: nn.ModuleList, variants, cfg: BGADConfig | None = None,
                 progress: bool = True, workers: int | None = None) -> dict:
    """:func:`fit_variant` for each of ``variants`` -> {variant: (flows, history, boundaries)}.

    The variants are independent (each starts from the phase-1 flows, with its own seeded
    shuffling), and so are a variant's levels (each replays the shuffles and the learning-rate
    schedule of all levels, as in :func:`fit_phase1`). On a CPU every (variant, level) pair is
    one job for parallel processes, the costliest first, so that three variants keep two cores
    busy to the end: the same numbers as one after another (a test checks it).
    """
    cfg = cfg or prep.cfg
    variants = list(variants)
    levels = prep.phase1_levels(cfg.cond_dim)
    workers = _processes(cfg.device, len(variants) * len(levels), workers, "phase 2")
    if workers <= 1:
        return {v: fit_variant(prep, phase1_flows, v, cfg, progress) for v in variants}
    jobs = sorted(((v, j) for v in variants for j in range(len(levels))), key=lambda job: -_level_cost(levels[job[1]]))
    flows = {v: copy.deepcopy(phase1_flows) for v in variants}
    history: dict[str, list[dict]] = {v: [{} for _ in range(cfg.epochs_phase2)] for v in variants}
    fixed = {}
    for variant, j, state, hist, boundaries in _forked(_fit_variant_worker, jobs, (prep, phase1_flows, cfg),
                                                       f"phase 2 ({workers} processes)", progress, workers):
        flows[variant][j].load_state_dict(state)
        _merge_histories(history[variant], hist)
        fixed[variant] = boundaries
    return {v: (flows[v].eval(), [dict(sorted(h.items())) for h in history[v]], fixed[v]) for v in variants}


def run(cfg: BGADConfig | None = None, progress: bool = True, groups: dict[str, str] | None = None,
        variants: tuple[str, ...] = VARIANTS) -> dict:
    """The whole pipeline: prepare, phase 1, each of ``variants`` (default: all four), evaluate.

    Writes ``<out_dir>/results.json``, ``<out_dir>/figures/*.png`` and a checkpoint per
    flow variant under ``<out_dir>/checkpoints/``; returns the results dict.
    """
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise BGADError(f"variants must be a non-empty subset of {VARIANTS}, got {tuple(variants)}.")
    cfg = cfg or BGADConfig()
    t_start = time.perf_counter()
    seed_everything(cfg.seed)  # the library draws from its own seeded generators; this covers user hooks
    out = Path(cfg.out_dir)
    prep = prepare(cfg, progress, groups)
    cfg = prep.cfg  # its device resolved, once
    timings = dict(prep.timings_s)

    t = time.perf_counter()
    from_cache = phase1_is_cached(prep)
    phase1, hist1 = fit_phase1_cached(prep, progress=progress)
    timings["phase1"] = time.perf_counter() - t  # ~0 when loaded from the cache

    results, evals, histories = {}, {}, {"phase1": hist1}
    rate_args = (cfg.cond_dim, cfg.beta, cfg.tau, cfg.normalizer, cfg.device)
    diag = {"label_counts": diagnostics.label_counts(prep),
            "rates": {"phase1": diagnostics.boundary_rates(phase1, prep, *rate_args)}}
    t = time.perf_counter()
    trained = fit_variants(prep, phase1, [v for v in variants if v != "gaussian"], progress=progress)
    timings["phase2"] = time.perf_counter() - t  # all flow variants, in parallel on a CPU
    for variant in variants:
        t = time.perf_counter()
        if variant == "gaussian":  # the reference: nothing to train, nothing to checkpoint
            model = GaussianModel.fit(prep.raw_features("train"))
            timings["fit_gaussian"] = time.perf_counter() - t
        else:
            model, hist, boundaries = trained[variant]
            histories[variant] = hist
        t = time.perf_counter()
        ev = evaluate(model, prep)
        timings[f"eval_{variant}"] = time.perf_counter() - t
        if variant != "gaussian":
            diag["rates"][variant] = diagnostics.boundary_rates(model, prep, *rate_args, train_logps=ev["train_logps"])
        results[variant] = ev["metrics"]
        evals[variant] = ev
        if variant != "gaussian":
            save_checkpoint(out / "checkpoints" / variant, model, cfg, prep.channels, ev["level_ref"], boundaries,
                            prep.alignment)

    timings["total"] = time.perf_counter() - t_start
    summary = {
        "config": cfg.to_dict(),
        "variants": list(variants),
        "data": {"root": str(prep.category.root), "seen_types": list(prep.split.seen_types),
                 "unseen_types": list(prep.split.unseen_types), "n_train_normal": len(prep.train_images),
                 "n_held_out_normal": len(prep.calib_features[0]),
                 "n_train_anomalies": len(prep.split.labelled),
                 "n_synthesised": len(prep.anomaly_images) - len(prep.split.labelled),
                 "n_test": len(prep.test_images), "image_hw": list(prep.image_hw)},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "results": results,
        "phase1_from_cache": from_cache,
        "history": histories,
        "diagnostics": diag,
    }
    if prep.alignment is not None:  # how far each level's positions were moved onto the pool (align.py)
        summary["data"]["align_alpha"] = [round(a.alpha, 4) for a in prep.alignment]
        summary["data"]["aligned_levels"] = [a.active for a in prep.alignment]
    out.mkdir(parents=True, exist_ok=True)
    plots.save_run_figures(out / "figures", prep, evals, histories, diag, cfg.beta, cfg.tau, cfg.normalizer)
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
    return summary


def results_table(summary: dict) -> str:
    """A markdown table of image AUROC / pixel AUROC / AUPRO per variant and subset."""
    rows = [[variant, subset, r["image_auroc"], r["pixel_auroc"], r["aupro"]]
            for variant, res in summary["results"].items()
            for subset in ("all", "seen", "unseen") if subset in res for r in [res[subset]]]
    return markdown_table(rows, ["variant", "subset", "image AUROC", "pixel AUROC", "AUPRO"])


def operating_table(summary: dict) -> str:
    """A markdown table of each variant's operating point (threshold.py): t from normal images
    alone, and at t the false alarms on the test normals and the recall on seen and unseen defects."""
    rows = []
    for variant, res in summary["results"].items():
        op = res.get("operating_point")
        if op is None:
            continue
        cell = lambda key, group: (f"{op[key]:.3f} ({op[f'flagged_{group}']}/{op[f'n_{group}']})"  # noqa: E731
                                   if op[f"n_{group}"] else "–")
        rows.append([variant, f"{op['threshold']:.4f}", cell("false_alarms", "normal"),
                     cell("recall_seen", "seen"), cell("recall_unseen", "unseen")])
    return markdown_table(rows, ["variant", "threshold t", "false alarms (test normals)", "recall seen",
                                 "recall unseen"])


def level_table(summary: dict, subset: str = "all") -> str:
    """A markdown table of each variant's image AUROC on ``subset`` from each level alone, beside
    that of the sum of the levels (the score, their deficits summed in nats) and of the paper's likelihood
    sum (``evaluate.likelihood_sum_aurocs``): where a flow loses to the Gaussian reference, and at which level."""
    results = summary["results"]
    n_levels = max(len(r.get("per_level", [])) for r in results.values())
    rows = [[variant] + [lv.get(subset, "–") for lv in res.get("per_level", [])] + [res[subset]["image_auroc"]]
            + [res.get("likelihood_sum", {}).get(subset, "–")]
            for variant, res in results.items() if subset in res]
    return markdown_table(rows, ["variant"] + [f"level {j} alone" for j in range(n_levels)]
                          + ["all levels", "paper's likelihood sum"])
