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
# Notebooks on a toy (no data set, no BGADConfig, no cache): their parameters, and their number of exercises.
TOY = {"00_idea_in_2d": {"parameters": {"SMOKE", "SEED", "SEEDS"}, "exercises": 2}}


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
    required = TOY[name]["parameters"] if name in TOY else REQUIRED_PARAMETERS
    assert required <= names, f"{name}: parameters cell lacks {required - names}"

    setup = next(c for c in nb.cells if c.cell_type == "code").source
    # bgad_lite sets OMP_WAIT_POLICY when imported (bgad_lite.runtime): it must come before torch
    assert setup.index("from bgad_lite import") < setup.index("import torch"), "import bgad_lite before torch"
    assert 'google.colab" in sys.modules' in setup and "INSTALL_FROM" in setup
    assert "%pip install" in setup, "the Colab install must show what it does in the cell"
    assert any("What to try" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_every_notebook_builds_its_config_in_the_same_place():
    for name in notebooks.NOTEBOOKS:
        sources = [c.source for c in _read(name).cells if c.cell_type == "code"]
        assert sum("setup.make_config(" in s for s in sources) == (name not in TOY), name
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
    assert name in TOY or any(cache.glob("features-*.pt")), "the notebook should have filled its cache"
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
    n = TOY[name]["exercises"] if name in TOY else 3
    assert len(solutions) >= n and len(_checks_in(nb)) >= n, f"{name}: needs at least {n} checked exercises"
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


# ---------------------------------------------------------------------------
# True statements, hidden answers (issue 23)
# ---------------------------------------------------------------------------

# Statements once made by the notebooks and corrected: each wrong form, and what was wrong with it.
WRONG_STATEMENTS = [
    (r"0\.844 → 0\.894|0\.802 → 0\.883|0\.876 → 0\.902", "numbers of an old data set: print them from the run"),
    (r"phase[- ]2\s+variants?\s+of\s+20\s+epochs|BGAD\s+model\s+of\s+20\s+epochs", "phase 2 has BGADConfig.epochs_phase2 epochs"),
    (r"test[- ]norm\w*[^\n]{0,12}\(?paper\)?|paper's (code|test-set)",
     "the official score is the map's maximum; the test-normalised top-1 % score is not the paper's"),
    (r"(does not|doesn't) hold any type out|holds? no type out", "the paper's aim is to detect seen and unseen anomalies"),
    (r"[Tt]he paper (fixes|computes \$?b_n\$? once)|fixed after phase 1 \(paper|fixed boundary of the paper|"
     r"paper's fixed boundary", "unsupported here: say what the official code does (per batch)"),
    (r"written as sums", "unsupported here: the official code takes means"),
    (r"normalizer\*?\*? \(10\), and nothing else|the normalizer only", "say what N does"),
    (r"left alone, and anomalies are never pulled towards each other — that is the \"semi\"",
     "'semi' means that only the normals are pulled together"),
    (r"quantile function of the normal distribution", "reads as the Gaussian's; it is the normal fibers' empirical one"),
    (r"Linear\(c, 2c\)", "c is the condition; the subnet width needs another letter"),
    (r"downsample_masks|(?<!not )when at least\s+half of its cell is defect\s*\(", "training labels fibers by flow.fiber_labels"),
    (r"replace `ml_loss\(logp\)`|all-False `is_anomaly`", "What to try must not name the solution's lines"),
]


def _markdown(name: str, folder: Path = NB_DIR) -> str:
    return "\n".join(c.source for c in nbformat.read(folder / f"{name}.ipynb", as_version=4).cells
                     if c.cell_type == "markdown")


def test_corrected_statements_do_not_come_back():
    texts = {name: "\n".join(c.source for c in _read(name).cells) for name in notebooks.NOTEBOOKS}
    texts["docs/teaching.md"] = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    from bgad_lite.course.answers import QUIZ_ANSWERS

    texts["bgad_lite/course/answers.py"] = json.dumps(QUIZ_ANSWERS, ensure_ascii=False)
    for where, text in texts.items():
        for pattern, why in WRONG_STATEMENTS:
            m = re.search(pattern, text)
            assert not m, f"{where}: {m.group(0)!r} is back — {why}"
    # what the notebooks must say
    assert "| focal weighting |" in _markdown("01_feature_extraction"), "01's paper-vs-course table: focal weighting"
    assert "flow.fiber_labels" in _markdown("01_feature_extraction") and "small regions" in _markdown("01_feature_extraction")
    paper = [name for name in notebooks.NOTEBOOKS if re.search(r"0\.994[^\n]{0,40}0\.993", _markdown(name))]
    assert len(paper) == 1, f"the paper's MVTec AD result (0.994 / 0.993) is stated once, with its source: {paper}"
    assert re.search(r"official repository's\s+scripts", _markdown(paper[0]))


# (config field, a phrase that quotes its default) — each field must be quoted somewhere and match BGADConfig
QUOTED_DEFAULTS = [
    ("epochs_phase1", r"(\d+) \(phase 1\)"), ("epochs_phase2", r"(\d+) \(phase 2\)"),
    ("epochs_phase1", r"phase 1 must train in (\d+) epochs"), ("epochs_phase1", r"phase 1 is trained here \((\d+) epochs"),
    ("epochs_phase1", r"phase 1[^.|]{0,40}?\b(\d+)\s+epochs"), ("epochs_phase2", r"phase[- ]2[^.|]{0,40}?\b(\d+)\s+epochs"),
    ("epochs_phase2", r"model\s+of\s+(\d+)\s+epochs"),
    ("epochs_phase2", r"`EPOCHS_PHASE2` epochs \((\d+) by default\)"),
    ("n_anomalies", r"\$k = (\d+)\$"), ("n_anomalies", r"labelled anomalies \((\d+)\)"),
    ("beta", r"β = ([\d.]+) in the official command"), ("beta", r"`cfg` \(β = ([\d.]+)\)"),
    ("tau", r"margin τ = ([\d.]+) further down"),
    ("normalizer", r"normalizer\*?\*? \((\d+)\)"), ("normalizer", r"\$N = (\d+)\$"),
    ("image_size", r"square images: (\d+) × \d+"), ("image_size", r"about (\d+)² px"),
    ("image_size", r"\(\d+ epochs, (\d+) px\)"),
]
PARAMETER_DEFAULTS = {"EPOCHS": "epochs_phase1", "EPOCHS_PHASE2": "epochs_phase2", "IMAGE_SIZE": "image_size"}


def test_quoted_defaults_match_the_config():
    from bgad_lite.config import BGADConfig

    cfg, quoted = BGADConfig(), {}
    for name in notebooks.NOTEBOOKS:
        text = _markdown(name)
        for field, pattern in QUOTED_DEFAULTS:
            for m in re.finditer(pattern, text):
                quoted.setdefault(field, []).append(name)
                assert float(m.group(1)) == float(getattr(cfg, field)), \
                    f"{name}: {m.group(0)!r} quotes {field} = {m.group(1)}, BGADConfig has {getattr(cfg, field)}"
        params = next(c.source for c in _read(name).cells if "parameters" in c.metadata.get("tags", []))
        for var, field in PARAMETER_DEFAULTS.items() if name not in TOY else ():
            value = re.search(rf"^{var} = (\d+)", params, re.M).group(1)
            assert int(value) == getattr(cfg, field), f"{name}: {var} = {value}, BGADConfig.{field} = {getattr(cfg, field)}"
    missing = {f for f, _ in QUOTED_DEFAULTS} - set(quoted)
    assert not missing, f"no notebook quotes {missing} any more: update QUOTED_DEFAULTS to the new wording"


# What computes an exercise's answer (in code): it must not appear in a code cell before the exercise.
ANSWER_PATTERNS = {
    "00.1": [r"compute_boundaries\(", r"sort\(", r"plane\.(draw|figure)\((?![^\n]*boundaries=False)"],
    "00.2": [r"<= ?b_n", r">= ?b_a", r"plane\.touched\("],
    "01.1": [r"permute\(0, 2, 3, 1\)"], "01.2": [r"adaptive_avg_pool2d", r"mean\(dim=\(1, 3\)\)", r"ndimage\.label"],
    "01.3": [r"einsum", r"np\.linalg\.(inv|solve)"], "02.2": [r"\(z \*\* 2\)\.sum"],
    "02.3": [r"softplus\(", r"logsigmoid\("], "02.4": [r"opt\.step\(\)"], "03.1": [r"np\.sort\(", r"torch\.sort\("],
    "03.2": [r"< [\w\[\]'\"]+\)\.mean\(\)"], "03.3": [r"\.split\(chunk\)"], "04.1": [r"l <= b_n", r"l >= b_a"],
    "04.3": [r"opt\.step\(\)"], "04.4": [r"11\.7 \*", r"0\.53 \*"], "05.1": [r"np\.sort\(", r"\[:, -k:\]"],
    "05.2": [r">= t\b"], "05.3": [r"\(l >= b_a\)", r"< b_a\)\.mean"],
}


def test_no_cell_before_an_exercise_computes_its_answer():
    checked = set()
    for name in notebooks.NOTEBOOKS:
        nb = _read(name)
        copy = nbformat.read(NB_DIR / "student" / f"{name}.ipynb", as_version=4)
        for exercise, source in student.solution_cells(nb, name).items():
            first = next(i for i, c in enumerate(nb.cells) if c.source == source)
            for i, cell in enumerate(copy.cells[:first]):
                for pattern in ANSWER_PATTERNS.get(exercise, []) if cell.cell_type == "code" else []:
                    m = re.search(pattern, cell.source)
                    assert not m, f"{name}, cell {i}: {m.group(0)!r} computes the answer of {exercise} before it"
            checked.add(exercise)
    assert set(ANSWER_PATTERNS) <= checked
