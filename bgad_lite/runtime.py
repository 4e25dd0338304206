"""Where and how the computation runs: device, seeds, threads, worker processes, files.

Nothing here is part of BGAD itself; it is what every entry point (``bgad-lite run``,
the notebooks, the benchmarks) needs the same way, so it lives in one place:

- :func:`resolve_device` — "auto" -> "cuda" or "cpu", a clear error for a missing GPU;
- :func:`seed_everything` — Python's, NumPy's and torch's global generators. The library
  itself never relies on them: training draws from its own ``torch.Generator`` seeded from
  ``cfg.seed``, flows and random backbones are initialised under a fixed seed
  (:func:`seeded`), so a result depends on ``cfg.seed`` alone;
- :func:`torch_threads`, :func:`flow_threads`, :func:`parallel_workers` — small flow steps
  run best on one intra-op thread per process, and the phase-2 variants in parallel
  processes on a Linux CPU;
- :func:`atomic_write` — a file appears whole or not at all (caches, checkpoints, results);
- :func:`progress_bar` — tqdm's bar, one that hides when it finishes in a notebook.

``OMP_WAIT_POLICY=PASSIVE`` (spinning OpenMP threads stall small CPU steps at random) is
set by ``import bgad_lite`` when it is not set yet; it only takes effect when that import
comes before torch's. That is why this module imports torch and NumPy inside its functions
(the one exception to imports at the top in this package): ``bgad_lite/__init__`` imports it
first.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import sys
from pathlib import Path
from typing import Callable, Iterator

from .config import BGADError

OMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_cpu_defaults() -> None:
    """Set :data:`OMP_DEFAULTS` in the environment where not set (before torch is imported)."""
    for key, value in OMP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; a CUDA device
    asked for without a GPU is an error."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BGADError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device='cpu' or 'auto' "
                        "(in Colab: Runtime > Change runtime type > GPU).")
    return device


def with_device(cfg):
    """``cfg`` with its device resolved (:func:`resolve_device`)."""
    import dataclasses

    return dataclasses.replace(cfg, device=resolve_device(cfg.device))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's and NumPy's global generators seeded with ``seed``, and restore
    both afterwards: random initialisation (a flow's weights and permutations, a random
    backbone) that depends on ``seed`` only, with no side effect on what runs next."""
    import numpy as np
    import torch

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily use ``n`` intra-op threads (small flow steps run best on one)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def flow_threads(device: str) -> int:
    """One intra-op thread for the small flow steps on a CPU (more only add overhead there)."""
    import torch

    return 1 if device == "cpu" else torch.get_num_threads()


def parallel_workers(device: str, n_jobs: int) -> int:
    """How many processes train ``n_jobs`` independent flow jobs (levels, variants): on a Linux CPU
    one per job (each single-threaded), capped by the cores; elsewhere 1 (a GPU runs them one
    after another; fork is only safe on Linux).

    Also 1 on a CPU run where torch sees a GPU: the first backward pass starts autograd's
    GPU threads even when every tensor is on the CPU, and a process forked after that fails
    at its first backward ("Unable to handle autograd's threading in combination with
    fork-based multiprocessing") — seen on an H200 machine with ``device="cpu"``.
    """
    if device != "cpu" or not fork_is_safe():
        return 1
    return max(1, min(n_jobs, os.cpu_count() or 1))


def fork_is_safe() -> bool:
    """Whether worker processes forked from this one can train flows: on Linux, where torch
    sees no GPU (see :func:`parallel_workers`)."""
    import torch

    return sys.platform.startswith("linux") and not torch.cuda.is_available()


def progress_bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``; in a notebook, a bar that *hides* when it finishes
    with ``leave=False``.

    tqdm's notebook bar closes its widget models then, but the notebook keeps the output that
    displays them: once it is saved and reopened that output shows "Error displaying widget:
    model not found". A hidden bar keeps its few small models and renders as nothing. A bar
    that ended in an error stays visible. No class of tqdm's is changed: only the bars the
    library makes are of this kind.
    """
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm_notebook

    if not issubclass(tqdm, tqdm_notebook):  # a terminal, or no ipywidgets
        return tqdm(iterable, **kwargs)
    return _hiding_notebook_bar()(iterable, **kwargs)


@functools.cache
def _hiding_notebook_bar():
    """tqdm's notebook bar whose close hides the widget instead of closing its models (one class,
    made on first use: tqdm.notebook imports ipywidgets, which ``import bgad_lite`` need not load)."""
    from tqdm.notebook import tqdm_notebook

    class HidingBar(tqdm_notebook):
        def display(self, msg=None, pos=None, close=False, bar_style=None, check_delay=True):
            if close:
                _, bar, _ = self.container.children
                if bar.bar_style != "danger":  # a failed bar stays on screen
                    self.container.layout.display = "none"  # hidden, its models stay: nothing goes missing
                return None
            return super().display(msg, pos, close=close, bar_style=bar_style, check_delay=check_delay)

    return HidingBar


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it to ``path``:
    readers (another process, a later run after a crash) see the whole file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
