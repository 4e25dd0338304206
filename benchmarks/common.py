"""Shared helpers: the machine stamp, mean ± std formatting, markdown tables, JSON files.

Nothing here imports torch at module level: the entry point must set
``OMP_WAIT_POLICY=PASSIVE`` before torch is first imported.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bgad_lite.runtime import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"
DEFAULT_CACHE = BENCH_DIR / ".cache"  # features and phase-1 flows of the benchmarks (git-ignored)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine(torch_threads: str) -> dict:
    """Date and machine of a measurement (``torch_threads`` says how threads were set)."""

    return {"date": _dt.datetime.now().isoformat(timespec="seconds"),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch_threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}


def stamp_line(m: dict) -> str:
    """One line for under a table heading."""
    return (f"*Measured {m['date'].replace('T', ' ')} on `{m['processor']}` ({m['cpu_model']}), "
            f"{m['cpu_count']} CPUs, Python {m['python']}, torch {m['torch']}, "
            f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}; torch threads: {m['torch_threads']}.*")


# ---------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std of no values")
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var)


def fmt_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``"0.894 ± 0.012"`` (sample std over seeds); a single value prints alone; none prints "–"."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m, s = mean_std(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def verdict(met: bool | None) -> str:
    """``**met**``, ``**missed**``, or ``not measured`` (None)."""
    return "not measured" if met is None else "**met**" if met else "**missed**"


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------

def write_json(path: Path, data: dict) -> None:

    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _json_default(o):
    try:

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
