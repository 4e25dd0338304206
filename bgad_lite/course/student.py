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

The same command copies every exercise's solution cell into the package
(:mod:`bgad_lite.course.solutions`, keyed by exercise id), where
:func:`bgad_lite.course.exercises.show_solution` finds it after the check — on Colab too,
where only the package is installed.
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
#: the exercise id of a check cell: the first argument of exercises.check / check_cases / check_step
CHECK_CALL = re.compile(r'exercises\.check(?:_cases|_step)?\(\s*"([0-9.]+)"')
SOLUTIONS_MODULE = Path(__file__).with_name("solutions.py")


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


def solution_cells(nb, name: str) -> dict[str, str]:
    """{exercise id: the source of the solution cell that its check follows} of one notebook node."""
    out, last = {}, None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if has_solution(cell.source):
            last = cell.source
        for exercise in CHECK_CALL.findall(cell.source):
            if last is None:
                raise BGADError(f"{name}: the check of exercise {exercise} has no solution cell before it.")
            out[exercise] = last
    return out


def solutions_text(src_dir: str | Path | None = None) -> str:
    """The source of :mod:`bgad_lite.course.solutions` for the notebooks in ``src_dir``."""
    import nbformat  # the optional [notebooks] extra

    src = Path(src_dir) if src_dir else notebooks_dir()
    lines = ['"""Reference solutions of the course\'s exercises, for `exercises.show_solution`: the solution cell',
             "of each exercise in notebooks/*.ipynb. Written by `bgad-lite student`; do not edit by hand.", '"""',
             "", "SOLUTIONS = {"]
    for name in NOTEBOOKS:
        for exercise, source in solution_cells(nbformat.read(str(src / f"{name}.ipynb"), as_version=4), name).items():
            lines.append(f"    {exercise!r}: (")
            lines += [f"        {line!r}" for line in source.splitlines(keepends=True)]
            lines.append("    ),")
    return "\n".join(lines + ["}", ""])


def write_student_copies(src_dir: str | Path | None = None, out_dir: str | Path | None = None,
                         names=None) -> list[Path]:
    """Write the student copy of every course notebook; returns the paths written.

    ``src_dir``: the solution notebooks (default: the checkout's ``notebooks/``);
    ``out_dir``: default ``<src_dir>/student``. With neither (``bgad-lite student``), the
    solutions module of the package is written too.
    """
    src = Path(src_dir) if src_dir else notebooks_dir()
    out = Path(out_dir) if out_dir else src / STUDENT_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or NOTEBOOKS:
        target = out / f"{name}.ipynb"
        target.write_text(student_text(src / f"{name}.ipynb"), encoding="utf-8")
        written.append(target)
    if src_dir is None and out_dir is None and names is None:
        SOLUTIONS_MODULE.write_text(solutions_text(), encoding="utf-8")
        written.append(SOLUTIONS_MODULE)
    return written


def stale_student_copies(src_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[str]:
    """Names of the student copies that are missing or differ from a fresh regeneration; with
    neither argument also ``"solutions"`` when :mod:`bgad_lite.course.solutions` is out of date."""
    src = Path(src_dir) if src_dir else notebooks_dir()
    out = Path(out_dir) if out_dir else src / STUDENT_DIR
    stale = []
    for name in NOTEBOOKS:
        target = out / f"{name}.ipynb"
        if not target.exists() or target.read_text(encoding="utf-8") != student_text(src / f"{name}.ipynb"):
            stale.append(name)
    if src_dir is None and out_dir is None:
        if not SOLUTIONS_MODULE.exists() or SOLUTIONS_MODULE.read_text(encoding="utf-8") != solutions_text():
            stale.append("solutions")
    return stale
