"""The notebook sequence: which notebooks, where they live, and running them all with papermill.

:func:`run_notebooks` executes the sequence (what ``bgad-lite notebooks`` and the tests
call), each in a fresh kernel, and exports every executed copy to HTML.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..config import BGADError

log = logging.getLogger(__name__)

#: The notebooks, in teaching order (file names without ``.ipynb``).
NOTEBOOKS = ("00_idea_in_2d", "01_feature_extraction", "02_unsupervised_flow", "03_explicit_boundary",
             "04_semi_push_pull", "05_margin_explorer")
#: The repository (``[project.urls] Repository`` of pyproject.toml).
REPOSITORY = "https://github.com/bgad-lite/bgad-lite"


def notebooks_dir() -> Path:
    """``notebooks/`` of the source checkout this package was imported from."""
    path = Path(__file__).resolve().parents[2] / "notebooks"
    if not path.is_dir():
        raise BGADError(f"no notebooks folder at {path}: the notebooks ship with the source repository "
                        f"({REPOSITORY}), not with the installed package. Clone it and run from there.")
    return path


def select_notebooks(names=None) -> list[str]:
    """Full notebook names from full names or prefixes (``"01"``, ``"04_semi"``)."""
    if names is None:
        return list(NOTEBOOKS)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        n = n.strip().removesuffix(".ipynb")
        match = [nb for nb in NOTEBOOKS if nb == n or nb.startswith(n)]
        if len(match) != 1:
            raise BGADError(f"notebook {n!r} matches {match or 'nothing'}; choose from {list(NOTEBOOKS)}.")
        out.append(match[0])
    return out


def export_html(notebook_path: str | Path, html_path: str | Path) -> Path:
    """Write an executed notebook as one HTML file (nbconvert's ``lab`` template)."""
    import nbformat  # nbformat, nbconvert, papermill: the optional [notebooks] extra
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook_path), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    Path(html_path).write_text(body, encoding="utf-8")
    return Path(html_path)


def run_notebooks(out_dir: str | Path, smoke: bool = True, parameters: dict | None = None, names=None,
                  html: bool = True, progress: bool = False, student: bool = False) -> dict[str, float]:
    """Execute the notebooks with papermill; returns ``{name: seconds}``.

    Each notebook runs in a fresh ``python3`` kernel with ``notebooks/`` as working
    directory, with ``SMOKE=smoke``, ``PROGRESS=False`` and ``parameters`` injected (e.g.
    ``{"CACHE_DIR": ..., "DEVICE": "cuda"}``). The executed copies go to
    ``out_dir/<name>.ipynb`` and, with ``html``, ``out_dir/<name>.html``. Without a
    ``CACHE_DIR`` parameter the notebooks share their default cache, so later ones
    load the features and phase-1 flows of earlier ones. With ``student``, the student
    copies of ``notebooks/student/`` run instead (every exercise check reports "not
    attempted" and the notebook still runs to the end; :mod:`bgad_lite.course.student`).
    """
    import papermill  # the optional [notebooks] extra

    src = notebooks_dir() / "student" if student else notebooks_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"SMOKE": bool(smoke), "PROGRESS": False, **(parameters or {})}  # no progress bars in the copies
    # the kernels inherit OMP_WAIT_POLICY from this process (set by ``import bgad_lite``)
    times = {}
    for name in select_notebooks(names):
        t = time.perf_counter()
        papermill.execute_notebook(str(src / f"{name}.ipynb"), str(out / f"{name}.ipynb"), parameters=params,
                                   kernel_name="python3", cwd=str(src), progress_bar=progress, log_output=False)
        times[name] = time.perf_counter() - t
        if html:
            export_html(out / f"{name}.ipynb", out / f"{name}.html")
        log.info("%s: %.1f s", name, times[name])
    return times
