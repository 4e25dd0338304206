"""Speed and cost: the end-to-end command, cached features vs the official design,
and flow-training throughput against this CPU's own matrix-multiply rate.

Each ``measure_*`` function runs inside one worker process (one torch thread)
and returns a JSON-able dict; ``render_speed`` turns them into markdown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bgad_lite import BGADConfig
from bgad_lite.data.images import load_split
from bgad_lite.data.layout import load_category
from bgad_lite.data.textures import make_texture_dataset
from bgad_lite.explore.tables import markdown_table
from bgad_lite.features import create_backbone, extract_features
from bgad_lite.flow import flow_logp, log_likelihood, make_levels
from bgad_lite.losses import ml_loss
from bgad_lite.prepare import default_data_root
from bgad_lite.runtime import torch_threads
from bgad_lite.train import make_flows, train_flows

from .common import stamp_line, verdict

E2E_TARGET_S = 180.0  # target: the default `bgad-lite run` within 180 s and 2 GB on the 2-core CPU
E2E_TARGET_MB = 2048.0
THROUGHPUT_TARGET = 0.30


# ---------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------

_RUSAGE_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "wall = time.perf_counter() - t\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print('@@RUSAGE@@' + json.dumps({'rc': rc, 'wall_s': wall, 'maxrss_kb': ru.ru_maxrss,"
    " 'user_s': ru.ru_utime, 'sys_s': ru.ru_stime}))\n")


def run_with_rusage(cmd: list[str], cwd: str | Path, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``cmd`` as the only child of a small wrapper process, so that
    ``RUSAGE_CHILDREN`` gives exactly its peak RSS and CPU time."""
    p = subprocess.run([sys.executable, "-c", _RUSAGE_WRAPPER, *cmd], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    line = next((l for l in p.stdout.splitlines() if l.startswith("@@RUSAGE@@")), None)
    if line is None:
        raise RuntimeError(f"wrapper failed: {p.stderr[-2000:]}")
    out = json.loads(line[len("@@RUSAGE@@"):])
    out["stdout_tail"] = "\n".join(l for l in p.stdout.splitlines() if not l.startswith("@@RUSAGE@@"))[-3000:]
    out["stderr_tail"] = p.stderr[-1500:]
    return out


def measure_e2e(fast: bool = False) -> dict:
    """``bgad-lite run`` on the default config in a fresh working folder (fresh feature
    and phase-1 cache, fresh ``runs/``); the embedded data set under ``data/`` is reused."""
    exe = shutil.which("bgad-lite")
    cmd = [exe] if exe else [sys.executable, "-m", "bgad_lite.cli"]
    cmd += ["run", "--quiet"] + (["--fast"] if fast else [])
    work = Path(tempfile.mkdtemp(prefix="bgad-e2e-"))
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # the command's own thread defaults
    try:
        r = run_with_rusage(cmd, cwd=work, env=env, timeout=1800)
        res_path = work / "runs" / "default" / "results.json"
        summary = json.loads(res_path.read_text()) if res_path.exists() else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"command": " ".join(["bgad-lite"] + cmd[1 if exe else 3:]), "fast": fast, "rc": r["rc"],
           "wall_s": r["wall_s"], "peak_rss_mb": r["maxrss_kb"] / 1024, "cpu_s": r["user_s"] + r["sys_s"],
           "timings_s": summary.get("timings_s", {}), "results": summary.get("results", {}),
           "phase1_from_cache": summary.get("phase1_from_cache"),
           "stderr_tail": r["stderr_tail"] if r["rc"] else ""}
    if r["rc"] or not summary:
        # a command that failed at once is not a fast run: no time or memory figure may be read as met
        tail = " | ".join(r["stderr_tail"].strip().splitlines()[-3:]) or "no stderr"
        out["error"] = (f"`{out['command']}` exited with code {r['rc']} after {r['wall_s']:.0f} s"
                        + ("" if summary else " and wrote no results.json") + f": {tail}")
    return out


# ---------------------------------------------------------------------------
# cached features vs the backbone every epoch
# ---------------------------------------------------------------------------

class OnTheFlyFeatures:
    """Stands in for a cached (N, C, H, W) feature tensor but runs the frozen backbone
    whenever a mini-batch is indexed — the official design. The levels of one batch
    share one backbone pass (``shared`` remembers the last batch)."""

    def __init__(self, backbone, images, level: int, shape: tuple, shared: dict):
        self.backbone, self.images, self.level, self.shape, self.shared = backbone, images, level, shape, shared

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):

        last = self.shared.get("idx")
        if last is None or not torch.equal(last, idx):
            sel = self.images[idx.numpy()]
            self.shared["feats"] = extract_features(self.backbone, sel, batch_size=len(sel), progress=False)
            self.shared["idx"] = idx.clone()
            self.shared["passes"] = self.shared.get("passes", 0) + 1
        return self.shared["feats"][self.level]


def _training_images(n: int, size: int):

    root = default_data_root()
    make_texture_dataset(root, "grass", seed=0, progress=False)
    cat = load_category(root, "grass")
    images, _, _ = load_split(cat.train[:n], size, progress=False)
    return images


def measure_cached_vs_official(backbone: str = "tf_efficientnet_lite0", pretrained: bool = True,
                               n_images: int = 64, epochs: int = 2, image_size: int = 128) -> dict:
    """Train phase-1 flows twice with the same steps: (a) on features extracted once,
    (b) running the backbone on every mini-batch of every epoch. Same seeds, same code
    (``train.train_flows``), one torch thread; compares the final flows' outputs."""

    cfg = BGADConfig(backbone=backbone, pretrained=pretrained, image_size=image_size)
    images = _training_images(n_images, image_size)
    model = create_backbone(backbone, pretrained)
    out = {"backbone": backbone, "pretrained": pretrained, "n_images": n_images, "epochs": epochs,
           "image_size": image_size}
    clock = time.process_time  # CPU time of this one-thread process: robust to other jobs on the machine
    with torch_threads(1):
        w = time.perf_counter()
        t = clock()
        feats = extract_features(model, images, progress=False)
        t_extract = clock() - t
        channels = [f.shape[1] for f in feats]
        masks = [torch.zeros(f.shape[0], f.shape[2], f.shape[3], dtype=torch.bool) for f in feats]

        def count_steps(flows):
            counter = {"n": 0}
            hooks = [f.register_forward_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1)) for f in flows]
            return counter, hooks

        flows_a = make_flows(channels, cfg.cond_dim, cfg.n_blocks, cfg.seed)
        ca, ha = count_steps(flows_a)
        t = clock()
        train_flows(flows_a, make_levels(feats, masks, cfg.cond_dim), "ml", epochs, cfg.lr, cfg.seed, progress=False)
        t_train_a = clock() - t
        wall_a = time.perf_counter() - w
        [h.remove() for h in ha]

        shared: dict = {}
        lazy = [OnTheFlyFeatures(model, images, l, tuple(f.shape), shared) for l, f in enumerate(feats)]
        flows_b = make_flows(channels, cfg.cond_dim, cfg.n_blocks, cfg.seed)
        cb, hb = count_steps(flows_b)
        w = time.perf_counter()
        t = clock()
        train_flows(flows_b, make_levels(lazy, masks, cfg.cond_dim), "ml", epochs, cfg.lr, cfg.seed, progress=False)
        t_b = clock() - t
        wall_b = time.perf_counter() - w
        [h.remove() for h in hb]

        pos = make_levels(feats, masks, cfg.cond_dim)
        diff = max(float((flow_logp(fa, lv.features, lv.pos) - flow_logp(fb, lv.features, lv.pos)).abs().max())
                   for fa, fb, lv in zip(flows_a, flows_b, pos))
        pdiff = max(float((pa.detach() - pb.detach()).abs().max()) for pa, pb in zip(flows_a.parameters(), flows_b.parameters()))
    t_a = t_extract + t_train_a
    out.update(clock="process CPU time (one thread)", wall_cached_s=wall_a, wall_official_s=wall_b,
               channels=channels, extract_s=t_extract, train_cached_s=t_train_a, cached_total_s=t_a,
               official_s=t_b, ratio=t_b / t_a, steps_cached=ca["n"], steps_official=cb["n"],
               backbone_passes_official=shared.get("passes", 0), max_abs_logp_diff=diff, max_abs_param_diff=pdiff,
               backbone_ms_per_image=1000 * t_extract / n_images,
               asymptotic_ratio=asymptotic_ratio(t_extract, t_train_a, epochs))
    return out


def asymptotic_ratio(extract_s: float, train_s: float, epochs: int) -> float:
    """official / cached for many epochs: per epoch (extract + train/E) / (train/E)."""
    per_epoch = train_s / epochs
    return (extract_s + per_epoch) / per_epoch


# ---------------------------------------------------------------------------
# throughput and FLOPs
# ---------------------------------------------------------------------------

def linear_flops_per_fiber(flow) -> int:
    """Forward FLOPs of all ``nn.Linear`` layers of ``flow`` for one fiber: Σ 2·in·out
    (multiply + add; bias adds ignored). Training ≈ 3× this (forward, input and weight gradients)."""

    return sum(2 * m.in_features * m.out_features for m in flow.modules() if isinstance(m, nn.Linear))


def permutation_flops_per_fiber(flow) -> int:
    """Forward FLOPs of the soft (dense C x C) permutations of FrEIA's ``AllInOneBlock`` s: Σ 2·C²."""
    return sum(2 * m.w_perm.shape[0] * m.w_perm.shape[1] for m in flow.modules()
               if getattr(m, "w_perm", None) is not None)


def linear_shapes(flow) -> list[tuple[int, int]]:

    return [(m.in_features, m.out_features) for m in flow.modules() if isinstance(m, nn.Linear)]


def _time(fn, min_time: float = 0.5, warmup: int = 2) -> float:
    """CPU seconds per call of this (single-threaded) process: median of 3 blocks, each at
    least ``min_time / 3``. CPU time rather than wall time, so that other jobs on the
    machine (which deschedule this one) disturb the measurement as little as possible."""
    clock = time.process_time
    for _ in range(warmup):
        fn()
    n, t = 1, 0.0
    while True:
        t0 = clock()
        for _ in range(n):
            fn()
        t = clock() - t0
        if t >= min_time / 3:
            break
        n *= 2
    blocks = [t / n]
    for _ in range(2):
        t0 = clock()
        for _ in range(n):
            fn()
        blocks.append((clock() - t0) / n)
    return sorted(blocks)[1]


def mm_rate(shapes: list[tuple[int, int]], rows: int) -> float:
    """FLOP/s of the three matrix products of each Linear (forward, input grad, weight grad)
    at ``rows`` fibers, one thread, fp32: total FLOPs / total time."""

    total_flops, total_t = 0.0, 0.0
    counts: dict[tuple[int, int], int] = {}
    for shape in shapes:  # the blocks repeat the same shapes: time each shape once, weight by its count
        counts[shape] = counts.get(shape, 0) + 1
    for (cin, cout), times in counts.items():
        a, w, g = torch.randn(rows, cin), torch.randn(cout, cin), torch.randn(rows, cout)
        for f in (lambda: torch.mm(a, w.t()), lambda: torch.mm(g, w), lambda: torch.mm(g.t(), a)):
            total_t += times * _time(f, 0.2)
            total_flops += times * 2 * rows * cin * cout
    return total_flops / total_t


def measure_throughput(chunk: int = 4096, seconds: float = 3.0, profile: bool = True) -> dict:
    """Training steps of the default flows (per level: chunk fibers, forward, ML loss,
    backward, Adam) on one thread, vs the matmul rate of the same shapes."""

    cfg = BGADConfig()
    channels = create_backbone(cfg.backbone, cfg.pretrained).feature_info.channels()
    flows = make_flows(channels, cfg.cond_dim, cfg.n_blocks, cfg.seed)
    levels = []
    with torch_threads(1):
        big = torch.randn(1024, 1024)
        peak = 2 * 1024 ** 3 / _time(lambda: torch.mm(big, big), 0.5)
        for c, flow in zip(channels, flows):
            flow.train()
            opt = torch.optim.Adam(flow.parameters(), lr=cfg.lr)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(chunk, c, generator=g) * 0.5
            cond = torch.randn(chunk, cfg.cond_dim, generator=g)

            def step():
                z, ljd = flow(x, c=[cond])
                loss = ml_loss(log_likelihood(z, ljd))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t_step = _time(step, seconds)
            lin = linear_flops_per_fiber(flow)
            perm = permutation_flops_per_fiber(flow)
            fibers_s = chunk / t_step
            rate_mm = mm_rate(linear_shapes(flow), chunk)
            achieved = fibers_s * 3 * lin
            lv = {"channels": c, "chunk": chunk, "step_ms": 1000 * t_step, "fibers_per_s": fibers_s,
                  "linear_flops_fwd_per_fiber": lin, "perm_flops_fwd_per_fiber": perm,
                  "train_flops_per_fiber": 3 * lin, "achieved_gflops": achieved / 1e9,
                  "mm_gflops_at_flow_shapes": rate_mm / 1e9, "fraction": achieved / rate_mm,
                  "fraction_incl_perm": fibers_s * (3 * lin + 2 * perm) / rate_mm,
                  "linear_shapes": linear_shapes(flow)}
            if profile:
                lv["profile"] = _profile_step(step)
            levels.append(lv)
    return {"peak_gflops_1024": peak / 1e9, "levels": levels, "cond_dim": cfg.cond_dim, "n_blocks": cfg.n_blocks,
            "target": THROUGHPUT_TARGET}


def _profile_step(step, n: int = 6) -> dict:
    """Share of one step's wall time in GEMMs, in other ops, and outside ops (Python, autograd engine)."""
    from torch.profiler import ProfilerActivity, profile  # only the profile needs it

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        wall = time.perf_counter() - t0
    gemm = other = 0.0
    n_ops = 0
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        us = e.self_cpu_time_total
        n_ops += e.count
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
            gemm += us
        else:
            other += us
    wall_us = wall * 1e6
    return {"gemm": gemm / wall_us, "other_ops": other / wall_us,
            "outside_ops": max(0.0, 1 - (gemm + other) / wall_us), "aten_ops_per_step": n_ops / n,
            "note": "under the profiler (which itself adds per-op overhead)"}


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def render_speed(data: dict) -> str:
    out = [stamp_line(data["machine"]), ""]
    e = data.get("e2e")
    if e:
        out += ["**End to end**: `" + e["command"] + "` in a fresh working folder (fresh feature and phase-1 "
                "cache; the embedded data set already on disk), run as a subprocess; peak RSS from "
                "`getrusage(RUSAGE_CHILDREN)` of a wrapper whose only child it is — the largest resident set of "
                "that process or of any process it started (the phase-2 worker processes included), not the sum "
                "of processes running at the same time; CPU time is summed over all of them. The command trains "
                "its phase-2 flow variants, level by level, in parallel single-thread processes (`pipeline.fit_variants`)"
                + (". It ran alone: no other benchmark job was in flight meanwhile." if e.get("alone") else
                   ", and the other benchmark worker ran its own job meanwhile, so the two shared the cores."), ""]
        if "error" in e:
            out.append(f"ERROR: {e['error']}")
        else:
            t = e["timings_s"]
            rows = [["wall time", f"{e['wall_s']:.0f} s", f"≤ {E2E_TARGET_S:.0f} s", verdict(e["wall_s"] <= E2E_TARGET_S)],
                    ["peak memory (largest RSS)", f"{e['peak_rss_mb']:.0f} MB", f"≤ {E2E_TARGET_MB:.0f} MB",
                     verdict(e["peak_rss_mb"] <= E2E_TARGET_MB)]]
            out += [markdown_table(rows, ["", "measured", "target", ""]), ""]
            parts = ", ".join(f"{k} {v:.0f} s" for k, v in t.items() if k != "total")
            out.append(f"Inside the run (its `timings_s`): {parts}; total {t.get('total', float('nan')):.0f} s; "
                       f"CPU time {e['cpu_s']:.0f} s (exit code {e['rc']}).")
            if e["wall_s"] > E2E_TARGET_S:
                p2 = sum(v for k, v in t.items() if k.startswith("phase2"))
                cpus = data["machine"].get("cpu_count") or 1
                n_flow = len([v for v in e.get("results", {}) if v != "gaussian"]) or 3
                workers = max(1, min(n_flow, cpus, 3))  # as `runtime.parallel_workers` on a Linux CPU
                if e["cpu_s"] / cpus > E2E_TARGET_S:
                    out.append(f"Its CPU time ({e['cpu_s']:.0f} s, over all its processes) is more than "
                               f"{cpus} cores can deliver in {E2E_TARGET_S:.0f} s, so it would miss on an idle "
                               "machine too.")
                else:
                    out.append(f"Its CPU time ({e['cpu_s']:.0f} s, over all its processes) is below {cpus} × "
                               f"{E2E_TARGET_S:.0f} s, so the target is not out of reach on an idle machine; "
                               "phase 1 and the evaluations run in one process"
                               + ("." if e.get("alone") else ", and the other benchmark worker shared the cores "
                                  "meanwhile."))
                share = f"{100 * p2 / max(t.get('total', 1), 1):.0f}% of the run, after {t.get('phase1', 0):.0f} s of phase 1"
                if "phase2" in t:  # `pipeline.run` today: one `phase2` timing for all flow variants
                    out.append(f"Where the time goes: phase 2 trains the {n_flow} flow variants' levels in {workers} "
                               f"parallel single-thread process{'es' if workers > 1 else ''} (at most one per core), "
                               f"about {n_flow} / {workers} variants' work per core: "
                               f"{p2:.0f} s, {share}; process start-up, imports, the evaluations and figures make "
                               "up the rest of the wall time. The levers left are fewer or cheaper phase-2 epochs, "
                               "and more cores.")
                else:  # results of an older command, which trained the variants one after another
                    out.append(f"Where the time goes: this run's command trained the phase-2 variants one after "
                               f"another on one thread: {p2:.0f} s together, {share}; process start-up, imports "
                               "and figures make up the rest of the wall time.")
        out.append("")
    cv = data.get("cached_vs_official") or []
    if cv:
        rows = []
        for r in cv:
            if "error" in r:
                rows.append([r.get("backbone", "?"), "ERROR", r["error"][:80], "", "", "", "", ""])
                continue
            rows.append([f"`{r['backbone']}`" + ("" if r["pretrained"] else " (random weights)"),
                         "/".join(map(str, r["channels"])), f"{r['backbone_ms_per_image']:.0f}",
                         f"{r['cached_total_s']:.1f} ({r['extract_s']:.1f} + {r['train_cached_s']:.1f})",
                         f"{r['official_s']:.1f}",
                         f"**{r['ratio']:.2f}×** ({asymptotic_ratio(r['extract_s'], r['train_cached_s'], r['epochs']):.2f}×)",
                         f"{r['steps_cached']} / {r['steps_official']}",
                         f"{r['max_abs_logp_diff']:.1e}"])
        r0 = next((r for r in cv if "error" not in r), {})
        out += [f"**Cached features vs the official design** (backbone again on every mini-batch of every epoch): "
                f"phase-1 training of the default flows on {r0.get('n_images')} grass images at "
                f"{r0.get('image_size')} px for {r0.get('epochs')} epochs, one thread, the same code "
                "(`train.train_flows`) and seeds; the official design gets its features through a stand-in tensor "
                "that runs the backbone when a mini-batch is indexed (once per batch for all three levels). "
                "Times are CPU seconds of the one-thread worker process (other jobs share the machine; CPU time "
                "is what they disturb least); wall seconds are in `speed.json`. The ratio in brackets is the limit "
                "for many epochs: per epoch, (extract + train) / train.", "",
                markdown_table(rows, ["backbone", "channels", "backbone ms/img", "cached: total (extract + train) s",
                          "official s", "official / cached", "optimizer steps", "max abs Δ logp, final flows"]), ""]
        same = all(r["max_abs_logp_diff"] == 0 and r["max_abs_param_diff"] == 0 for r in cv if "error" not in r)
        out.append("Same number of optimizer steps (counted by forward hooks on the flows). " + (
            "The final flows are identical, bit for bit (parameters and log-likelihoods): the backbone gives the "
            "same features whether it sees 16 images in order or shuffled batches of 32." if same else
            "The final flows differ by the listed amount: the backbone sees other batch compositions (16 images "
            "in order vs shuffled batches of 32), which changes the float rounding of some convolutions, and "
            "training carries that along."))
        out.append("With E epochs the official design runs the backbone E times, the cached one once, so the "
                   "gain grows with the epochs towards the bracketed limit; it is largest where the backbone is "
                   "expensive next to the flows (the paper's `tf_efficientnet_b6`), and the official 25 × 8 "
                   "epochs sit at that limit.")
        out.append("")
    tp = data.get("throughput")
    if tp:
        if "error" in tp:
            out.append(f"Throughput ERROR: {tp['error']}")
        else:
            rows = []
            for lv in tp["levels"]:
                p = lv.get("profile", {})
                rows.append([lv["channels"], f"{lv['fibers_per_s']:,.0f}", f"{lv['step_ms']:.1f}",
                             f"{lv['train_flops_per_fiber'] / 1e3:.0f}k", f"{lv['achieved_gflops']:.2f}",
                             f"{lv['mm_gflops_at_flow_shapes']:.1f}", f"**{100 * lv['fraction']:.0f}%**",
                             f"{100 * lv['fraction_incl_perm']:.0f}%",
                             f"{100 * p.get('gemm', 0):.0f} / {100 * p.get('other_ops', 0):.0f} / "
                             f"{100 * p.get('outside_ops', 0):.0f}"])
            ok = all(lv["fraction"] >= THROUGHPUT_TARGET for lv in tp["levels"])
            out += [f"**Flow-training throughput** (default flows: {tp['n_blocks']} blocks, P = {tp['cond_dim']}; "
                    f"one step = {tp['levels'][0]['chunk']} fibers forward, ML loss, backward, Adam; one thread). "
                    "FLOPs count the flow's Linear layers from their shapes, ×3 for forward + backward; the matmul "
                    "rate is `torch.mm` of exactly those shapes (forward, input-grad and weight-grad products) "
                    f"measured in the same process; times are CPU seconds of that one-thread process. For scale: `torch.mm` 1024³ runs at "
                    f"{tp['peak_gflops_1024']:.1f} GFLOP/s on this thread.", "",
                    markdown_table(rows, ["level channels", "fibers/s", "ms/step", "train FLOPs/fiber", "GFLOP/s reached",
                              "matmul GFLOP/s (same shapes)", "fraction", "incl. soft permutation",
                              "profile: GEMM / other ops / outside ops %"]), "",
                    f"Target ≥ {100 * THROUGHPUT_TARGET:.0f}% of the matmul rate: {verdict(ok)}."]
            if not ok:
                lv0 = tp["levels"][0]
                out.append(
                    "What limits it: the matrices are small (the first level's subnet is "
                    f"{lv0['linear_shapes'][0][0]}→{lv0['linear_shapes'][0][1]}→{lv0['linear_shapes'][1][1]} per "
                    f"block), so each step is ~{lv0.get('profile', {}).get('aten_ops_per_step', 0):.0f} small ATen "
                    "ops (FrEIA's per-block split / cat / clamp / tanh / exp / softplus / sum, the soft permutation's "
                    "dense C×C product, the log-det bookkeeping, their backward, and Adam's per-tensor updates), "
                    "each memory-bound and each paying dispatcher and autograd overhead. The GEMM share of the step "
                    "in the profile column shows how little of the time is matrix arithmetic.")
    return "\n".join(out)
