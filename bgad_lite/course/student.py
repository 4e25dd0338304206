"""Student copies of the course notebooks: the same notebooks with the solutions taken out.

In the solution notebooks (``notebooks/*.ipynb``) every exercise's answer sits
between two marker lines, the convention of nbgrader (an instructor who uses
nbgrader can take the notebooks as they are)::

    def my_function(...):
        ### BEGIN SOLUTION
        ...the answer...
        ### END SOLUTION

:func:`write_student_copies` writes ``notebooks/student/<name>.ipynb`` with each such
block replaced, at the same indentation, by::

        # YOUR CODE HERE
        raise NotImplementedError()

(in a markdown cell: ``YOUR ANSWER HERE``). The exercise checks
(:mod:`bgad_lite.course.exercises`) report that as "not attempted" and the notebook runs
on. The Colab badge of a student copy points to the student copy. Nothing else
changes, so a student copy is fully determined by its solution notebook and the
tests can regenerate it and compare (``bgad-lite student --check``).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from ..config import BGADError
from .notebooks import NOTEBOOKS, notebooks_dir

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_PLACEHOLDER = "YOUR ANSWER HERE"
STUDENT_DIR = "student"


def strip_solutions(source: str, cell_type: str = "code", where: str = "a cell") -> str:
    """``source`` with every BEGIN/END SOLUTION block replaced by the placeholder."""
    out, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise BGADError(f"{where}: '{BEGIN}' inside another solution block.")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            if cell_type == "code":
                out += [indent + p for p in CODE_PLACEHOLDER]
            else:
                out.append(indent + MARKDOWN_PLACEHOLDER)
        elif stripped == END:
            if not inside:
                raise BGADError(f"{where}: '{END}' without a '{BEGIN}' before it.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise BGADError(f"{where}: '{BEGIN}' is never closed by '{END}'.")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.split("\n"))


def student_notebook(nb, name: str):
    """A student copy of the notebook node ``nb`` (a new node; ``nb`` is unchanged)."""
    student = copy.deepcopy(nb)
    solution_url = f"/blob/main/notebooks/{name}.ipynb"
    for i, cell in enumerate(student.cells):
        where = f"{name}, cell {i}"
        if has_solution(cell.source):
            cell.source = strip_solutions(cell.source, cell.cell_type, where)
        if i == 0:
            cell.source = cell.source.replace(solution_url, f"/blob/main/notebooks/{STUDENT_DIR}/{name}.ipynb")
            cell.source = re.sub(r"^(# .*)$", r"\1 (student copy)", cell.source, count=1, flags=re.M)
    return student


def student_text(path: str | Path) -> str:
    """The text of the student copy of the notebook at ``path`` (what is written to disk)."""
    import nbformat  # the optional [notebooks] extra

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    return nbformat.writes(student_notebook(nb, path.stem)) + "\n"


def write_student_copies(src_dir: str | Path | None = None, out_dir: str | Path | None = None,
                         names=None) -> list[Path]:
    """Write the student copy of every course notebook; returns the paths written.

    ``src_dir``: the solution notebooks (default: the checkout's ``notebooks/``);
    ``out_dir``: default ``<src_dir>/student``.
    """
    src = Path(src_dir) if src_dir else notebooks_dir()
    out = Path(out_dir) if out_dir else src / STUDENT_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or NOTEBOOKS:
        target = out / f"{name}.ipynb"
        target.write_text(student_text(src / f"{name}.ipynb"), encoding="utf-8")
        written.append(target)
    return written


def stale_student_copies(src_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[str]:
    """Names of the student copies that are missing or differ from a fresh regeneration."""
    src = Path(src_dir) if src_dir else notebooks_dir()
    out = Path(out_dir) if out_dir else src / STUDENT_DIR
    stale = []
    for name in NOTEBOOKS:
        target = out / f"{name}.ipynb"
        if not target.exists() or target.read_text(encoding="utf-8") != student_text(src / f"{name}.ipynb"):
            stale.append(name)
    return stale
