"""``bgad-lite`` — the command line, a thin layer over :func:`bgad_lite.pipeline.run`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bgad-lite", description="BGAD supervised anomaly detection, small and readable.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train unsupervised, bgad and naive_push, evaluate, write results.json")
    r.add_argument("--data", help="MVTec-layout root folder (default: the embedded texture data set)")
    r.add_argument("--category", help="category folder under --data (default: grass)")
    r.add_argument("--backbone", help="timm backbone (default: tf_efficientnet_lite0, offline weights)")
    r.add_argument("--image-size", type=int, help="input size in pixels: images get about image-size² pixels, "
                                                  "their aspect ratio kept (default: 128)")
    r.add_argument("--seed", type=int, help="random seed (default: 0)")
    r.add_argument("--seen-types", help="comma-separated defect types the labelled anomalies come from "
                                        "(default: the first half of the sorted types)")
    r.add_argument("--n-anomalies", type=int, help="k, the number of labelled anomalies (default: 10)")
    r.add_argument("--align-positions", choices=("auto", "on", "off"),
                   help="map each feature position's Gaussian onto the pooled one before the flows "
                        "(bgad_lite.align): auto (default) where positions differ, on at every level, off")
    r.add_argument("--out", help="output folder (default: runs/default)")
    r.add_argument("--device", help="cpu, cuda or auto (default: cpu)")
    r.add_argument("--config", help="a config JSON file; command-line flags override it")
    r.add_argument("--preset", choices=("default", "fast", "paper"),
                   help="a named group of settings, applied before the flags above: fast = a smoke run; "
                        "paper = the paper's b6 / 256 px / K=8 / P=128 / lr 2e-4 / 8 + 192 epochs (for a GPU)")
    r.add_argument("--variants", help="comma-separated variants to fit and evaluate (default: all of "
                                      "gaussian, unsupervised, bgad, naive_push)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    n = sub.add_parser("notebooks",
                       help="execute the notebook course with papermill, write executed copies and HTML")
    n.add_argument("--out", default="runs/notebooks", help="folder for the executed notebooks (default: runs/notebooks)")
    n.add_argument("--full", action="store_true", help="full runs (default: SMOKE, a fast check that all runs)")
    n.add_argument("--only", help="comma-separated notebooks or prefixes, e.g. 01,04 (default: all)")
    n.add_argument("--student", action="store_true", help="execute the student copies in notebooks/student/")
    s = sub.add_parser("student", help="write the student copies of the notebooks (solutions taken out) "
                                       "into notebooks/student/")
    s.add_argument("--check", action="store_true", help="write nothing; exit 1 if a copy is missing or out of date")
    sl = sub.add_parser("slides", help="write slide-ready figures (boundary histograms, anomaly maps, "
                                       "seen/unseen table, the margin over epochs) into a folder")
    sl.add_argument("--out", default="runs/slides", help="output folder (default: runs/slides)")
    sl.add_argument("--category", default="grass", help="embedded texture (default: grass)")
    sl.add_argument("--cache", default="runs/cache", help="feature and phase-1 cache (default: runs/cache, "
                                                           "shared with the notebooks)")
    sl.add_argument("--dpi", type=int, default=200, help="resolution (default: 200 dpi, 2560 px wide)")
    sl.add_argument("--smoke", action="store_true", help="a fast run at 64 px with few epochs (only checks that all runs)")
    return p


def config_from_args(args: argparse.Namespace):
    # imports inside the functions: `bgad-lite student` should not wait for torch (heavy) to load
    from .config import BGADConfig, with_preset

    cfg = BGADConfig.from_json(args.config) if args.config else BGADConfig()
    if args.preset:
        cfg = with_preset(cfg, args.preset)
    flags = {"data_dir": args.data, "category": args.category, "backbone": args.backbone,
             "image_size": args.image_size, "seed": args.seed, "out_dir": args.out, "device": args.device,
             "n_anomalies": args.n_anomalies, "align_positions": args.align_positions,
             "seen_types": tuple(t.strip() for t in args.seen_types.split(",")) if args.seen_types else None}
    changes = {k: v for k, v in flags.items() if v is not None}
    return dataclasses.replace(cfg, **changes)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .config import BGADError

    if args.command == "student":
        from .course.student import stale_student_copies, write_student_copies

        if args.check:
            stale = stale_student_copies()
            for name in stale:
                path = "bgad_lite/course/solutions.py" if name == "solutions" else f"notebooks/student/{name}.ipynb"
                print(f"out of date: {path} (run `bgad-lite student`)", file=sys.stderr)
            return 1 if stale else 0
        for path in write_student_copies():
            print(f"wrote {path}")
        return 0

    if args.command == "slides":
        from .course.slides import write_slides

        try:
            paths = write_slides(args.out, category=args.category, cache_dir=args.cache, dpi=args.dpi,
                                 smoke=args.smoke)
        except BGADError as e:
            print(f"bgad-lite: error: {e}", file=sys.stderr)
            return 2
        for path in paths:
            print(f"wrote {path}")
        return 0

    if args.command == "notebooks":
        from .course.notebooks import run_notebooks

        try:
            times = run_notebooks(args.out, smoke=not args.full, names=args.only, student=args.student)
        except BGADError as e:
            print(f"bgad-lite: error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # a cell failed: papermill's message names it; the partial copy is in --out
            print(f"bgad-lite: error: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        for name, seconds in times.items():
            print(f"{name:<24} {seconds:7.1f} s")
        print(f"{'total':<24} {sum(times.values()):7.1f} s; executed notebooks and HTML in {args.out}/")
        return 0

    try:
        cfg = config_from_args(args)
        if args.device is None and cfg.device == "cpu":
            import torch

            if torch.cuda.is_available():
                print("bgad-lite: note: torch sees a CUDA GPU, but this run uses the CPU (the default, which gives "
                      "the README's numbers); --device cuda (or auto) trains on the GPU.", file=sys.stderr)
        from .config import VARIANTS
        from .pipeline import level_table, operating_table, results_table, run

        variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else VARIANTS
        summary = run(cfg, progress=not args.quiet, variants=variants)
    except BGADError as e:
        print(f"bgad-lite: error: {e}", file=sys.stderr)
        return 2
    print()
    print(results_table(summary))
    op = next(iter(summary["results"].values()))["operating_point"]
    print(f"\nat a threshold set from {op['n_normals']} {op['from']} alone, for "
          f"{op['false_alarm_target']:.0%} false alarms:\n")
    print(operating_table(summary))
    print("\nimage AUROC (all) from each feature level alone:\n")
    print(level_table(summary))
    h, w = summary["data"]["image_hw"]
    if h != w:  # images.input_shape: the data's aspect ratio kept at about image_size² pixels
        print(f"\nimages resized to {h} x {w} (height x width): their aspect ratio at about {cfg.image_size}² pixels")
    alphas = summary["data"].get("align_alpha")
    if alphas is not None:  # align.py: which levels the flows saw aligned, and why
        aligned = [str(j) for j, on in enumerate(summary["data"]["aligned_levels"]) if on]
        print(f"\npositions aligned (--align-positions {cfg.align_positions}): alpha per level "
              f"{' / '.join(f'{a:.2f}' for a in alphas)}; levels aligned: {', '.join(aligned) or 'none'}")
    print()
    t = summary["timings_s"]
    print(f"total {t['total']:.0f} s; results in {cfg.out_dir}/results.json, figures in {cfg.out_dir}/figures/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
