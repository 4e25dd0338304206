"""The command: plan the jobs of the chosen sections, run them on two worker
processes, write one JSON per section, the plots and ``RESULTS.md``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from pathlib import Path

from bgad_lite import BGADConfig
from bgad_lite.config import PRESETS
from bgad_lite.data.defects import TEXTURES
from bgad_lite.data.textures import make_texture_dataset
from bgad_lite.prepare import default_data_root

from . import SECTIONS
from . import accuracy as acc
from .common import BENCH_DIR, DEFAULT_CACHE, DEFAULT_OUT, machine, read_json, write_json
from .jobs import BSDATA_ROOT, JobRunner
from .peers import anomalib_version, peer_job, refresh_ours, summarise_peers
from .report import TITLES, render_section, replot, write_results_md
from .scaling import plot_scaling

QUICK_SECTIONS = ("accuracy", "speed", "aupro")
QUICK_OVERRIDES = dict(PRESETS["fast"])  # as `bgad-lite run --preset fast`
SEEDS = (0, 1, 2)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a subset in a few minutes (fewer epochs, fewer sizes)")
    p.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--out", help="results folder (default benchmarks/results, or benchmarks/results/quick)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature / phase-1 cache (default benchmarks/.cache)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite RESULTS.md (and print it) from the JSON files already in the results folder")
    p.add_argument("--budget", type=float, default=1500.0,
                   help="optional jobs (bsdata seeds 1, 2) start only while elapsed + their estimated share "
                        "stays below this many seconds (default 1500)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    t_start = time.perf_counter()
    sections = tuple(s.strip() for s in args.only.split(",")) if args.only else (
        QUICK_SECTIONS if args.quick else SECTIONS)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        print(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    md_path = BENCH_DIR / "RESULTS.md" if out_dir.resolve() == DEFAULT_OUT.resolve() else out_dir / "RESULTS.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:

        replot(out_dir)
        print(write_results_md(out_dir, md_path, SECTIONS))
        return 0
    cache = str(Path(args.cache).resolve())
    quick = args.quick
    base = dict(QUICK_OVERRIDES) if quick else {}

    # heavy imports only now (OMP_WAIT_POLICY is set by __main__)


    defaults = dataclasses.asdict(BGADConfig())
    textures = ("grass",) if quick else TEXTURES
    seeds = (0,) if quick else SEEDS
    if any(s in sections for s in ("accuracy", "sensitivity")):
        for tex in (textures if "accuracy" in sections else ("grass",)):
            make_texture_dataset(default_data_root(), tex, seed=0, progress=False)  # before the workers race for it

    runner = JobRunner(args.workers, budget_s=args.budget)
    stamp = machine(f"1 per worker process, {args.workers} workers on {__import__('os').cpu_count()} CPUs "
                    "(flow training always 1)")
    clean = lambda ov: acc._clean(ov, defaults)  # noqa: E731

    # --- models: (dataset, seed) -> phase-2 runs sharing one phase-1 model --------------------
    # `gaussian` (acc.VARIANTS) needs no phase-1 model; it is queued after the phase-1 job like the
    # flow variants all the same, so that it finds that job's features in the cache instead of
    # extracting them in a second process at the same time.
    plan: dict[tuple, list] = defaultdict(list)
    if "accuracy" in sections:
        for tex in textures:
            for seed in seeds:
                plan[(tex, seed)] += [(v, {}) for v in acc.VARIANTS]
    if "sensitivity" in sections:
        plan[("grass", 0)] += [("unsupervised", {})] + [("bgad", ov) for _, _, ov in acc.sensitivity_points()]
    bs_seeds, bs_optional = (), ()
    if "bsdata" in sections and BSDATA_ROOT.is_dir():
        bs_seeds = seeds
        bs_optional = tuple(s for s in seeds if s != 0)  # seed 0 always, the others if time allows
        for seed in bs_seeds:
            plan[("bsdata", seed)] += [(v, {"image_size": acc.BSDATA_IMAGE_SIZE}) for v in acc.VARIANTS]
    for (dataset, seed), runs in plan.items():
        uniq = []
        for v, extra in runs:
            item = (v, clean({**base, **extra}))
            if item not in uniq:
                uniq.append(item)
        optional = dataset == "bsdata" and seed in bs_optional
        prio = 0.0 if optional else (10.5 if dataset == "bsdata" else 10.0)
        p1_base = clean({**base, "image_size": acc.BSDATA_IMAGE_SIZE}) if dataset == "bsdata" else clean(base)
        acc.add_model_jobs(runner, dataset, seed, uniq, p1_base, cache, priority=prio, optional=optional,
                           est_s=400.0)

    # --- measurements that are one function each -------------------------------------------
    calls = {}
    if "speed" in sections:
        if not quick:
            calls["e2e"] = ({"func": "benchmarks.speed:measure_e2e", "kwargs": {}}, 12.0)
        calls["cvo_lite0"] = ({"func": "benchmarks.speed:measure_cached_vs_official", "kwargs": {
            "backbone": "tf_efficientnet_lite0", "pretrained": True, "n_images": 64 if quick else 100,
            "epochs": 2 if quick else 3}}, 9.0)
        calls["cvo_b6"] = ({"func": "benchmarks.speed:measure_cached_vs_official", "kwargs": {
            "backbone": "tf_efficientnet_b6", "pretrained": False, "n_images": 32 if quick else 64,
            "epochs": 2 if quick else 3}}, 9.0)
        calls["throughput"] = ({"func": "benchmarks.speed:measure_throughput", "kwargs": {
            "seconds": 1.5 if quick else 3.0}}, 9.0)
    if "aupro" in sections:
        calls["aupro"] = ({"func": "benchmarks.aupro_bench:measure_aupro", "kwargs": {
            "sizes": [100] if quick else [100, 1000]}}, 9.5)
    if "scaling" in sections:
        calls["scaling"] = ({"func": "benchmarks.scaling:measure_scaling", "kwargs": {
            "cache_dir": cache, "epochs": 2 if quick else 5}}, 11.0)
    peer_jobs = []
    if "peers" in sections:

        if anomalib_version() is not None:
            for tex in textures:
                for seed in seeds:
                    peer_jobs.append(peer_job(tex, seed, base, cache))
            for seed in (seeds if BSDATA_ROOT.is_dir() else ()):
                peer_jobs.append(peer_job("bsdata", seed, clean({**base, "image_size": acc.BSDATA_IMAGE_SIZE}), cache))
        for job in peer_jobs:  # after the training jobs, which extract the features they read
            runner.add(job, priority=1.0)
    for name, (job, prio) in calls.items():
        # the end-to-end run is timed alone: its target is for the 2-core machine, not half of it
        runner.add({"kind": "call", **job}, priority=prio, exclusive=name == "e2e")

    print(f"# python -m benchmarks {' '.join(argv)}\n{len(runner.queue)} initial jobs on {args.workers} workers; "
          f"sections: {', '.join(sections)}", flush=True)
    runner.run()
    call_res = {name: runner.result({"kind": "call", **job}) for name, (job, _) in calls.items()}

    # --- section JSONs ------------------------------------------------------------------------
    written = []

    def save(name, data):
        data.setdefault("machine", stamp)
        data.setdefault("defaults", BGADConfig().to_dict())  # what "the library defaults" were in this run
        data["mode"] = "quick" if quick else "full"
        write_json(out_dir / f"{name}.json", data)
        written.append(name)

    if "accuracy" in sections:
        data = acc.summarise_textures(runner, textures, seeds, clean(base), cache, stamp)
        save("accuracy", data)
        if not quick:
            acc.plot_accuracy(data, out_dir / "accuracy.png")
    if "bsdata" in sections:
        if not BSDATA_ROOT.is_dir():
            save("bsdata", {"absent": f"{BSDATA_ROOT} is absent (the fixture lives in ../shared/datasets/bsdata)."})
        else:
            skipped = [j["seed"] for j in runner.skipped if j.get("dataset") == "bsdata"]
            save("bsdata", acc.summarise_bsdata(runner, bs_seeds, clean({**base, "image_size": acc.BSDATA_IMAGE_SIZE}),
                                               cache, stamp, skipped))
    if "sensitivity" in sections:
        data = acc.summarise_sensitivity(runner, 0, clean(base), cache, defaults, stamp)
        save("sensitivity", data)
        if not quick:
            acc.plot_sensitivity(data, out_dir / "sensitivity.png")
    if "speed" in sections:
        if call_res.get("e2e"):
            call_res["e2e"]["alone"] = True  # queued as an exclusive job
        save("speed", {"e2e": call_res.get("e2e"),
                       "cached_vs_official": [call_res[k] for k in ("cvo_lite0", "cvo_b6") if call_res.get(k)],
                       "throughput": call_res.get("throughput")})
    if "aupro" in sections:
        save("aupro", call_res["aupro"])
    if "scaling" in sections:
        data = call_res["scaling"]
        save("scaling", data)
        if not quick and "error" not in data:
            plot_scaling(data, out_dir / "scaling.png")

    if "peers" in sections:

        if anomalib_version() is None:
            kept = read_json(out_dir / "peers.json")
            if kept and kept.get("runs"):  # measured where anomalib was installed: not replaced by a note
                print(f"peers: anomalib is not installed here; {out_dir / 'peers.json'} (measured "
                      f"{kept['machine']['date']}) is kept, with bgad-lite's rows from the accuracy sections",
                      flush=True)
                write_json(out_dir / "peers.json", refresh_ours(kept, read_json(out_dir / "accuracy.json"),
                                                                read_json(out_dir / "bsdata.json")))
                written.append("peers")
            else:
                save("peers", {"absent": "anomalib is not installed in this environment (pip install anomalib==2.7.0)"})
        else:
            save("peers", summarise_peers(runner, peer_jobs, stamp, read_json(out_dir / "accuracy.json"),
                                          read_json(out_dir / "bsdata.json")))

    total = time.perf_counter() - t_start
    skipped = [f"bsdata seed {j['seed']}" if j.get("dataset") else str(j) for j in runner.skipped]
    write_json(out_dir / "run.json", {"argv": argv, "mode": "quick" if quick else "full", "sections": list(sections),
                                      "workers": args.workers, "total_s": total, "skipped": skipped,
                                      "machine": stamp})

    print()
    for name in written:
        print(f"## {TITLES[name]}\n\n{render_section(name, read_json(out_dir / f'{name}.json'))}\n", flush=True)
    write_results_md(out_dir, md_path, SECTIONS)
    print(f"wrote {md_path} and {out_dir}/*.json; total wall time {total:.0f} s ({total / 60:.1f} min)")
    return 0
