"""The notebook course: clean committed notebooks, and each one executed on its own in smoke mode."""

from __future__ import annotations

import ast
import json
import time
import tomllib
from pathlib import Path

import nbformat
import pytest

from bgad_lite import course

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
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == sorted(course.NOTEBOOKS)
    assert course.REPOSITORY == _repository()


@pytest.mark.parametrize("name", course.NOTEBOOKS)
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
    assert badge in first.source and badge == course.colab_url(name)
    assert "colab-badge.svg" in first.source

    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
    names = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert REQUIRED_PARAMETERS <= names, f"{name}: parameters cell lacks {REQUIRED_PARAMETERS - names}"

    setup = next(c for c in nb.cells if c.cell_type == "code").source
    assert setup.index("OMP_WAIT_POLICY") < setup.index("import torch"), "set OMP_WAIT_POLICY before torch"
    assert 'google.colab" in sys.modules' in setup and "git+https://github.com/bgad-lite/bgad-lite" in setup
    assert any("What to try" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_every_notebook_builds_its_config_in_the_same_place():
    for name in course.NOTEBOOKS:
        sources = [c.source for c in _read(name).cells if c.cell_type == "code"]
        assert sum("course.make_config(" in s for s in sources) == 1, name
        assert not any("BGADConfig(" in s for s in sources), f"{name}: build the config with course.make_config"


def test_make_config_smoke_and_cache_keys(monkeypatch, tmp_path):
    monkeypatch.delenv("BGAD_SMOKE", raising=False)
    full = course.make_config(cache_dir=str(tmp_path))
    assert (full.epochs_phase1, full.epochs_phase2, full.image_size) == (*course.FULL_EPOCHS, 128)
    assert course.make_config(cache_dir=str(tmp_path)) == full  # same parameters, same config, same cache keys
    monkeypatch.setenv("BGAD_SMOKE", "1")
    smoke = course.make_config(cache_dir=str(tmp_path))
    assert all(getattr(smoke, k) <= v for k, v in course.SMOKE_SETTINGS.items())
    with pytest.raises(course.BGADError, match="textures"):
        course.make_config("textures", "carpet")
    with pytest.raises(course.BGADError, match="neither"):
        course.make_config(str(tmp_path / "missing"), "grass")
    assert course.select_notebooks("01,05") == ["01_feature_extraction", "05_margin_explorer"]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """The embedded data set is written once per session, never into the checkout."""
    return tmp_path_factory.mktemp("bgad_data")


@pytest.mark.parametrize("name", course.NOTEBOOKS)
def test_notebook_runs_alone_in_smoke_mode(name, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("BGAD_SMOKE", "1")
    monkeypatch.setenv("BGAD_DATA", str(data_root))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    cache = tmp_path / "cache"  # fresh and empty: the notebook must compute what it needs
    t = time.perf_counter()
    times = course.run_notebooks(tmp_path / "out", smoke=True, names=[name],
                                 parameters={"CACHE_DIR": str(cache)}, html=True)
    print(f"{name}: {time.perf_counter() - t:.1f} s")
    assert list(times) == [name]

    nb = nbformat.read(tmp_path / "out" / f"{name}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
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
