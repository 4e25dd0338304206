"""AUPRO: the library's exact vectorised ``metrics.aupro`` against an official-style loop.

``aupro_official_style`` is written the way the MVTec AD / CFLOW / BGAD evaluation
code computes AUPRO — 1000 thresholds linearly spaced between the lowest and the
highest score, a Python loop over thresholds, ``skimage.measure.label`` and
``regionprops`` for every image at every threshold, FPR over all normal pixels —
with one change: its integration matches ours (points with FPR ≤ limit, PRO
interpolated at the limit, trapezoid rule, divided by the limit) instead of the
official min-max rescaling of the FPR axis, so that the two differ *only* by
sampling 1000 thresholds instead of every distinct score. Pixels are flagged
when ``score >= threshold``, as in ours.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from bgad_lite.explore.tables import markdown_table
from bgad_lite.metrics import aupro, normalised_area
from tests.oracles import aupro_reference  # the tests' slow, literal reference

from .common import stamp_line, verdict

SPEEDUP_TARGET = 50.0
AGREEMENT_TARGET = 1e-4
EXACT_TOL = 1e-9


def aupro_official_style(maps, masks, fpr_limit: float = 0.3, n_thresholds: int = 1000,
                         only_steps=None) -> float | dict:
    """Official-style AUPRO. ``only_steps``: evaluate just these threshold indices (for
    timing a subset and extrapolating); then a dict of the raw curve points is returned."""
    from skimage.measure import label, regionprops  # heavy: only the official-style reference needs it

    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    thresholds = np.linspace(maps.max(), maps.min(), n_thresholds)  # descending
    steps = range(n_thresholds) if only_steps is None else only_steps
    normal = ~masks
    n_normal = normal.sum()
    binary = np.zeros_like(maps, dtype=bool)
    fprs, pros = [], []
    for step in steps:
        binary[:] = maps >= thresholds[step]
        pro = []
        for i in range(len(binary)):
            label_map = label(masks[i], connectivity=2)
            for prop in regionprops(label_map):
                r0, c0, r1, c1 = prop.bbox
                flagged = np.logical_and(binary[i][r0:r1, c0:c1], prop.image).sum()
                pro.append(flagged / prop.area)
        pros.append(float(np.mean(pro)))
        fprs.append(float(np.logical_and(normal, binary).sum() / n_normal))
    if only_steps is not None:
        return {"fpr": fprs, "pro": pros}
    return normalised_area(np.array([0.0] + fprs), np.array([0.0] + pros), fpr_limit)  # the library's integration


def make_blob_case(n: int, size: int = 128, seed: int = 0, levels: int | None = None):
    """(maps float32 (n, size, size), masks bool): half the images carry 1–3 elliptic blobs;
    maps are smooth noise plus a blob signal of random strength (some blobs barely show).
    ``levels``: quantise the maps to that many distinct values."""

    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    signal = np.zeros((n, size, size), np.float32)
    for i in range(n // 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0.1 * size, 0.9 * size, 2)
            ry, rx = rng.uniform(0.02 * size, 0.1 * size, 2)
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            masks[i] |= blob
            signal[i][blob] += rng.uniform(0.0, 1.5)
    noise = ndimage.gaussian_filter(rng.normal(size=(n, size, size)).astype(np.float32), (0, 2, 2)) * 3
    maps = ndimage.gaussian_filter(noise + signal, (0, 1, 1)).astype(np.float32)
    if levels:
        lo, hi = maps.min(), maps.max()
        maps = (np.round((maps - lo) / (hi - lo) * (levels - 1)) / (levels - 1)).astype(np.float32)
    return maps, masks


def _best_time(fn, repeats: int) -> tuple[float, object]:
    """Best CPU time of this single-threaded process over ``repeats`` calls, and the value."""
    best, val = float("inf"), None
    for _ in range(repeats):
        t = time.process_time()
        val = fn()
        best = min(best, time.process_time() - t)
    return best, val


def measure_aupro(sizes=(100, 1000), image_size: int = 128, full_official_max: int = 100,
                  subset_thresholds: int = 50) -> dict:

    out = {"image_size": image_size, "sizes": []}
    # exactness, on small cases the slow references can afford
    maps, masks = make_blob_case(8, 48, seed=1)
    ours, ref = aupro(maps, masks), aupro_reference(maps, masks)
    out["exact_continuous"] = {"case": "8 images 48x48, continuous scores", "aupro": ours, "aupro_reference": ref,
                               "abs_diff": abs(ours - ref), "official_style": aupro_official_style(maps, masks)}
    out["exact_continuous"]["official_abs_diff"] = abs(out["exact_continuous"]["official_style"] - ours)
    maps, masks = make_blob_case(16, 64, seed=2, levels=64)
    ours, ref, off = aupro(maps, masks), aupro_reference(maps, masks), aupro_official_style(maps, masks)
    out["exact_quantised"] = {"case": "16 images 64x64, 64 distinct scores", "aupro": ours, "aupro_reference": ref,
                              "abs_diff": abs(ours - ref), "official_style": off, "official_abs_diff": abs(off - ours)}

    for n in sizes:
        maps, masks = make_blob_case(n, image_size, seed=0)
        t_ours, v_ours = _best_time(lambda: aupro(maps, masks), 3 if n <= 100 else 2)
        flat = -maps.astype(np.float64).ravel()
        t_sort, _ = _best_time(lambda: np.argsort(flat, kind="stable"), 1)
        row = {"n_images": n, "n_pixels": int(maps.size), "n_regions": None, "ours_s": t_ours, "aupro": v_ours,
               "stable_argsort_s": t_sort}
        if n <= full_official_max:
            t = time.process_time()
            v_off = aupro_official_style(maps, masks)
            row.update(official_s=time.process_time() - t, official_extrapolated=False, official=v_off,
                       official_abs_diff=abs(v_off - v_ours))
        else:
            steps = np.linspace(0, 999, subset_thresholds).round().astype(int)
            t = time.process_time()
            aupro_official_style(maps, masks, only_steps=steps)
            row.update(official_s=(time.process_time() - t) * 1000 / subset_thresholds, official_extrapolated=True,
                       official_subset=subset_thresholds, official=None, official_abs_diff=None)
        row["speedup"] = row["official_s"] / t_ours
        out["sizes"].append(row)
    return out


def render_aupro(data: dict) -> str:
    out = [stamp_line(data["machine"]), "",
           f"Synthetic anomaly maps of {data['image_size']}x{data['image_size']} px (smooth noise; half the images "
           "carry 1–3 elliptic blob masks with a signal of random strength). `aupro` = `bgad_lite.metrics.aupro` "
           "(exact: every distinct score is a threshold). Official style = 1000 thresholds linearly spaced between "
           "the min and max score, a Python loop with `skimage.measure.label` + `regionprops` per image per "
           "threshold (as in the MVTec AD / CFLOW / BGAD code), integrated exactly like ours (interpolated at "
           "FPR 0.3), so the two differ only in the threshold sampling. Times are CPU seconds of the single-threaded process (best of 2–3 runs for ours; "
           "other jobs share the machine, and CPU time is what they disturb least).", ""]
    rows = []
    for r in data["sizes"]:
        off = f"{r['official_s']:.1f}" + (f" (extrapolated from {r['official_subset']} of 1000 thresholds)"
                                          if r["official_extrapolated"] else "")
        rows.append([r["n_images"], off, f"{r['ours_s']:.2f}", f"**{r['speedup']:.0f}×**",
                     verdict(r["speedup"] >= SPEEDUP_TARGET), f"{r['stable_argsort_s']:.2f}",
                     "–" if r["official_abs_diff"] is None else f"{r['official_abs_diff']:.1e}"])
    out += [markdown_table(rows, ["test images", "official style s", "aupro s", "speed-up", f"target ≥ {SPEEDUP_TARGET:.0f}×",
                      "of which one stable argsort s", "abs diff official vs aupro"]), ""]
    ec, eq = data["exact_continuous"], data["exact_quantised"]
    out += ["**Agreement**", "",
            markdown_table([[ec["case"], f"{ec['aupro']:.6f}", f"{ec['abs_diff']:.1e}", f"{ec['official_abs_diff']:.1e}"],
                      [eq["case"], f"{eq['aupro']:.6f}", f"{eq['abs_diff']:.1e}", f"{eq['official_abs_diff']:.1e}"]]
                     + [[f"{r['n_images']} images {data['image_size']}², continuous", f"{r['aupro']:.6f}", "–",
                         f"{r['official_abs_diff']:.1e}"] for r in data["sizes"] if r["official_abs_diff"] is not None], ["case", "aupro", "abs diff vs aupro_reference (exact loop)", "abs diff official style vs aupro"]),
            ""]
    exact_ok = ec["abs_diff"] <= EXACT_TOL and eq["abs_diff"] <= EXACT_TOL
    out.append(f"- exact reference within {EXACT_TOL:g}: {verdict(exact_ok)}.")
    cont = [r["official_abs_diff"] for r in data["sizes"] if r["official_abs_diff"] is not None] + [ec["official_abs_diff"]]
    worst = max(cont)
    out.append(f"- official style within {AGREEMENT_TARGET:g} on continuous scores: {verdict(worst <= AGREEMENT_TARGET)} "
               f"(largest difference {worst:.1e}). With 64 distinct scores, 1000 thresholds hit every one and the "
               f"difference is {eq['official_abs_diff']:.0e}; with continuous scores the official curve only has "
               "1000 points, and the PRO curve between them is interpolated linearly — that sampling error, not a "
               "difference in definition, is what remains." if worst > AGREEMENT_TARGET else
               f"- official style within {AGREEMENT_TARGET:g}: {verdict(True)} (largest difference {worst:.1e}).")
    slow = [r for r in data["sizes"] if r["speedup"] < SPEEDUP_TARGET]
    if slow:
        r = slow[-1]
        out.append(f"- Why the speed-up misses {SPEEDUP_TARGET:.0f}× at {r['n_images']} images: `aupro` sorts all "
                   f"{r['n_pixels'] / 1e6:.1f} M pixel scores; one stable `argsort` alone takes "
                   f"{r['stable_argsort_s']:.2f} s of its {r['ours_s']:.2f} s, and the rest are full-size temporaries "
                   "(weights, cumulative sums) — while the official-style loop's cost grows only with images × "
                   "thresholds.")
    return "\n".join(out)
