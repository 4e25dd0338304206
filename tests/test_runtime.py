"""Tests of bgad_lite.runtime: device, seeds, threads, worker processes, atomic files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bgad_lite import runtime
from bgad_lite.config import BGADConfig, BGADError
from bgad_lite.features import create_backbone


def test_import_sets_a_passive_omp_wait_policy_before_torch():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import sys, os; import bgad_lite; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    # a value the user set is kept
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_resolve_device():
    assert runtime.resolve_device("cpu") == "cpu"
    assert runtime.resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert runtime.resolve_device("auto") == runtime.resolve_device(None)
    if not torch.cuda.is_available():
        with pytest.raises(BGADError, match="no CUDA GPU"):
            runtime.resolve_device("cuda")
    cfg = runtime.with_device(BGADConfig(device="auto"))
    assert cfg.device in ("cpu", "cuda") and cfg.device == runtime.resolve_device("auto")


def test_seeded_gives_the_same_draws_and_restores_the_global_generators():
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    with runtime.seeded(7):
        a_t, a_n = torch.rand(2), np.random.rand(2)
    # the global streams continue as if nothing had been drawn
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_np)
    with runtime.seeded(7):
        b_t, b_n = torch.rand(2), np.random.rand(2)
    assert torch.equal(a_t, b_t) and np.array_equal(a_n, b_n)
    with runtime.seeded(8):
        assert not torch.equal(torch.rand(2), a_t)


def test_seed_everything():
    import random

    runtime.seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    runtime.seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_a_random_backbone_depends_on_its_seed_only():
    torch.manual_seed(0)
    a = create_backbone(pretrained=False, seed=3)
    torch.manual_seed(99)  # the global state must not matter
    b = create_backbone(pretrained=False, seed=3)
    c = create_backbone(pretrained=False, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    weights = [k for k, v in sa.items() if v.is_floating_point() and v.numel() > 100]
    assert weights and all(torch.equal(sa[k], sb[k]) for k in weights)
    assert any(not torch.equal(sa[k], sc[k]) for k in weights)


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with runtime.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert runtime.flow_threads("cpu") == 1


def test_parallel_workers():
    assert runtime.parallel_workers("cuda", 3) == 1
    n = runtime.parallel_workers("cpu", 3)
    if sys.platform.startswith("linux") and not torch.cuda.is_available():
        assert n == max(1, min(3, os.cpu_count() or 1))
    else:
        assert n == 1
    assert runtime.parallel_workers("cpu", 1) == 1


def test_no_forked_workers_where_torch_sees_a_gpu(monkeypatch):
    # after a backward pass on such a machine a forked process cannot run autograd
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.parallel_workers("cpu", 3) == 3
    assert runtime.fork_is_safe()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.parallel_workers("cpu", 3) == 1 and not runtime.fork_is_safe()


def test_atomic_write(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    runtime.atomic_write_text(target, "one")
    assert target.read_text() == "one"

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        runtime.atomic_write(target, crash)
    assert target.read_text() == "one"  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary file left
