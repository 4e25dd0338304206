"""Peers: anomalib's PaDiM and PatchCore on exactly the benchmark's splits, images and weights.

An optional section (``python -m benchmarks --only peers``): it runs only where anomalib is
installed (``pip install anomalib==2.7.0``; the project does not depend on it), and otherwise
records why it did not. What makes the comparison fair, and avoids the known pitfalls:

- **The same data.** Each (data set, seed) is prepared by the library exactly as for the
  accuracy jobs (``benchmarks.jobs._prepare``): the same few-shot split, so the labelled
  images have left the test set; the same resized images (the aspect-kept input shape);
  the same test images and masks. anomalib's datamodules are not used (they split the test set
  in half for validation by default).
- **The same backbone and weights.** anomalib's torch models (``PadimModel``,
  ``PatchcoreModel``) are built on ``tf_efficientnet_lite0`` without a download, and the
  library's offline ImageNet weights are loaded into their feature extractor; inputs are
  normalised as the library normalises them.
- **The same metrics.** The maps and image scores the models return are scored with
  ``bgad_lite.evaluate.split_metrics`` (scikit-learn AUROC, the exact AUPRO), not with
  anomalib's torchmetrics evaluators, which apply a sigmoid to raw scores unless they are
  normalised first.

PaDiM: the three levels the flows see (``blocks.1/2/4``: 24 + 40 + 112 = 176 channels, stride 4),
100 of them drawn at random as in PaDiM (anomalib's count for resnet18), a Gaussian per position,
the Mahalanobis map upsampled and blurred (σ = 4), the image score its maximum. PatchCore: levels
``blocks.2/4`` (the middle pair, as layer2 / layer3 of a ResNet), 3 × 3 neighbourhood pooling,
a 10 % coreset, nearest-neighbour distances, 9 neighbours for the image score's re-weighting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

import numpy as np
import torch

from bgad_lite.evaluate import split_metrics
from bgad_lite.explore.tables import markdown_table
from bgad_lite.features import create_backbone

from .common import fmt_mean_std, fmt_num, stamp_line
from .jobs import _prepare

PADIM_LAYERS = ["blocks.1", "blocks.2", "blocks.4"]  # = the library's out_indices (1, 2, 3)
PATCHCORE_LAYERS = ["blocks.2", "blocks.4"]
PADIM_FEATURES = 100
CORESET_RATIO = 0.1
PEERS = ("padim", "patchcore")


def _fixed_mmap_threshold(nbytes: int = 8 << 20) -> None:
    """Serve allocations above ``nbytes`` with mmap, freed at once (glibc only; elsewhere nothing).

    anomalib's k-center-greedy coreset allocates a (rows × dims) temporary per selected
    point. Once glibc has raised its *dynamic* mmap threshold (after any larger block was
    freed: PaDiM's fit, or an earlier job of the same worker), those temporaries come from
    the heap instead, and the process grew by ~17 MB per point here (24 GB before the coreset
    of one texture was done). A fixed threshold turns the dynamic one off.
    """

    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass


def anomalib_version() -> str | None:
    try:
        import anomalib  # optional: the peers run only where it is installed
    except ImportError:
        return None
    return anomalib.__version__


def _inputs(images, backbone):
    """(N, H, W, 3) float images in [0, 1] -> (N, 3, H, W), normalised as the library's backbone expects."""

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    return (x - mean) / std


def _with_library_weights(model, backbone) -> None:
    """Load the library's offline lite0 weights into an anomalib model's timm feature extractor."""
    missing, unexpected = model.feature_extractor.feature_extractor.load_state_dict(backbone.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"the anomalib feature extractor lacks weights for {missing[:3]}...")


def _batches(x, size=16):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def run_peer(name: str, prep, seed: int) -> tuple:
    """Fit one peer on ``prep``'s training images, score its test images -> (maps, scores, fit_s, eval_s)."""


    cfg = prep.cfg
    backbone = create_backbone(cfg.backbone, cfg.pretrained, seed=cfg.seed)
    torch.manual_seed(seed)  # PaDiM's random channels, PatchCore's coreset start
    t0 = time.perf_counter()
    with torch.no_grad():
        model = _fit_peer(name, prep, backbone)
    fit_s = time.perf_counter() - t0
    model.eval()
    maps, scores = [], []
    with torch.no_grad():
        for x in _batches(_inputs(prep.test_images, backbone)):
            out = model(x)
            maps.append(out.anomaly_map.reshape(len(x), *x.shape[2:]).numpy())  # (b, H, W)
            scores.append(out.pred_score.reshape(len(x)).numpy())
    return np.concatenate(maps), np.concatenate(scores), fit_s, time.perf_counter() - t0 - fit_s


def _fit_peer(name: str, prep, backbone):
    cfg = prep.cfg
    if name == "padim":
        from anomalib.models.image.padim.torch_model import PadimModel  # optional, as above

        model = PadimModel(backbone=cfg.backbone, layers=PADIM_LAYERS, pre_trained=False, n_features=PADIM_FEATURES)
        _with_library_weights(model, backbone)
        model.train()
        for x in _batches(_inputs(prep.train_images, backbone)):
            model(x)
        model.fit()
    elif name == "patchcore":
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel  # optional, as above

        model = PatchcoreModel(layers=PATCHCORE_LAYERS, backbone=cfg.backbone, pre_trained=False)
        _with_library_weights(model, backbone)
        model.train()
        for x in _batches(_inputs(prep.train_images, backbone)):
            model(x)
        model.subsample_embedding(CORESET_RATIO)
    else:
        raise ValueError(f"unknown peer {name!r}; choose from {PEERS}")
    return model


def measure_peers(dataset: str, seed: int, overrides: dict, cache_dir: str) -> dict:
    """PaDiM and PatchCore on one (data set, seed), prepared as the accuracy jobs prepare it."""
    version = anomalib_version()
    if version is None:
        return {"absent": "anomalib is not installed (pip install anomalib==2.7.0)"}
    torch.set_num_threads(1)
    _fixed_mmap_threshold()
    _, prep, prepare_s = _prepare(dataset, seed, overrides, cache_dir)
    out = {"dataset": dataset, "seed": seed, "anomalib": version, "image_hw": list(prep.image_hw),
           "prepare_s": prepare_s, "peers": {}}
    for name in PEERS:
        maps, scores, fit_s, eval_s = run_peer(name, prep, seed)
        out["peers"][name] = {"metrics": split_metrics(maps, scores, prep), "fit_s": fit_s, "eval_s": eval_s}
    return out


# ---------------------------------------------------------------------------
# summary and table
# ---------------------------------------------------------------------------

OURS = ("gaussian", "unsupervised", "bgad")  # bgad-lite's rows beside the peers


def peer_job(dataset: str, seed: int, overrides: dict, cache_dir: str) -> dict:
    return {"kind": "call", "func": "benchmarks.peers:measure_peers",
            "kwargs": {"dataset": dataset, "seed": seed, "overrides": dict(overrides), "cache_dir": cache_dir}}


def _ours(section: dict | None, datasets) -> dict:
    """bgad-lite's runs of ``OURS`` from an accuracy / bsdata section JSON: {dataset: {variant: [metrics per seed]}}."""
    out: dict = {}
    for r in (section or {}).get("runs") or []:
        if r["dataset"] in datasets and r["variant"] in OURS:
            out.setdefault(r["dataset"], {}).setdefault(r["variant"], []).append(
                {"seed": r["seed"], "metrics": r["metrics"], "fit_s": r.get("fit_s"),
                 "seen_types": (r.get("data") or {}).get("seen_types")})
    return out


def summarise_peers(runner, jobs: list[dict], machine: dict, accuracy: dict | None, bsdata: dict | None) -> dict:
    """The peers' runs, and bgad-lite's runs of the same data sets and seeds from ``accuracy`` /
    ``bsdata`` (the section JSONs of this results folder) to print beside them."""
    runs, errors = [], []
    for job in jobs:
        res = runner.result(job)
        if res is None:
            continue
        kw = job["kwargs"]
        if "error" in res:
            errors.append({"dataset": kw["dataset"], "seed": kw["seed"], "error": res["error"]})
        elif "absent" not in res:
            runs.append({k: res[k] for k in ("dataset", "seed", "anomalib", "image_hw", "prepare_s", "peers")})
    datasets = sorted({r["dataset"] for r in runs})
    ours = {**_ours(accuracy, datasets), **_ours(bsdata, datasets)}
    return {"machine": machine, "anomalib": runs[0]["anomalib"] if runs else None, "runs": runs, "errors": errors,
            "ours": ours}


def refresh_ours(data: dict, accuracy: dict | None, bsdata: dict | None) -> dict:
    """A peers section measured earlier, with bgad-lite's rows taken again from the accuracy / bsdata
    section JSONs as they are now (where anomalib is not installed to measure the peers again). The
    peers' own runs are kept as they are: they use the same splits, images and metrics, not bgad-lite's
    models, so a newer bgad-lite run can stand beside them."""
    datasets = sorted({r["dataset"] for r in data["runs"]})
    dates = sorted({sec["machine"]["date"] for sec in (accuracy, bsdata) if sec and sec.get("runs")})
    return {**data, "ours": {**_ours(accuracy, datasets), **_ours(bsdata, datasets)}, "ours_measured": dates}


def _cell(metrics_list, subset, key):
    return fmt_mean_std([m[subset][key] for m in metrics_list if subset in m])


def _ours_note(data: dict) -> str:
    if data.get("ours_measured"):
        return ("bgad-lite's rows are its runs of the accuracy sections above, measured "
                f"{' and '.join(d[:16].replace('T', ' ') for d in data['ours_measured'])}, after the peers (same "
                "seeds, splits, images and metrics).")
    return ("bgad-lite's rows are its runs of the accuracy sections as they stood when the peers were measured "
            "(same seeds; the accuracy sections above may be newer).")


def render_peers(data: dict) -> str:

    if "absent" in data:
        return f"Not measured: {data['absent']}."
    lines = [stamp_line(data["machine"]), "",
             f"anomalib {data['anomalib']}'s PaDiM and PatchCore (its torch models, no datamodule, no "
             "torchmetrics) on exactly the benchmark's data: the same few-shot splits (the labelled images have "
             "left the test set), resized images, backbone (`tf_efficientnet_lite0`, the offline ImageNet weights) "
             "and metrics (`bgad_lite.evaluate.split_metrics`). PaDiM: levels `blocks.1/2/4` (the flows' three), "
             f"{PADIM_FEATURES} random channels of 176; PatchCore: levels `blocks.2/4`, a "
             f"{CORESET_RATIO:.0%} coreset. Neither uses the labelled anomalies. " + _ours_note(data) + " Mean ± std "
             "over seeds; fit s: wall seconds "
             "to fit in a one-thread worker (flows: phase 2 only; phase 1 is in the accuracy sections). PatchCore's "
             "is mostly its greedy coreset, slowed by page faults here: glibc's mmap threshold is fixed so that "
             "the coreset's temporaries are returned at once (`benchmarks/peers.py` says why).", ""]
    headers = ["data set", "model", "image AUROC all", "seen", "unseen", "pixel AUROC", "AUPRO", "fit s"]
    rows = []
    for ds in sorted({r["dataset"] for r in data["runs"]}):
        runs = [r for r in data["runs"] if r["dataset"] == ds]
        seeds = sorted(r["seed"] for r in runs)
        label = f"{ds} ({runs[0]['image_hw'][0]} × {runs[0]['image_hw'][1]}, seeds {', '.join(map(str, seeds))})"
        for name, mets, fits, _ in _entries(data, ds):
            fit = [f for f in fits if f is not None]
            rows.append([label, name, _cell(mets, "all", "image_auroc"), _cell(mets, "seen", "image_auroc"),
                         _cell(mets, "unseen", "image_auroc"), _cell(mets, "all", "pixel_auroc"),
                         _cell(mets, "all", "aupro"), fmt_num(sum(fit) / len(fit), 0) if fit else "–"])
            label = ""
    lines.append(markdown_table(rows, headers))
    lines += _per_type_table(data)
    for e in data.get("errors", []):
        lines += ["", f"Error on {e['dataset']} seed {e['seed']}: {e['error']}"]
    return "\n".join(lines)


def _entries(data: dict, ds: str) -> list[tuple[str, list, list, set]]:
    """The models of ``ds`` side by side: (name, metrics per seed, fit s per seed, the types bgad learnt
    from), the peers first, then bgad-lite's rows of the peers' seeds."""
    runs = [r for r in data["runs"] if r["dataset"] == ds]
    seeds = {r["seed"] for r in runs}
    out = [(f"{p} (anomalib)", [r["peers"][p]["metrics"] for r in runs], [r["peers"][p]["fit_s"] for r in runs], set())
           for p in PEERS]
    for v in OURS:
        mine = [m for m in data["ours"].get(ds, {}).get(v, []) if m["seed"] in seeds]
        if mine:
            out.append((f"{v} (bgad-lite)", [m["metrics"] for m in mine], [m["fit_s"] for m in mine],
                        {t for m in mine for t in (m.get("seen_types") or [])}))
    return out


def _per_type_table(data: dict) -> list[str]:
    """Image AUROC per defect type (normal test images + that type) of the peers and of bgad-lite's rows,
    one table per data set with more than one type: where a peer leads, and on which kind of defect. A
    type bgad learnt from (its labelled anomalies) is marked *seen*."""
    out = []
    for ds in sorted({r["dataset"] for r in data["runs"]}):
        entries = _entries(data, ds)
        types = sorted({t for _, mets, _, _ in entries for m in mets for t in m.get("per_type", {})})
        if len(types) < 2:
            continue
        seen = set().union(*(e[3] for e in entries))
        rows = [[name] + [fmt_mean_std([m["per_type"][t]["image_auroc"] for m in mets if t in m.get("per_type", {})])
                          for t in types] for name, mets, _, _ in entries]
        seeds = sorted({r["seed"] for r in data["runs"] if r["dataset"] == ds})
        out += ["", f"**{ds}: image AUROC per defect type** (normal test images + that type; seeds "
                f"{', '.join(map(str, seeds))})", "",
                markdown_table(rows, ["model"] + [t + (" (seen)" if t in seen else "") for t in types])]
    return out
