"""The notebook course: clean committed notebooks, the course kit (exercises, recaps, questions,
student copies), and each notebook — solution and student copy — executed on its own in smoke mode."""

from __future__ import annotations

import ast
import json
import re
import time
import tomllib
from pathlib import Path

import nbformat
import pytest

from bgad_lite.config import PRESETS
from bgad_lite.course import notebooks, setup, student
from oracles import colab_url, prose_words

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
REQUIRED_PARAMETERS = {"DATASET", "CATEGORY", "BACKBONE", "IMAGE_SIZE", "EPOCHS", "SMOKE", "CACHE_DIR", "DEVICE"}
# What each executed notebook must show besides matplotlib images.
PLOTLY = {"01_feature_extraction", "02_unsupervised_flow", "03_explicit_boundary", "04_semi_push_pull",
          "05_margin_explorer"}
WIDGETS = {"05_margin_explorer"}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def _repository() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


def test_the_sequence_is_complete():
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == sorted(notebooks.NOTEBOOKS)
    assert notebooks.REPOSITORY == _repository()


@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
def test_notebook_is_clean_and_has_title_badge_and_parameters(name):
    nb = _read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: commit notebooks without outputs"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{name}: no title"
    assert "What you will learn" in first.source
    owner_repo = _repository().removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}.ipynb"
    assert badge in first.source and badge == colab_url(name)
    assert "colab-badge.svg" in first.source

    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
    names = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert REQUIRED_PARAMETERS <= names, f"{name}: parameters cell lacks {REQUIRED_PARAMETERS - names}"

    setup = next(c for c in nb.cells if c.cell_type == "code").source
    # bgad_lite sets OMP_WAIT_POLICY when imported (bgad_lite.runtime): it must come before torch
    assert setup.index("from bgad_lite import") < setup.index("import torch"), "import bgad_lite before torch"
    assert 'google.colab" in sys.modules' in setup and "git+https://github.com/bgad-lite/bgad-lite" in setup
    assert "%pip install" in setup, "the Colab install must show what it does in the cell"
    assert any("What to try" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_every_notebook_builds_its_config_in_the_same_place():
    for name in notebooks.NOTEBOOKS:
        sources = [c.source for c in _read(name).cells if c.cell_type == "code"]
        assert sum("setup.make_config(" in s for s in sources) == 1, name
        assert not any("BGADConfig(" in s for s in sources), f"{name}: build the config with setup.make_config"


def test_make_config_smoke_and_cache_keys(monkeypatch, tmp_path):
    monkeypatch.delenv("BGAD_SMOKE", raising=False)
    full = setup.make_config(cache_dir=str(tmp_path))
    assert (full.epochs_phase1, full.epochs_phase2, full.image_size) == (*setup.FULL_EPOCHS, 128)
    assert setup.make_config(cache_dir=str(tmp_path)) == full  # same parameters, same config, same cache keys
    monkeypatch.setenv("BGAD_SMOKE", "1")
    smoke = setup.make_config(cache_dir=str(tmp_path))
    assert all(getattr(smoke, k) <= v for k, v in PRESETS["fast"].items())
    with pytest.raises(setup.BGADError, match="textures"):
        setup.make_config("textures", "carpet")
    with pytest.raises(setup.BGADError, match="neither"):
        setup.make_config(str(tmp_path / "missing"), "grass")
    assert notebooks.select_notebooks("01,05") == ["01_feature_extraction", "05_margin_explorer"]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """The embedded data set is written once per session, never into the checkout."""
    return tmp_path_factory.mktemp("bgad_data")


def _checks_in(nb) -> list[str]:
    """The exercise ids a notebook checks, in order (the first argument of every exercises.check* call)."""
    ids = []
    for c in nb.cells:
        if c.cell_type == "code":
            ids += re.findall(r'exercises\.check(?:_cases|_step)?\(\s*"([0-9.]+)"', c.source)
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("copy", ["solution", "student"])
@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
def test_notebook_runs_alone_in_smoke_mode(name, copy, tmp_path, data_root, monkeypatch):
    """Both copies run to the end; in the solution copy every check passes, in the student copy
    every check reports "not attempted" (and the library's version carries the notebook on)."""
    monkeypatch.setenv("BGAD_SMOKE", "1")
    monkeypatch.setenv("BGAD_DATA", str(data_root))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    cache = tmp_path / "cache"  # fresh and empty: the notebook must compute what it needs
    t = time.perf_counter()
    times = notebooks.run_notebooks(tmp_path / "out", smoke=True, names=[name], student=copy == "student",
                                 parameters={"CACHE_DIR": str(cache)}, html=True)
    print(f"{name} ({copy}): {time.perf_counter() - t:.1f} s")
    assert list(times) == [name]

    nb = nbformat.read(tmp_path / "out" / f"{name}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    lines = [ln for o in outputs if o.output_type == "stream" for ln in o.text.splitlines()
             if ln.startswith("[exercise ")]
    expected = _checks_in(_read(name))
    assert [ln.split("]")[0].removeprefix("[exercise ") for ln in lines] == expected, lines
    outcome = "pass" if copy == "solution" else "not attempted"
    assert all(ln.split("] ", 1)[1].startswith(outcome) for ln in lines), "\n".join(lines)
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes, f"{name}: no matplotlib figure in the executed notebook"
    if name in PLOTLY:
        assert "application/vnd.plotly.v1+json" in mimes and "text/html" in mimes, f"{name}: no plotly figure"
    if name in WIDGETS:
        assert "application/vnd.jupyter.widget-view+json" in mimes
        state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        assert any(m["model_name"] == "ImageModel" for m in state.values())  # the explorer's drawn views
    html = (tmp_path / "out" / f"{name}.html").read_text()
    assert "<img" in html or "image/png" in html
    assert any(cache.glob("features-*.pt")), "the notebook should have filled its cache"
    params = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert params and json.dumps(str(cache)) in params[0].source


# ---------------------------------------------------------------------------
# The course kit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
def test_notebook_has_exercises_recap_questions_and_enough_prose(name):
    nb = _read(name)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    solutions = [s for s in code if student.has_solution(s)]
    assert len(solutions) >= 3 and len(_checks_in(nb)) >= 3, f"{name}: needs at least 3 checked exercises"
    assert len(set(_checks_in(nb))) == len(_checks_in(nb)), f"{name}: exercise ids must be unique"
    assert all(i.startswith(name[:2] + ".") for i in _checks_in(nb)), f"{name}: exercise ids are <notebook>.<n>"
    assert any(c.cell_type == "markdown" and c.source.startswith("## Recap") for c in nb.cells), f"{name}: no recap"
    assert sum("exercises.quiz(" in s for s in code) >= 3, f"{name}: needs at least 3 concept questions"
    words = prose_words(nb)
    print(f"{name}: {words} words of prose")
    assert words >= 1000, f"{name}: {words} words of prose, at least 1,000 expected"


def test_student_copies_are_up_to_date_and_hold_no_solution():
    assert student.stale_student_copies() == [], "run `bgad-lite student` and commit notebooks/student/"
    for name in notebooks.NOTEBOOKS:
        nb, copy = _read(name), nbformat.read(NB_DIR / "student" / f"{name}.ipynb", as_version=4)
        assert len(copy.cells) == len(nb.cells)
        for cell, cell_copy in zip(nb.cells, copy.cells):
            lines = cell_copy.source.split("\n")
            assert student.BEGIN not in [ln.strip() for ln in lines] and student.END not in [ln.strip() for ln in lines]
            if not student.has_solution(cell.source):
                continue
            body = cell.source.split(student.BEGIN)[1].split(student.END)[0]
            for ln in body.split("\n"):  # no line of the answer is left (short common lines aside)
                if len(ln.strip()) > 12:
                    assert ln not in lines, f"{name}: solution line left in the student copy: {ln!r}"
            assert "# YOUR CODE HERE" in cell_copy.source and "raise NotImplementedError()" in cell_copy.source
        badge = colab_url(name).replace("/notebooks/", "/notebooks/student/")
        assert badge in copy.cells[0].source and "(student copy)" in copy.cells[0].source.split("\n")[0]


def test_notebooks_cite_only_files_of_the_repository():
    text = {name: "\n".join(c.source for c in _read(name).cells if c.cell_type == "markdown") for name in notebooks.NOTEBOOKS}
    for name, t in text.items():
        assert "METHOD.md" not in t, f"{name}: notebooks may cite only files in the repository"
        for ref in re.findall(r"`((?:docs|bgad_lite|notebooks|tests|benchmarks)/[\w./-]+)`", t):
            assert (ROOT / ref).exists(), f"{name} points to {ref}, which is not in the repository"


def test_margin_explorer_cell_explains_what_is_missing(capsys):
    cell = next(c for c in _read("05_margin_explorer").cells
                if c.cell_type == "code" and "widgets.margin_explorer(flows, prep" in c.source)
    exec(cell.source, {"widgets": None, "display": print})  # the cells above were not run
    out = capsys.readouterr().out
    assert "run them first" in out and "flows" in out and "recorder" in out


def test_describe_names_the_phase_2_work():
    from bgad_lite import BGADConfig

    line = setup.describe(BGADConfig(epochs_phase1=9, epochs_phase2=7, n_cutpaste=5))
    assert "epochs 9 + 7" in line and "5 CutPastes" in line and "anomalies 2× per phase-2 epoch" in line
