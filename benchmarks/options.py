"""One setting against the defaults: ``python -m benchmarks.options '{"boundary": "fixed"}'``.

Trains ``unsupervised`` and ``bgad`` with the override on every data set and seed of the
accuracy benchmarks (bsdata at its benchmark size, when the fixture is there), on the benchmarks'
job runner (phase 1 once per data set and seed, two jobs at a time), and prints their image AUROC (all / seen / unseen) and AUPRO beside the defaults' runs
read from ``benchmarks/results/{accuracy,bsdata}.json`` — the means over the seeds both have,
and the change. It writes ``benchmarks/results/options/<name>.json``. This is how the "Tried,
not kept" measurements of the README are made; it does not touch ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bgad_lite.config import BGADConfig, BGADError
from bgad_lite.data.textures import make_texture_dataset
from bgad_lite.explore.tables import markdown_table
from bgad_lite.prepare import default_data_root

from . import accuracy as acc
from .common import DEFAULT_CACHE, DEFAULT_OUT, machine, mean_std, read_json, write_json
from .jobs import BSDATA_ROOT, JobRunner

DATASETS = ("grass", "gravel", "brick", "bsdata")
SEEDS = (0, 1, 2)
VARIANTS = ("unsupervised", "bgad")
COLUMNS = (("all", "image_auroc"), ("seen", "image_auroc"), ("unseen", "image_auroc"), ("all", "aupro"))


def parse_overrides(text: str) -> dict:
    """The override JSON, checked against :class:`BGADConfig` (a clear error for a bad key or value)."""

    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise BGADError(f"the overrides must be a JSON object such as '{{\"boundary\": \"fixed\"}}': {e.msg}.") \
            from None
    if not isinstance(overrides, dict) or not overrides:
        raise BGADError("the overrides must be a non-empty JSON object of BGADConfig settings.")
    BGADConfig.from_dict({**BGADConfig().to_dict(), **overrides})  # raises on an unknown key or a bad value
    return overrides


def metric_of(run: dict, subset: str, metric: str):
    node = run.get("metrics", {}).get(subset)
    return None if node is None else node.get(metric)


def compare_runs(base: list[dict], new: list[dict]) -> list[dict]:
    """Per (data set, variant): the means over the seeds both lists have, for every column.

    ``base`` and ``new`` hold runs ``{"dataset", "seed", "variant", "metrics"}``; a row holds
    ``{"dataset", "variant", "seeds", "<subset>/<metric>": (mean base, mean new, change)}``.
    """
    index = {(r["dataset"], r["seed"], r["variant"]): r for r in base}
    rows = []
    for ds in dict.fromkeys(r["dataset"] for r in new):
        for v in dict.fromkeys(r["variant"] for r in new if r["dataset"] == ds):
            pairs = [(index[(ds, r["seed"], v)], r) for r in new
                     if r["dataset"] == ds and r["variant"] == v and (ds, r["seed"], v) in index]
            row = {"dataset": ds, "variant": v, "seeds": sorted(n["seed"] for _, n in pairs)}
            for subset, metric in COLUMNS:
                vals = [(metric_of(b, subset, metric), metric_of(n, subset, metric)) for b, n in pairs]
                vals = [(b, n) for b, n in vals if b is not None and n is not None]
                if vals:
                    mb, mn = mean_std([b for b, _ in vals])[0], mean_std([n for _, n in vals])[0]
                    row[f"{subset}/{metric}"] = (mb, mn, mn - mb)
            rows.append(row)
    return rows


def render(rows: list[dict]) -> str:
    head = ["data set", "variant", "seeds"] + [f"{s} {'AUPRO' if m == 'aupro' else 'image AUROC'}" for s, m in COLUMNS]
    body = []
    for r in rows:
        cells = []
        for subset, metric in COLUMNS:
            c = r.get(f"{subset}/{metric}")
            cells.append("—" if c is None else f"{c[0]:.3f} → {c[1]:.3f} ({c[2]:+.3f})")
        body.append([r["dataset"], r["variant"], ",".join(map(str, r["seeds"]))] + cells)
    return markdown_table(body, head)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.options", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", help="a JSON object of BGADConfig settings, e.g. '{\"boundary\": \"fixed\"}'")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--name", help="output name (default: the override keys)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    try:
        overrides = parse_overrides(args.overrides)
    except BGADError as e:
        print(f"benchmarks.options: error: {e}", file=sys.stderr)
        return 2


    datasets = [d for d in args.datasets.split(",") if d != "bsdata" or BSDATA_ROOT.is_dir()]
    for tex in (d for d in datasets if d != "bsdata"):
        make_texture_dataset(default_data_root(), tex, seed=0, progress=False)  # before the workers race for it
    seeds = [int(s) for s in args.seeds.split(",")]
    cache = str(Path(args.cache).resolve())
    size = lambda ds: {"image_size": acc.BSDATA_IMAGE_SIZE} if ds == "bsdata" else {}  # noqa: E731
    t0 = time.perf_counter()
    runner = JobRunner(2)
    for seed in seeds:  # phase 1 once per (data set, seed), then the two variants from it
        for ds in datasets:
            ov = {**size(ds), **overrides}
            acc.add_model_jobs(runner, ds, seed, [(v, ov) for v in VARIANTS], ov, cache)
    runner.run()
    runs = []
    for seed in seeds:
        for ds in datasets:
            for v in VARIANTS:
                out = runner.result(acc.variant_job(ds, seed, v, {**size(ds), **overrides}, cache))
                if out is not None and "error" not in out:
                    runs.append({"dataset": ds, "seed": seed, "variant": v, "metrics": out["metrics"],
                                 "rates": out.get("rates")})
    base = []
    for name in ("accuracy", "bsdata"):
        path = DEFAULT_OUT / f"{name}.json"
        if path.exists():
            base += read_json(path).get("runs", [])
    rows = compare_runs(base, runs)
    print(f"\n{args.overrides} against the defaults (benchmarks/results), means over the seeds both have:\n")
    print(render(rows))
    name = args.name or "-".join(sorted(overrides))
    (DEFAULT_OUT / "options").mkdir(parents=True, exist_ok=True)
    write_json(DEFAULT_OUT / "options" / f"{name}.json", {
        "overrides": overrides, "machine": machine("1 per worker process, 2 workers"), "runs": runs,
        "comparison": rows, "wall_s": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
