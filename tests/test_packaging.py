"""pyproject.toml and environment.yml must agree; the console script; the Colab rule for torch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(req: str) -> tuple[str, str, frozenset[str]]:
    """'timm>=0.9,<2' -> ('timm', '', {'>=0.9', '<2'}) (name canonical, extras, specifier clauses)."""
    m = NAME_RE.match(req)
    assert m, f"cannot parse requirement {req!r}"
    name, extras, spec = m.groups()
    clauses = frozenset(c.replace(" ", "") for c in spec.split(",") if c.strip())
    return _canon(name), extras or "", clauses


@pytest.fixture(scope="module")
def project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


@pytest.fixture(scope="module")
def env_pip() -> list[str]:
    """The entries of the ``- pip:`` list of environment.yml, parsed by hand (PyYAML may be missing)."""
    lines = (ROOT / "environment.yml").read_text().splitlines()
    out: list[str] = []
    pip_indent = None
    for line in lines:
        stripped = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not stripped:
            continue
        indent = len(stripped) - len(stripped.lstrip())
        if pip_indent is None:
            if re.fullmatch(r"\s*-\s*pip\s*:\s*", stripped):
                pip_indent = indent
            continue
        if indent <= pip_indent:
            break  # the pip list ended
        item = stripped.strip()
        assert item.startswith("- "), f"unexpected line in the pip list: {line!r}"
        out.append(item[2:].strip().strip("'\""))
    assert pip_indent is not None, "environment.yml has no '- pip:' list"
    assert out, "environment.yml's pip list is empty"
    return out


def _project_requirements(project: dict) -> list[str]:
    reqs = list(project["dependencies"])
    for group, items in project.get("optional-dependencies", {}).items():
        for r in items:
            if _canon(_split(r)[0]) == _canon(project["name"]):
                continue  # the self-reference bgad-lite[...]
            reqs.append(r)
    return reqs


def test_environment_matches_pyproject(project, env_pip):
    from packaging.version import Version

    proj = {}
    for r in _project_requirements(project):
        name, _, spec = _split(r)
        if name in proj and proj[name] != spec:
            # an extra may only raise a lower bound (ipywidgets: >=7.7 for Colab, >=7.8.5 for JupyterLab)
            both = (proj[name], spec)
            assert all(len(s) == 1 and next(iter(s)).startswith(">=") for s in both), \
                f"{name} is pinned differently in two groups: {both}"
            spec = max(both, key=lambda s: Version(next(iter(s))[2:]))
        proj[name] = spec
    env = {}
    extra = []
    for entry in env_pip:
        if entry in ("-e .", "-e ./", "--editable ."):
            continue
        name, _, spec = _split(entry)
        assert name not in env, f"{name} listed twice in environment.yml"
        env[name] = spec
    missing = sorted(set(proj) - set(env))
    extra = sorted(set(env) - set(proj))
    differ = {n: (sorted(proj[n]), sorted(env[n])) for n in set(proj) & set(env) if proj[n] != env[n]}
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    assert not extra, f"in environment.yml but not pyproject.toml: {extra}"
    assert not differ, f"different specifiers (pyproject, environment.yml): {differ}"
    assert "-e ." in env_pip, "environment.yml should install the package itself with '-e .'"


def test_self_reference_extras_exist(project):
    groups = project.get("optional-dependencies", {})
    for items in groups.values():
        for r in items:
            name, extras, _ = _split(r)
            if name == _canon(project["name"]):
                for e in extras.strip("[]").split(","):
                    assert e.strip() in groups, f"{r} refers to a missing extra {e!r}"


def test_console_script(project):
    assert project["scripts"]["bgad-lite"] == "bgad_lite.cli:main"
    import importlib

    cli = importlib.import_module("bgad_lite.cli")
    assert callable(getattr(cli, "main"))


def _torch_clauses(reqs) -> frozenset[str]:
    found = [_split(r)[2] for r in reqs if not r.startswith("-") and _split(r)[0] == "torch"]
    assert len(found) == 1, f"torch must be listed exactly once, found {len(found)}"
    return found[0]


def test_colab_rule_torch_has_no_upper_bound_or_pin(project, env_pip):
    for clauses in (_torch_clauses(project["dependencies"]), _torch_clauses(env_pip)):
        assert clauses, "torch needs at least a lower bound"
        for c in clauses:
            op = re.match(r"^(===|==|~=|!=|<=|>=|<|>)", c)
            assert op, f"cannot parse torch clause {c!r}"
            assert op.group(1) in (">=", ">", "!="), f"torch clause {c!r} would make Colab reinstall torch"
