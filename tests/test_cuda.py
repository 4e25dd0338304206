"""On a CUDA GPU (Colab's): the numbers of the CPU, and checkpoints that load on a machine without one.

Skipped where torch sees no GPU (CI, a laptop). On a GPU machine: ``pytest tests/test_cuda.py``.
"""

import json

import numpy as np
import pytest
import torch

from bgad_lite import pipeline
from bgad_lite.checkpoint import load_checkpoint
from bgad_lite.features import create_backbone, extract_features
from bgad_lite.flow import build_flow, flow_logp, positional_encoding_2d
from bgad_lite.explore.margins import EpochRecorder
from bgad_lite.runtime import resolve_device

from test_pipeline import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_the_gpu():
    assert resolve_device("auto") == "cuda" and resolve_device(None) == "cuda"


def test_flow_logp_on_the_gpu_equals_the_cpu_and_hands_the_flow_back():
    flow = build_flow(16, 8, 2, seed=0)
    x = torch.randn(3, 16, 5, 6, generator=torch.Generator().manual_seed(0))  # (n, C, H, W)
    pos = positional_encoding_2d(8, 5, 6)  # (P, H, W)
    on_cpu = flow_logp(flow, x, pos)
    on_gpu = flow_logp(flow, x, pos, device="cuda")
    assert on_gpu.device.type == "cpu" and next(flow.parameters()).device.type == "cpu"
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)
    flow.to("cuda")  # and a flow that lives on the GPU stays there when evaluated on the CPU
    torch.testing.assert_close(flow_logp(flow, x, pos, device="cpu"), on_cpu, rtol=1e-5, atol=1e-5)
    assert next(flow.parameters()).device.type == "cuda"


def test_features_on_the_gpu_equal_the_cpu():
    model = create_backbone()  # the offline ImageNet weights
    images = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
    on_cpu = extract_features(model, images, progress=False)
    on_gpu = extract_features(model, images, device="cuda", progress=False)
    for c, g in zip(on_cpu, on_gpu):
        assert g.device.type == "cpu" and g.shape == c.shape
        # cuDNN may run the convolutions in TF32 (10-bit mantissa): equal to about 1e-2 of the scale
        torch.testing.assert_close(g, c, rtol=0, atol=2e-2 * float(c.abs().max()))


def test_a_run_on_the_gpu_gives_the_cpu_results_and_checkpoints_that_load_on_a_cpu(tiny_root, tmp_path):
    results = {}
    for device in ("cpu", "cuda"):
        cfg = tiny_config(tiny_root, tmp_path / device, device=device)
        results[device] = pipeline.run(cfg, progress=False)["results"]
    for variant, res in results["cpu"].items():
        for subset in ("all", "seen", "unseen"):
            for metric in ("image_auroc", "pixel_auroc"):
                a, b = res[subset][metric], results["cuda"][variant][subset][metric]
                assert abs(a - b) <= 0.05, (variant, subset, metric, a, b)
    out = tmp_path / "cuda" / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["device"] == "cuda"
    # every tensor of a GPU-trained checkpoint was written from the CPU: torch.load without
    # map_location puts it back there, so a machine without a GPU can read it
    raw = torch.load(out / "checkpoints" / "bgad" / "model.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in raw["flows"].values())
    flows, saved_cfg, _ = load_checkpoint(out / "checkpoints" / "bgad")
    assert all(p.device.type == "cpu" for p in flows.parameters())
    # scored on the CPU, the GPU-trained flows give the metrics the GPU run wrote
    cpu_cfg = tiny_config(tiny_root, tmp_path / "cuda", device="cpu")
    ev = pipeline.evaluate(flows, pipeline.prepare(cpu_cfg, progress=False), cpu_cfg)
    for subset in ("all", "seen", "unseen"):
        assert ev["metrics"][subset]["image_auroc"] == pytest.approx(
            saved["results"]["bgad"][subset]["image_auroc"], abs=0.02)


def test_the_epoch_recorder_follows_flows_that_train_on_the_gpu(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root, tmp_path, device="cuda", epochs_phase2=2)
    prep = pipeline.prepare(cfg, progress=False)
    phase1, _ = pipeline.fit_phase1(prep, progress=False)
    rec = EpochRecorder(prep, prep.cfg.normalizer, prep.cfg.cond_dim, level=1, max_fibers=200)
    rec.record(0, phase1)
    flows, _, _ = pipeline.fit_variant(prep, phase1, "bgad", on_epoch_end=rec, progress=False)
    assert [s.epoch for s in rec.snapshots] == [0, 1, 2]
    assert all(np.isfinite(s.l_test).all() and np.isfinite(s.l_train).all() for s in rec.snapshots)
    assert rec.snapshots[2].l_test.tolist() != rec.snapshots[0].l_test.tolist()  # training moved them


def test_the_cli_runs_on_the_cpu_of_a_gpu_machine(tiny_root, tmp_path):
    # A fresh process, as `bgad-lite run` on Colab without --device: phase 1 runs backward on
    # the CPU, which starts autograd's GPU threads; phase 2 must not fork after that.
    import subprocess
    import sys

    cfg = tiny_config(tiny_root, tmp_path, device="cpu")
    cfg.to_json(tmp_path / "cfg.json")
    done = subprocess.run([sys.executable, "-m", "bgad_lite.cli", "run", "--config", str(tmp_path / "cfg.json"),
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["results"]) == {"gaussian", "unsupervised", "bgad", "naive_push"}
