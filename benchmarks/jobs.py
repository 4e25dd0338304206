"""Training jobs that run in worker processes, and the pool that runs them.

A *job* is a plain dict (picklable, hashable through :func:`job_key`):

- ``{"kind": "phase1", "dataset", "seed", "overrides"}`` trains (or loads) the
  phase-1 flows of one prepared data set into the benchmark cache;
- ``{"kind": "variant", "dataset", "seed", "overrides", "variant"}`` loads that
  phase-1 model, trains one phase-2 variant and evaluates it;
- ``{"kind": "call", "func": "module:function", "kwargs"}`` runs any function
  of this package (the speed, AUPRO and scaling measurements).

``dataset`` is a texture name of the embedded set or ``"bsdata"``.
Workers are started with the "spawn" context; each sets ``OMP_WAIT_POLICY``
before torch is imported and uses one torch thread, so two workers fill the
two cores without oversubscription.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import re
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from bgad_lite import BGADConfig, diagnostics, pipeline
from bgad_lite.gaussian import GaussianModel

from .common import DEFAULT_CACHE, REPO

BSDATA_ROOT = REPO.parent / "shared" / "datasets" / "bsdata"  # ../shared/datasets/bsdata


# ---------------------------------------------------------------------------
# bsdata: screw positions from the README table
# ---------------------------------------------------------------------------

def parse_bsdata_positions(readme_text: str) -> dict[str, str]:
    """Map ``"<type>/<file>"`` of the defect test images to their screw position.

    Reads the markdown table whose header has a ``new file`` and a ``position``
    column, e.g. the row
    ``| `test/pitting/051.png` | `data/...jpg` | `label/...json` | 437500_315 | ... |``
    gives ``{"pitting/051.png": "437500_315"}``. ``test/good`` and ``train`` rows are skipped.
    """
    groups: dict[str, str] = {}
    col = None
    for line in readme_text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            col = None  # a table ends at the first non-table line
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = [c.lower() for c in cells]
        if "position" in names and any("file" in c for c in names):
            col = names.index("position")
            continue
        if col is None or col >= len(cells):
            continue
        m = re.fullmatch(r"`?test/([^/`]+)/([^/`]+)`?", cells[0])
        if m and m.group(1) != "good" and cells[col]:
            groups[f"{m.group(1)}/{m.group(2)}"] = cells[col]
    return groups


def bsdata_groups(root: Path = BSDATA_ROOT) -> dict[str, str]:
    return parse_bsdata_positions((root / "README.md").read_text())


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------

def job_key(job: dict) -> str:
    """A stable identity of a job (its kind, data set, seed, overrides, variant or function and arguments)."""

    ident = {k: job.get(k) for k in ("kind", "dataset", "seed", "overrides", "variant", "func", "kwargs")}
    return json.dumps(ident, sort_keys=True, default=str)


def job_config(dataset: str, seed: int, overrides: dict, cache_dir: str):
    """The BGADConfig of one benchmark job: the library defaults, the data set, the seed, ``overrides``."""

    base = dict(seed=seed, cache_dir=cache_dir, out_dir=str(Path(cache_dir) / "unused-out"))
    if dataset == "bsdata":
        base.update(data_dir=str(BSDATA_ROOT.parent), category=BSDATA_ROOT.name, seen_types=("pitting",))
    else:
        base.update(category=dataset)
    base.update(overrides)
    return BGADConfig(**base)


def _prepare(dataset: str, seed: int, overrides: dict, cache_dir: str):

    cfg = job_config(dataset, seed, overrides, cache_dir)
    groups = bsdata_groups() if dataset == "bsdata" else None
    t = time.perf_counter()
    prep = pipeline.prepare(cfg, progress=False, groups=groups)
    return cfg, prep, time.perf_counter() - t


# ---------------------------------------------------------------------------
# the jobs
# ---------------------------------------------------------------------------

def init_worker() -> None:
    import torch  # after bgad_lite (benchmarks/__init__), which set OMP_WAIT_POLICY

    torch.set_num_threads(1)


def run_job(job: dict) -> dict:
    """Run one job (in a worker); never raises: errors come back as ``{"error": ...}``."""
    t0 = time.perf_counter()
    try:
        if job["kind"] == "phase1":
            out = _phase1_job(job)
        elif job["kind"] == "variant":
            out = _variant_job(job)
        elif job["kind"] == "call":
            mod, func = job["func"].split(":")
            out = getattr(importlib.import_module(mod), func)(**(job.get("kwargs") or {}))
        else:
            raise ValueError(f"unknown job kind {job['kind']!r}")
    except Exception as e:  # noqa: BLE001 - reported in the results
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
    out["job_wall_s"] = time.perf_counter() - t0
    out["pid"] = os.getpid()
    return out


def _phase1_job(job: dict) -> dict:

    cache = job.get("cache_dir", str(DEFAULT_CACHE))
    cfg, prep, t_prep = _prepare(job["dataset"], job["seed"], job["overrides"], cache)
    from_cache = pipeline.phase1_is_cached(prep)
    t = time.perf_counter()
    pipeline.fit_phase1_cached(prep, progress=False)
    return {"prepare_s": t_prep, "phase1_s": time.perf_counter() - t, "from_cache": from_cache,
            "n_train": len(prep.train_images)}


def _variant_job(job: dict) -> dict:

    cache = job.get("cache_dir", str(DEFAULT_CACHE))
    cfg, prep, t_prep = _prepare(job["dataset"], job["seed"], job["overrides"], cache)
    rates, p1_cached, t_p1, history = None, None, 0.0, []
    t = time.perf_counter()
    if job["variant"] == "gaussian":  # the reference needs no phase 1
        model = GaussianModel.fit(prep.raw_features("train"))
    else:
        p1_cached = pipeline.phase1_is_cached(prep)
        phase1, _ = pipeline.fit_phase1_cached(prep, progress=False)
        t_p1 = time.perf_counter() - t
        t = time.perf_counter()
        model, history, _ = pipeline.fit_variant(prep, phase1, job["variant"], progress=False)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    ev = pipeline.evaluate(model, prep)
    t_eval = time.perf_counter() - t
    if job["variant"] != "gaussian":
        c = prep.cfg
        rates = diagnostics.boundary_rates(model, prep, c.cond_dim, c.beta, c.tau, c.normalizer, c.device,
                                           train_logps=ev["train_logps"])
    types = [str(x) for x in prep.test_types]
    return {"metrics": ev["metrics"], "prepare_s": t_prep, "phase1_s": t_p1, "phase1_from_cache": p1_cached,
            "fit_s": t_fit, "eval_s": t_eval,
            "data": {"n_train": len(prep.train_images), "n_labelled": len(prep.split.labelled),
                     "image_hw": list(prep.image_hw),
                     "n_anomaly_images": len(prep.anomaly_images), "n_test": len(types),
                     "test_counts": {t: types.count(t) for t in sorted(set(types))},
                     "seen_types": list(prep.split.seen_types), "unseen_types": list(prep.split.unseen_types)},
            "final_losses": history[-1] if history else {}, "rates": rates,
            "label_counts": diagnostics.label_counts(prep)}


# ---------------------------------------------------------------------------
# the pool
# ---------------------------------------------------------------------------

class JobRunner:
    """Runs jobs on ``workers`` spawned processes, highest priority first, never more
    jobs in flight than workers (so a late job can still be skipped for time).

    ``add(job, priority, then=None, optional=False, exclusive=False)``: ``then(job, result)``
    may add more jobs; an ``optional`` job is only started while ``elapsed + job["est_s"] /
    workers`` stays within ``budget_s``; an ``exclusive`` job waits until no other job is in
    flight and runs alone (a timing that must not share the cores with another job).
    """

    def __init__(self, workers: int = 2, budget_s: float | None = None, log=print):
        self.workers = workers
        self.budget_s = budget_s
        self.log = log
        self.queue: list[tuple[float, int, dict, object, bool, bool]] = []
        self.results: dict[str, dict] = {}
        self.skipped: list[dict] = []
        self._n = 0
        self._optional_est = 0.0  # estimated CPU seconds of the optional jobs already started
        self._seen: set[str] = set()

    def add(self, job: dict, priority: float = 0.0, then=None, optional: bool = False,
            exclusive: bool = False) -> None:
        key = job_key(job)
        if key in self._seen:
            return
        self._seen.add(key)
        self._n += 1
        self.queue.append((priority, self._n, job, then, optional, exclusive))

    def run(self) -> dict[str, dict]:

        t0 = time.perf_counter()
        inflight = {}
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=init_worker) as ex:
            while self.queue or inflight:
                while self.queue and len(inflight) < self.workers:
                    self.queue.sort(key=lambda q: (-q[0], q[1]))
                    if any(ex_ for *_, ex_ in inflight.values()) or (self.queue[0][5] and inflight):
                        break  # an exclusive job runs alone: wait for the cores to be free
                    prio, n, job, then, optional, exclusive = self.queue.pop(0)
                    elapsed = time.perf_counter() - t0
                    if optional and self.budget_s is not None and \
                            elapsed + (self._optional_est + job.get("est_s", 0)) / self.workers > self.budget_s:
                        self.log(f"  [{elapsed:6.0f} s] skipped for time: {describe_job(job)}")
                        self.skipped.append(job)
                        continue
                    if optional:
                        self._optional_est += job.get("est_s", 0)
                    inflight[ex.submit(run_job, job)] = (job, then, time.perf_counter(), exclusive)
                if not inflight:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    job, then, started, _ = inflight.pop(fut)
                    res = fut.result()
                    self.results[job_key(job)] = res
                    status = f"ERROR {res['error']}" if "error" in res else f"{res['job_wall_s']:.0f} s"
                    self.log(f"  [{time.perf_counter() - t0:6.0f} s] {describe_job(job)}: {status}")
                    if then is not None and "error" not in res:
                        then(job, res)
        return self.results

    def result(self, job: dict) -> dict | None:
        return self.results.get(job_key(job))


def describe_job(job: dict) -> str:
    """One log line naming a job."""
    if job["kind"] == "call":
        return f"{job['func'].split(':')[1]}({', '.join(f'{k}={v}' for k, v in (job.get('kwargs') or {}).items())})"
    ov = ",".join(f"{k}={v}" for k, v in sorted(job.get("overrides", {}).items()) if k != "cache_dir")
    v = f" {job['variant']}" if job.get("variant") else ""
    return f"{job['kind']} {job['dataset']} seed {job['seed']}{v}{' [' + ov + ']' if ov else ''}"
