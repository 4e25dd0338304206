"""Scaling: time and peak memory as the training set doubles (50 → 400) and at 128 / 256 px.

Each point runs in its own process (``python -m benchmarks.scaling '<json>'``) with a
fresh feature cache, so its peak RSS (``ru_maxrss``) is its own. A point = prepare
(features of the training and test images) + phase 1 for a few epochs + evaluation
on a fixed small test set. The texture set with 400 training images is generated
once; the smaller training sets are folders of symlinks to its first n images.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bgad_lite import BGADConfig, pipeline
from bgad_lite.data.textures import make_texture_dataset
from bgad_lite.explore.tables import markdown_table

from .common import DEFAULT_CACHE, REPO, stamp_line

N_TRAIN = (50, 100, 200, 400)
SIZES = (128, 256)


def scaling_data(cache_dir: Path, n_max: int = 400) -> Path:
    """The grass set with ``n_max`` training images (generated once), and per-n symlink roots."""

    root = Path(cache_dir) / f"scaling-data-{n_max}"
    make_texture_dataset(root, "grass", seed=0, n_train=n_max, n_test_good=10, n_per_type=5, size=256,
                         progress=False)
    return root


def _subset_root(full: Path, n: int) -> Path:
    sub = full.parent / f"{full.name}-n{n}"
    cat = sub / "grass"
    if not (cat / "train" / "good").is_dir():
        tmp = Path(tempfile.mkdtemp(dir=full.parent, prefix=f".n{n}-"))
        (tmp / "grass" / "train" / "good").mkdir(parents=True)
        src = full / "grass"
        for p in sorted((src / "train" / "good").glob("*.png"))[:n]:
            (tmp / "grass" / "train" / "good" / p.name).symlink_to(p.resolve())
        for d in ("test", "ground_truth"):
            (tmp / "grass" / d).symlink_to((src / d).resolve(), target_is_directory=True)
        try:
            os.replace(tmp, sub)
        except OSError:  # made meanwhile by someone else

            shutil.rmtree(tmp, ignore_errors=True)
    return sub


def run_point(data_root: str, n: int, size: int, epochs: int) -> dict:
    """One point, inside its own process."""


    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bgad-scale-") as cache:
        cfg = BGADConfig(data_dir=data_root, category="grass", image_size=size, n_anomalies=2, n_cutpaste=0,
                         epochs_phase1=epochs, cache_dir=cache)
        t0, c0 = time.perf_counter(), time.process_time()
        prep = pipeline.prepare(cfg, progress=False)
        t1, c1 = time.perf_counter(), time.process_time()
        flows, _ = pipeline.fit_phase1(prep, progress=False)
        t2, c2 = time.perf_counter(), time.process_time()
        pipeline.evaluate(flows, prep)
        t3, c3 = time.perf_counter(), time.process_time()
    fibers = sum(f.shape[0] * f.shape[2] * f.shape[3] for f in prep.train_features)
    return {"n_train": n, "image_size": size, "epochs": epochs, "n_test": len(prep.test_images),
            "train_fibers": fibers, "data_s": prep.timings_s["data"], "features_s": prep.timings_s["features"],
            "phase1_s": t2 - t1, "eval_s": t3 - t2, "total_s": t3 - t0,
            "prepare_cpu_s": c1 - c0, "phase1_cpu_s": c2 - c1, "eval_cpu_s": c3 - c2, "total_cpu_s": c3 - c0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_scaling(cache_dir: str = str(DEFAULT_CACHE), n_train=N_TRAIN, sizes=SIZES, epochs: int = 3) -> dict:
    full = scaling_data(Path(cache_dir), max(n_train))
    points = []
    plan = [(n, sizes[0]) for n in n_train] + [(100, s) for s in sizes[1:]]
    for n, size in plan:
        root = _subset_root(full, n)
        args = json.dumps({"data_root": str(root), "n": n, "size": size, "epochs": epochs})
        p = subprocess.run([sys.executable, "-m", "benchmarks.scaling", args], cwd=REPO,
                           capture_output=True, text=True)
        line = next((l for l in p.stdout.splitlines() if l.startswith("{")), None)
        points.append(json.loads(line) if line else {"n_train": n, "image_size": size,
                                                      "error": p.stderr[-1500:]})
    return {"epochs": epochs, "points": points}


def render_scaling(data: dict) -> str:
    pts = [p for p in data["points"] if "error" not in p]
    out = [stamp_line(data["machine"]), "",
           f"Each point in its own process (one torch thread, fresh feature cache): prepare (load + features of "
           f"train and a fixed test set of {pts[0]['n_test'] if pts else '?'} images) + phase 1 for "
           f"{data['epochs']} epochs + evaluation (which also scores the training set for the per-position "
           "reference m_l, so it grows with n too). × prev compares with the row of half the images (128 px) or "
           "half the side (256 px): ideal 2.00 for time when n doubles, 4.00 when the side doubles (4× the "
           "fibers); memory should grow far less — the cached features are small next to torch and timm "
           "themselves. The phase-1 ratio uses the *CPU* time of the process (wall time is listed too): other jobs share "
           "the machine, and CPU time is what contention disturbs least.", ""]
    rows = []
    by_key = {(p["n_train"], p["image_size"]): p for p in pts}
    for p in pts:
        # compare with the row this one doubles: half the images, or half the side
        prev = by_key.get((p["n_train"] // 2, p["image_size"])) if p["image_size"] == SIZES[0] else \
            by_key.get((p["n_train"], p["image_size"] // 2))
        ratio = lambda k: f"{p[k] / prev[k]:.2f}" if prev and prev[k] > 0 else "–"  # noqa: E731
        rows.append([p["n_train"], p["image_size"], f"{p['train_fibers']:,}", f"{p['features_s']:.1f}",
                     f"{p['phase1_s']:.1f}", f"{p['phase1_cpu_s']:.1f}", ratio("phase1_cpu_s"), f"{p['eval_s']:.1f}",
                     f"{p['total_s']:.1f}", ratio("total_s"), f"{p['peak_rss_mb']:.0f}", ratio("peak_rss_mb")])
    out += [markdown_table(rows, ["train images", "px", "train fibers", "features s", "phase 1 s", "phase 1 CPU s", "× prev",
                      "eval s", "total s", "× prev", "peak RSS MB", "× prev"]), ""]
    errs = [p for p in data["points"] if "error" in p]
    for e in errs:
        out.append(f"- ERROR n={e['n_train']} size={e['image_size']}: {e['error'][-300:]}")
    by = {(p["n_train"], p["image_size"]): p for p in pts}
    n_lo, n_hi = min(N_TRAIN), max(N_TRAIN)
    if (n_lo, 128) in by and (n_hi, 128) in by:
        a, b = by[(n_lo, 128)], by[(n_hi, 128)]
        r = b["phase1_cpu_s"] / a["phase1_cpu_s"]
        out.append(f"- {n_lo} → {n_hi} images ({n_hi // n_lo}× the data): phase 1 CPU time {r:.2f}× "
                   f"({'roughly linear' if 0.7 * n_hi / n_lo <= r <= 1.3 * n_hi / n_lo else 'not linear'}), "
                   f"peak memory {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}×.")
    if (100, 128) in by and (100, 256) in by:
        a, b = by[(100, 128)], by[(100, 256)]
        out.append(f"- 128 → 256 px (4× the fibers): features {b['features_s'] / a['features_s']:.2f}×, "
                   f"phase 1 CPU time {b['phase1_cpu_s'] / a['phase1_cpu_s']:.2f}×, peak memory {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}×.")
    return "\n".join(out)


def plot_scaling(data: dict, path: Path) -> None:
    import matplotlib  # heavy: only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in data["points"] if "error" not in p and p["image_size"] == 128]
    if len(pts) < 2:
        return
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    ns = [p["n_train"] for p in pts]
    for key, lab in (("features_s", "features (wall)"), ("phase1_s", "phase 1 (wall)"),
                     ("phase1_cpu_s", "phase 1 (CPU)"), ("total_s", "total (wall)")):
        axes[0].plot(ns, [p[key] for p in pts], "o-", label=lab, ms=4)
    ref = pts[0]["phase1_cpu_s"]
    axes[0].plot(ns, [ref * n / ns[0] for n in ns], "k:", lw=1, label="linear (from CPU)")
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("training images (128 px)")
    axes[0].set_ylabel("seconds")
    axes[0].legend(fontsize=6)
    axes[1].plot(ns, [p["peak_rss_mb"] for p in pts], "o-")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("training images (128 px)")
    axes[1].set_ylabel("peak RSS (MB)")
    axes[1].set_ylim(0, None)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    kw = json.loads(sys.argv[1])
    print(json.dumps(run_point(kw["data_root"], kw["n"], kw["size"], kw["epochs"])))
