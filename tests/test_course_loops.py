"""The whole-epoch loops the course shows in view (notebook 02: phase 1, notebook 04: BGAD with the
per-batch boundary) take the very steps of ``train_flows``: each loop is executed from its notebook
cell and compared with the library from the same flows, data and seed, over one epoch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from bgad_lite.flow import LevelData, positional_encoding_2d
from bgad_lite.train import (
    epoch_chunks,
    make_flows,
    set_input_statistics,
    shuffle_generator,
    train_flows,
)

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
COND_DIM = 8
#: small batches and chunks, so that one epoch holds several batches, chunks and lr values (and, for
#: BGAD, chunks without a normal fiber: CHUNK_BGAD)
BATCH, CHUNK, CHUNK_BGAD = 6, 40, 5
BGAD = {"beta": 0.2, "tau": 0.1, "normalizer": 10.0, "lam": 1.0}  # β: a quantile above the minimum


def _loop(notebook: str, name: str, chunk: int) -> dict:
    """Execute the code cell of ``notebook`` that defines ``name`` (the loop as a student reads it);
    its namespace, with the batch and chunk sizes made small."""
    cells = json.loads((NB_DIR / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [s for s in sources if f"def {name}(" in s]
    assert len(found) == 1, f"{notebook}: one code cell must define {name}(), found {len(found)}"
    ns = {"torch": torch}  # imported by the notebook's setup cell
    exec(compile(found[0], f"{notebook}.ipynb: {name}", "exec"), ns)  # noqa: S102  the cell is the code under test
    ns["BATCH_IMAGES"], ns["FIBER_CHUNK"] = BATCH, chunk
    return ns


def _levels(anomalous: bool) -> list[LevelData]:
    """Two levels of 14 images (3 batches of ≤ 6): 6 × 6 and 3 × 3 fibers of 6 and 10 channels. With
    ``anomalous``, images 6-13 hold defects (their fibers shifted), a few fibers are left out (ignore),
    and images 10-13 are all defect, so that some chunks have no normal fiber."""
    g = torch.Generator().manual_seed(0)
    levels = []
    for c, s in ((6, 6), (10, 3)):
        feats = torch.randn(14, c, s, s, generator=g)
        masks = torch.zeros(14, s, s, dtype=torch.bool)
        ignore = None
        if anomalous:
            masks[6:10, : s // 2 + 1, : s // 2 + 1] = True
            masks[10:] = True
            feats[masks.unsqueeze(1).expand_as(feats)] += 3.0
            ignore = torch.zeros_like(masks)
            ignore[6:10, s - 1, s - 1] = True
        levels.append(LevelData(feats, masks, positional_encoding_2d(COND_DIM, s, s), ignore))
    return levels


def _start(levels):
    flows = make_flows([lv.features.shape[1] for lv in levels], COND_DIM, n_blocks=2, seed=5)
    set_input_statistics(flows, [lv.features[~lv.masks.flatten(1).any(1)] for lv in levels])
    return flows


def _largest_difference(a, b) -> float:
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def test_the_phase1_epoch_of_notebook_02_is_train_flows():
    ns = _loop("02_unsupervised_flow", "phase1_epoch", CHUNK)
    levels = _levels(anomalous=False)
    start = _start(levels)
    by_hand, by_library, other_seed = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    ns["phase1_epoch"](by_hand, levels, 2e-3, seed=3)
    train_flows(by_library, levels, "ml", epochs=1, lr=2e-3, seed=3, batch_images=BATCH, fiber_chunk=CHUNK,
                progress=False)
    assert _largest_difference(by_library, start) > 1e-3  # the epoch trained
    assert _largest_difference(by_hand, by_library) <= 1e-5
    # the comparison notices another order of the same fibers
    ns["phase1_epoch"](other_seed, levels, 2e-3, seed=4)
    assert _largest_difference(other_seed, by_library) > 1e-5


def test_the_bgad_epoch_of_notebook_04_is_train_flows():
    ns = _loop("04_semi_push_pull", "bgad_epoch", CHUNK_BGAD)
    levels = _levels(anomalous=True)
    start = _start(levels)
    # this epoch meets chunks without a normal fiber (skipped by both) and chunks with anomalies
    chunks = list(epoch_chunks(levels, BATCH, CHUNK_BGAD, False, shuffle_generator(3, "bgad")))
    assert any(bool(m.all()) for *_, m in chunks) and any(bool(m.any() and not m.all()) for *_, m in chunks)
    by_hand, by_library = copy.deepcopy(start), copy.deepcopy(start)
    b_ns = ns["bgad_epoch"](by_hand, levels, 2e-3, 3, **BGAD)
    history = train_flows(by_library, levels, "bgad", epochs=1, lr=2e-3, seed=3, batch_images=BATCH,
                          fiber_chunk=CHUNK_BGAD, progress=False, **BGAD)
    assert _largest_difference(by_library, start) > 1e-3
    assert _largest_difference(by_hand, by_library) <= 1e-5
    steps = [sum(j == k and not bool(m.all()) for k, *_, m in chunks) for j in range(len(levels))]
    assert [len(b) for b in b_ns] == steps  # one b_n per step, per level
    for j, b in enumerate(b_ns):  # the library's mean b_n of the epoch
        assert sum(b) / len(b) == pytest.approx(history[0][f"b_n/{j}"], abs=1e-6)


@pytest.mark.parametrize("change", ["boundary from all fibers", "no λ"])
def test_the_bgad_comparison_fails_a_loop_that_differs(change):
    ns = _loop("04_semi_push_pull", "bgad_epoch", CHUNK_BGAD)
    if change == "boundary from all fibers":
        real = ns["compute_boundaries"]
        ns["compute_boundaries"] = lambda logp, a, *args: real(logp, None, *args)
        kw = BGAD
    else:
        kw = {**BGAD, "lam": 3.0}  # the loop weighs the terms by λ; the library must be given the same
    levels = _levels(anomalous=True)
    start = _start(levels)
    by_hand, by_library = copy.deepcopy(start), copy.deepcopy(start)
    ns["bgad_epoch"](by_hand, levels, 2e-3, 3, **kw)
    train_flows(by_library, levels, "bgad", epochs=1, lr=2e-3, seed=3, batch_images=BATCH,
                fiber_chunk=CHUNK_BGAD, progress=False, **BGAD)
    assert _largest_difference(by_hand, by_library) > 1e-5
