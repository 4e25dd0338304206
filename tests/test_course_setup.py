"""A lab that fits (issue 23, item 5): one install source per notebook, the Drive cache option,
the Drive helper outside and inside Colab, and the 90-minute plan of docs/teaching.md adding up."""

from __future__ import annotations

import math
import re
import sys
import types
from pathlib import Path

import nbformat
import pytest
from IPython.utils.text import DollarFormatter
from oracles import prose_words

from bgad_lite.config import BGADError
from bgad_lite.course import notebooks, setup

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
COPIES = [NB_DIR / f"{n}.ipynb" for n in notebooks.NOTEBOOKS] + [NB_DIR / "student" / f"{n}.ipynb"
                                                                 for n in notebooks.NOTEBOOKS]
TOY = {"00_idea_in_2d"}  # no data set and no cache
WORDS_PER_MINUTE = 200
DRIVE_LINE = '# CACHE_DIR = setup.drive_folder("bgad-lite/cache")'


def _cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    install = next(c for c in nb.cells if c.cell_type == "code")
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return nb, install.source, params.source


# ---------------------------------------------------------------------------
# The install cell and the parameters cell
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", COPIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_install_cell_takes_its_source_from_one_variable(path):
    _, source, _ = _cells(path)
    defaults = re.findall(r'^INSTALL_FROM = "([^"]*)"$', source, flags=re.MULTILINE)
    assert defaults == [setup.INSTALL_FROM], f"{path.name}: one INSTALL_FROM line with the library's default"
    pip = [ln.strip() for ln in source.splitlines() if "%pip install" in ln]
    assert pip == ['%pip install -q "{INSTALL_FROM}"'], f"{path.name}: the install must use the variable: {pip}"
    # what IPython runs: the magic's line with the variable expanded (quoted: a requirement holds spaces)
    expanded = DollarFormatter().vformat(pip[0], (), {"INSTALL_FROM": setup.INSTALL_FROM})
    assert expanded == f'%pip install -q "{setup.INSTALL_FROM}"'
    lines = [ln for ln in source.splitlines() if "git+" in ln or "bgad-lite @" in ln]
    assert lines == [f'INSTALL_FROM = "{setup.INSTALL_FROM}"'], "the source is named once, in the variable"
    assert source.index("INSTALL_FROM =") < source.index("%pip install"), "defined before it is used"


@pytest.mark.parametrize("path", COPIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_parameters_cell_offers_the_drive_option(path, monkeypatch):
    _, install, params = _cells(path)
    if path.stem in TOY:
        assert "CACHE_DIR" not in params.replace("# No CACHE_DIR here", ""), "the 2-D notebook keeps nothing"
        return
    assert params.count(DRIVE_LINE) == 1, f"{path.name}: the Drive option, commented out, in the parameters cell"
    assert "from bgad_lite.course import" in install and "setup" in install, "setup must be imported before it"
    calls = []
    fake = types.SimpleNamespace(drive_folder=lambda folder: calls.append(folder) or f"/content/drive/MyDrive/{folder}")
    as_committed: dict = {"setup": fake}
    exec(params, as_committed)  # noqa: S102 - the notebook's own parameters cell
    assert as_committed["CACHE_DIR"] == "runs/cache" and calls == [], "committed: nothing mounts (CI, papermill)"
    chosen: dict = {"setup": fake}
    exec(params.replace(DRIVE_LINE, DRIVE_LINE.removeprefix("# ")), chosen)  # noqa: S102
    assert chosen["CACHE_DIR"] == "/content/drive/MyDrive/bgad-lite/cache" and calls == ["bgad-lite/cache"]


def test_drive_folder_raises_a_clear_error_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    with pytest.raises(BGADError, match=r"only be mounted inside Google Colab.*CACHE_DIR a local folder"):
        setup.drive_folder()


def test_drive_folder_mounts_once_in_colab(monkeypatch, tmp_path):
    mounts = []

    def mount(where):
        mounts.append(where)
        (Path(where) / "MyDrive").mkdir(parents=True)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    first = setup.drive_folder("course/cache", mount=str(tmp_path / "drive"))
    second = setup.drive_folder("course/cache", mount=str(tmp_path / "drive"))
    assert first == second == str(tmp_path / "drive" / "MyDrive" / "course" / "cache")
    assert Path(first).is_dir() and mounts == [str(tmp_path / "drive")], "mounted once, the folder made"


@pytest.mark.slow
def test_fill_cache_lets_a_notebook_load_phase_1(monkeypatch, tmp_path):
    from bgad_lite import pipeline

    monkeypatch.setenv("BGAD_DATA", str(tmp_path / "data"))
    path = setup.fill_cache(str(tmp_path / "cache"), progress=False, smoke=True)
    assert (path / "model.pt").exists()
    cfg = setup.make_config(cache_dir=str(tmp_path / "cache"), smoke=True)  # what a notebook builds
    assert pipeline.phase1_is_cached(pipeline.prepare(cfg, progress=False), cfg)


# ---------------------------------------------------------------------------
# The plan in docs/teaching.md
# ---------------------------------------------------------------------------


def section_words(name: str) -> dict[str, int]:
    """Words of prose (``oracles.prose_words``) per section of a notebook: "0" is everything before
    "## 1." (title, goals, Setup), "1", "2", ... the numbered "## k." sections, and the unnumbered
    ones ("What to try", "Recap") under their titles."""
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    words, key = {"0": 0}, "0"
    for cell in nb.cells:
        m = re.match(r"## (?:(\d+)\.|(.+))", cell.source) if cell.cell_type == "markdown" else None
        if m and (m.group(1) or key != "0"):
            key = m.group(1) or m.group(2).strip()
            words.setdefault(key, 0)
        if cell.cell_type == "markdown":
            words[key] += prose_words(nbformat.v4.new_notebook(cells=[cell]))
    return words


def _table(heading: str) -> list[list[str]]:
    """The first Markdown table after ``heading`` in docs/teaching.md, as rows of cells (header first)."""
    text = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return [r for r in rows if not set("".join(r)) <= set("-: ")]


def _number(cell: str) -> float:
    cell = cell.strip("* ")
    return 0.0 if cell in ("", "—") else float(cell.replace(",", ""))


def test_word_counts(capsys):
    """Prints the counts the plan is built on: `python -m pytest -q -s tests/test_course_setup.py -k word_counts`."""
    with capsys.disabled():
        for name in notebooks.NOTEBOOKS:
            words = section_words(name)
            print(f"\n{name}: {sum(words.values())} words, "
                  + ", ".join(f"§{k} {v}" if k[0].isdigit() else f"{k} {v}" for k, v in words.items()))
    assert all(sum(section_words(n).values()) > 0 for n in notebooks.NOTEBOOKS)


def test_the_lab_plan_adds_up():
    rows = _table("## A 90-minute lab")
    header, body = rows[0], rows[1:]
    cols = ["reading", "waiting", "exercises", "questions", "talk", "minutes"]
    assert [h.split(" ")[0] for h in header[-7:]] == ["words", *cols], header
    total = [r for r in body if r[0].strip("* ") == "total"]
    assert len(total) == 1 and body[-1] is total[0], "one total row, last"
    parts = body[:-1]
    for r in parts:
        reading, waiting, exercises, questions, talk, minutes = (_number(c) for c in r[-6:])
        assert minutes == reading + waiting + exercises + questions + talk, f"{r[0]}: its minutes do not add up"
        nb = re.match(r"(\d\d) ", r[0])
        if nb is None:
            continue
        name = next(n for n in notebooks.NOTEBOOKS if n.startswith(nb.group(1)))
        sections = re.findall(r"§(\d+)", r[1])
        counts = section_words(name)
        words = sum(counts[s] for s in sections)
        assert abs(_number(r[-7]) - words) <= 100, f"{r[0]}: the plan says {r[-7]} words, §{sections} hold {words}"
        assert reading >= words / WORDS_PER_MINUTE, f"{r[0]}: {words} words need {words / 200:.1f} min of reading"
        checked = set(re.findall(r'exercises\.check\w*\(\s*"([0-9.]+)"', "\n".join(
            c.source for c in nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4).cells)))
        listed = set(re.findall(r"\b(\d\d\.\d)\b", r[1]))
        assert listed <= checked, f"{r[0]}: exercises {listed - checked} do not exist"
    for i, col in enumerate(cols):
        column = sum(_number(r[-6 + i]) for r in parts)
        assert _number(total[0][-6 + i]) == column, f"the total of {col} is {column}"
    assert _number(total[0][-1]) <= 90, "the core path must fit 90 minutes"


def test_the_notebook_table_matches_the_notebooks():
    rows = _table("## What each notebook costs")
    assert [r[0][:2] for r in rows[1:]] == [n[:2] for n in notebooks.NOTEBOOKS]
    for r in rows[1:]:
        name = next(n for n in notebooks.NOTEBOOKS if n.startswith(r[0][:2]))
        words = sum(section_words(name).values())
        assert abs(_number(r[1]) - words) <= 100, f"{name}: the table says {r[1]} words, the notebook holds {words}"
        assert _number(r[2]) == math.ceil(_number(r[1]) / WORDS_PER_MINUTE), f"{name}: reading minutes"
