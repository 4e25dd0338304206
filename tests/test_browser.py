"""The margin explorer as a student sees it: notebook 05 in JupyterLab, in Chromium, with ipywidgets 8 and 7.

papermill proves that the explorer's Python runs; this test proves that the page shows a working
widget. For each widget version it starts JupyterLab on 127.0.0.1 (a free port, a token, fresh
settings / workspace / runtime folders, the news pop-up off), opens a copy of notebook 05 with the
smoke parameters and a fresh cache in Chromium (the Playwright Python package driving the system
browser: Playwright's own browser download needs the internet), runs all cells and checks:

- no error output, no "Error displaying widget" / "javascript error" text, no request leaving
  127.0.0.1 (the page is offline: nothing may come from a CDN);
- the explorer is there (sliders, drop-downs, images) and fits a laptop screen: its bounding box
  is measured and must stay within ``MAX_HEIGHT`` x the notebook's output width, images undistorted;
- each control, driven through the page (typing into a slider's readout + Enter, an arrow key on a
  slider's handle, choosing a drop-down option), redraws its views within ``REDRAW_S`` and the page
  then agrees with the kernel's state (read from the same kernel with jupyter_client): the PNG the
  page shows is the PNG the kernel drew, and the numbers in the tables are the kernel's;
- the plotly epoch animation plays;
- after saving, closing and reopening the notebook, no widget shows "model not found";
- after a kernel restart the explorer says what to do, and its cell run alone gives a clear message,
  not a bare ``NameError``.

Screenshots and the measurements go to ``runs/browser/<variant>/`` (git-ignored; ``BGAD_BROWSER_OUT``
moves it) so that a failure can be looked at.

ipywidgets 7 (what Colab ships): JupyterLab runs from a separate virtual environment
(``runs/browser/venv-widgets7``, built on first use from PyPI, no system site-packages) with
``jupyterlab_widgets`` 1.1, the ipywidgets-7 frontend; the kernel is this interpreter (it has torch
and bgad-lite) with ipywidgets 7.7.1 (Colab's version) installed in a folder put first on its path,
so ipywidgets 8 cannot leak in — the test checks the version the kernel reports and the widget
protocol version saved in the notebook.

Skips, with the reason, only where no browser can be had (no Chromium, no playwright package) or,
for ipywidgets 7, where the environment cannot be built (no network); with ``CI`` set they fail
instead, since CI installs all of it (``.ci/run``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_margin_explorer.ipynb"
OUT = Path(os.environ.get("BGAD_BROWSER_OUT", ROOT / "runs" / "browser"))
VIEWPORT = {"width": 1366, "height": 768}  # a common laptop screen
MAX_HEIGHT = 800  # px at 100 % zoom: the explorer must (about) fit the screen
MAX_WIDTH = 1300
REDRAW_S = 20.0  # a redraw takes 0.3-1.6 s on an idle 2-core CPU; generous for a busy CI machine
RUN_ALL_S = 600.0  # the smoke notebook runs in ~20 s with papermill
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: The ipywidgets-7 environment (Colab ships ipywidgets 7.7.1; jupyterlab_widgets 1.1.x is the
#: ipywidgets-7 frontend that works in JupyterLab 4, jupyterlab_widgets 3 renders nothing with 7.x).
WIDGETS7 = os.environ.get("BGAD_WIDGETS7", "7.7.1")
JUPYTERLAB_WIDGETS7 = "jupyterlab_widgets>=1.1.11,<2"


def _unavailable(reason: str):
    """Skip with the reason, except in CI, where everything the test needs is installed."""
    if IN_CI:
        pytest.fail(f"CI must run the browser test, but: {reason}")
    pytest.skip(reason)


def _chromium() -> str | None:
    for name in (os.environ.get("BGAD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# The two environments
# ---------------------------------------------------------------------------


def _version(python: str, module: str) -> str:
    return subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _widgets7_env() -> dict:
    """The ipywidgets-7 set-up, built once under OUT (rebuilt when its recipe changes)."""
    import jupyterlab
    import plotly

    venv = OUT / "venv-widgets7"
    kernel_site = venv / "kernel-site"  # ipywidgets 7 for the kernel, first on its sys.path
    recipe = {"jupyterlab": jupyterlab.__version__, "jupyterlab_widgets": JUPYTERLAB_WIDGETS7, "ipywidgets": WIDGETS7,
              "plotly": plotly.__version__, "python": sys.version.split()[0], "kernel_frontend_metadata": True}
    stamp = venv / "bgad-recipe.json"
    python = venv / "bin" / "python"
    if not (stamp.exists() and json.loads(stamp.read_text()) == recipe and python.exists()):
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
            # the server: JupyterLab (same version as here) with the ipywidgets-7 frontend only, and
            # plotly for its JupyterLab extension (the renderer of plotly's mimetype)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"jupyterlab=={jupyterlab.__version__}",
                            JUPYTERLAB_WIDGETS7, f"plotly=={plotly.__version__}"], check=True, capture_output=True,
                           text=True, timeout=1200)
            # the kernel's ipywidgets 7 (no dependencies: the rest comes from this interpreter), and the
            # metadata of the frontend it is paired with, as in one Colab-like environment
            frontend = subprocess.run([str(python), "-c", "import jupyterlab_widgets as j; print(j.__version__)"],
                                      check=True, capture_output=True, text=True).stdout.strip()
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--target", str(kernel_site),
                            f"ipywidgets=={WIDGETS7}", "ipython_genutils==0.2.0", f"jupyterlab_widgets=={frontend}"],
                           check=True, capture_output=True, text=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(venv, ignore_errors=True)
            _unavailable(f"could not build the ipywidgets-7 environment (pip needs PyPI): "
                         f"{getattr(e, 'stderr', '') or e}"[-1500:])
        stamp.write_text(json.dumps(recipe))
    # the kernel: this interpreter (torch, bgad-lite) with ipywidgets 7 shadowing ipywidgets 8
    spec = venv / "share" / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 (ipywidgets {WIDGETS7})", "language": "python",
        "env": {"PYTHONPATH": str(kernel_site)}}))
    kernel_widgets = subprocess.run([sys.executable, "-c", "import ipywidgets; print(ipywidgets.__version__)"],
                                    env={**os.environ, "PYTHONPATH": str(kernel_site)}, capture_output=True,
                                    text=True, check=True).stdout.strip()
    assert kernel_widgets == WIDGETS7, f"the kernel would import ipywidgets {kernel_widgets}"
    extensions = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"], capture_output=True,
                                text=True).stdout + subprocess.run(
        [str(venv / "bin" / "jupyter"), "labextension", "list"], capture_output=True, text=True).stderr
    manager = re.findall(r"@jupyter-widgets/jupyterlab-manager v(\S+)", extensions)
    assert manager and all(v.startswith("3.") for v in manager), f"widget frontends in the venv: {manager}"
    return {"server_python": str(python), "widgets": WIDGETS7, "manager": manager[0], "protocol": "1.5.0"}


def _widgets8_env() -> dict:
    import ipywidgets

    assert ipywidgets.__version__.startswith("8."), ipywidgets.__version__
    return {"server_python": sys.executable, "widgets": ipywidgets.__version__, "protocol": "2.0.0"}


# ---------------------------------------------------------------------------
# JupyterLab with a copy of notebook 05
# ---------------------------------------------------------------------------


class Lab:
    """A JupyterLab server on 127.0.0.1 with fresh settings, workspaces and runtime folders."""

    def __init__(self, env: dict, work: Path):
        self.env, self.work = env, work
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.root = work / "root"
        self.runtime = work / "runtime"
        settings = work / "settings"
        for d in (self.root, self.runtime, settings, work / "workspaces", work / "config", work / "data"):
            d.mkdir(parents=True, exist_ok=True)
        # no news / update pop-up in a test (or offline classroom)
        notif = settings / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self._notebook_copy()
        proc_env = {**os.environ, "JUPYTER_CONFIG_DIR": str(work / "config"), "JUPYTER_DATA_DIR": str(work / "data"),
                    "JUPYTER_RUNTIME_DIR": str(self.runtime), "JUPYTERLAB_SETTINGS_DIR": str(settings),
                    "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "BGAD_SMOKE": "1",
                    "BGAD_DATA": str(work / "data-set"), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        proc_env.pop("PYTHONPATH", None)
        self.log = open(work / "jupyterlab.log", "w")
        self.proc = subprocess.Popen(
            [env["server_python"], "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}", "--expose-app-in-browser"],
            env=proc_env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {(work / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                self.api("status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("JupyterLab did not answer within 120 s")

    def _notebook_copy(self) -> None:
        """Notebook 05 with the smoke parameters and a fresh cache, as papermill would inject them."""
        import papermill

        self.cache = self.work / "cache"
        papermill.execute_notebook(str(NOTEBOOK), str(self.root / NOTEBOOK.name), prepare_only=True,
                                   parameters={"SMOKE": True, "CACHE_DIR": str(self.cache)}, progress_bar=False,
                                   log_output=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str):
        with urllib.request.urlopen(f"{self.url}/api/{path}?token={self.token}", timeout=10) as r:
            return json.loads(r.read())

    def kernel_client(self):
        """A second client of the notebook's kernel, to read ``explorer.state`` directly."""
        from jupyter_client import BlockingKernelClient

        sessions = [s for s in self.api("sessions") if s["path"].endswith(NOTEBOOK.name)]
        assert sessions, "no kernel session for the notebook"
        kc = BlockingKernelClient(connection_file=str(self.runtime / f"kernel-{sessions[0]['kernel']['id']}.json"))
        kc.load_connection_file()
        kc.start_channels()
        kc.wait_for_ready(timeout=30)
        return kc

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def kernel_eval(kc, expr: str):
    """The value of a JSON-able Python expression in the notebook's kernel."""
    reply = kc.execute("import json as _json", silent=True, store_history=False, reply=True, timeout=60,
                       user_expressions={"v": f"_json.dumps({expr})"})
    result = reply["content"]["user_expressions"]["v"]
    assert result["status"] == "ok", result
    return json.loads(ast.literal_eval(result["data"]["text/plain"]))  # the repr of the JSON string


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------


def _run_all(page, timeout: float = RUN_ALL_S) -> float:
    """Run all cells from JupyterLab's command; wait until each code cell has a prompt number (or one
    has failed)."""
    page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                           timeout=120_000)
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget; return w && w.sessionContext && "
        "w.sessionContext.session && w.sessionContext.session.kernel && "
        "w.sessionContext.session.kernel.status === 'idle'; }", timeout=120_000)
    t0 = time.perf_counter()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   const cells = w.content.widgets.filter(c => c.model.type === 'code');
                   const failed = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
                   return w.sessionContext.session.kernel.status === 'idle' && cells.length > 0 &&
                          (failed || cells.every(c => c.model.executionCount !== null)); }""",
        timeout=timeout * 1000, polling=500)  # a cell's error stops "run all": no need to wait then
    return time.perf_counter() - t0


def _notebook_text(page) -> str:
    """The text of every output of the notebook (rendered or scrolled away)."""
    return page.evaluate("() => [...document.querySelectorAll('.jp-Notebook .jp-OutputArea')]"
                         ".map(e => e.textContent).join('\\n')")


def _scroll_through(page) -> None:
    """Scroll the notebook from top to bottom, so that every output is rendered."""
    page.evaluate("""async () => {
        const el = window.jupyterapp.shell.currentWidget.content.node;
        for (let y = 0; y <= el.scrollHeight; y += 500) {
            el.scrollTop = y; await new Promise(r => setTimeout(r, 150)); } }""")
    page.wait_for_timeout(1000)


def _element_shot(page, locator, path: Path) -> None:
    """A screenshot of the whole element: the window is made tall enough for it, then restored."""
    box = locator.bounding_box()
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(box["height"]) + 300)})
    page.wait_for_timeout(500)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)
    page.wait_for_timeout(300)


def _shown_png_sha(page, img) -> str:
    """SHA-256 of the PNG an ``<img>`` element shows (its blob or data URL, fetched in the page)."""
    return img.evaluate("""async el => {
        const buf = await (await fetch(el.src)).arrayBuffer();
        const d = await crypto.subtle.digest('SHA-256', buf);
        return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, '0')).join(''); }""")


def _kernel_png_sha(kc, view: str) -> str:
    return kernel_eval(kc, f"__import__('hashlib').sha256(explorer.png[{view!r}]).hexdigest()")


def _wait_src_change(page, img, before: str, timeout: float = REDRAW_S) -> float:
    t0 = time.perf_counter()
    img.page.wait_for_function("([el, s]) => el.src && el.src !== s", arg=[img.element_handle(), before],
                               timeout=timeout * 1000, polling=50)
    return time.perf_counter() - t0


class Explorer:
    """The first margin explorer on the page (the BGAD one), found by its CSS classes."""

    def __init__(self, page):
        self.page = page
        self.root = page.locator(".bgad-explorer").first

    def part(self, name: str):
        return self.root.locator(f".bgad-{name}").first

    def img(self, view: str):
        return self.root.locator(f"img.bgad-{view}-view").first  # an Image widget is the <img> itself

    def readout(self, control: str):
        return self.part(control).locator(".widget-readout").first

    def handle(self, control: str):
        return self.part(control).locator(".noUi-handle, .ui-slider-handle").first  # ipywidgets 8 / 7

    def select(self, control: str):
        return self.part(control).locator("select").first

    def srcs(self) -> dict[str, str]:
        return {v: self.img(v).get_attribute("src") for v in ("hist", "scores", "overlay", "epoch")}


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    if chromium is None:
        _unavailable("no Chromium on this machine (apt-get install chromium; or set BGAD_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.mark.parametrize("variant", ["ipywidgets8", "ipywidgets7"])
def test_margin_explorer_in_jupyterlab(variant, browser, tmp_path):
    env = _widgets8_env() if variant == "ipywidgets8" else _widgets7_env()
    out = OUT / variant
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    report: dict = {"variant": variant, **{k: v for k, v in env.items() if k != "server_python"}}
    t_test = time.perf_counter()
    lab = Lab(env, tmp_path)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    console, offsite = [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

    def route(r):  # offline: record and refuse anything that is not the local server
        offsite.append(r.request.url)
        r.abort()

    page.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), route)
    kc = None
    try:
        page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
        report["run_all_s"] = round(_run_all(page), 1)
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_timeout(1500)
        saved = json.loads((lab.root / NOTEBOOK.name).read_text())
        text = _notebook_text(page)
        errors = [o for c in saved["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"error output: {errors[0]['ename']}: {errors[0]['evalue']}"
        stderr = "".join(o.get("text", "") for c in saved["cells"] for o in c.get("outputs", [])
                         if o.get("name") == "stderr")
        assert "jupyterlab_widgets" not in stderr, stderr  # widgets.widget_frontend_problem() warned
        for bad in ("Error displaying widget", "javascript error", "Traceback"):
            assert bad.lower() not in text.lower(), f"the page shows {bad!r}"

        # the kernel ran the widget version under test
        kc = lab.kernel_client()
        assert kernel_eval(kc, "__import__('ipywidgets').__version__") == env["widgets"]
        protocol = kernel_eval(kc, "explorer.beta._model_module_version")  # the controls' protocol version
        assert protocol == env["protocol"], protocol

        ex = Explorer(page)
        ex.root.scroll_into_view_if_needed()
        assert not ex.root.locator(".bgad-stale-msg").is_visible(), "says the kernel is gone while it is there"
        for name in ("beta", "tau", "threshold", "epoch"):
            assert ex.handle(name).count() == 1 and ex.readout(name).count() == 1, f"no {name} slider"
        for name in ("level", "image"):
            assert ex.select(name).count() == 1, f"no {name} drop-down"
        for view in ("hist", "scores", "overlay", "epoch"):
            ex.img(view).wait_for(state="visible", timeout=30_000)

        # --- size: fits a laptop screen, images undistorted ------------------------------
        box = ex.root.bounding_box()
        area = ex.root.evaluate("el => el.closest('.jp-OutputArea-output').getBoundingClientRect().width")
        report["explorer_box"] = {k: round(v) for k, v in box.items()}
        report["output_width"] = round(area)
        page.screenshot(path=str(out / "screen-before.png"))  # what a 1366 x 768 screen shows
        _element_shot(page, ex.root, out / "explorer-before.png")
        clipped = ex.root.evaluate("""el => [...el.querySelectorAll('.widget-slider, .widget-dropdown, .widget-image')]
            .filter(w => { const r = w.getBoundingClientRect(), b = el.getBoundingClientRect();
                           return r.right > b.right + 1 || r.bottom > b.bottom + 1 ||
                                  w.scrollWidth > w.clientWidth + 1; })
            .map(w => w.className)""")
        distortion = ex.root.evaluate("""el => [...el.querySelectorAll('img')].map(i => {
            const r = i.getBoundingClientRect();
            return [r.width / r.height, i.naturalWidth / i.naturalHeight]; })""")
        report["image_aspect_shown_vs_png"] = [[round(a, 3), round(b, 3)] for a, b in distortion]
        assert box["height"] <= MAX_HEIGHT, f"explorer is {box['height']:.0f} px tall (screen: {VIEWPORT})"
        assert box["width"] <= min(MAX_WIDTH, area + 1), f"explorer is {box['width']:.0f} px wide, output {area:.0f}"
        assert not clipped, f"cut off at the explorer's edge: {clipped}"
        for shown, png in distortion:
            assert abs(shown / png - 1) < 0.02, f"an image is shown at aspect {shown:.3f}, drawn at {png:.3f}"

        # --- every control, through the page --------------------------------------------
        timings = {}

        def act(name, views, do, check):
            before = ex.srcs()
            t0 = time.perf_counter()
            do()
            for v in views:
                try:
                    _wait_src_change(page, ex.img(v), before[v], REDRAW_S - (time.perf_counter() - t0))
                except Exception:
                    page.screenshot(path=str(out / f"failed-{name.split()[0]}.png"))
                    raise AssertionError(f"{name}: the {v} view was not redrawn within {REDRAW_S} s") from None
            timings[name] = round(time.perf_counter() - t0, 2)
            report["redraw_s"] = timings
            page.wait_for_timeout(300)  # let the remaining messages of this redraw arrive
            for v in views:
                assert _shown_png_sha(page, ex.img(v)) == _kernel_png_sha(kc, v), f"{name}: page and kernel differ"
            check()

        def type_into(control, value):
            def do():
                r = ex.readout(control)
                r.click()
                page.keyboard.press("Control+A")
                page.keyboard.type(str(value))
                page.keyboard.press("Enter")
            return do

        def arrow(control, key):
            def do():
                ex.handle(control).focus()
                page.keyboard.press(key)
            return do

        def boundary_check():
            s = kernel_eval(kc, "{k: explorer.state[k] for k in ('b_n', 'b_a', 'beta', 'tau', 'level')}")
            shown = ex.part("boundary").text_content()
            assert f"{s['b_n']:.4f}" in shown and f"{s['b_a']:.4f}" in shown, (s, shown)
            return s

        act("beta (typed)", ["hist", "epoch"], type_into("beta", "0.05"),
            lambda: boundary_check()["beta"] == pytest.approx(0.05) or pytest.fail("β not 0.05"))
        tau0 = kernel_eval(kc, "explorer.tau.value")
        act("tau (arrow key)", ["hist", "epoch"], arrow("tau", "ArrowRight"),
            lambda: boundary_check()["tau"] == pytest.approx(tau0 + 0.005) or pytest.fail("τ did not step"))
        level0 = kernel_eval(kc, "explorer.level.value")
        new_level = 2 if level0 != 2 else 0
        act("level (drop-down)", ["hist"], lambda: ex.select("level").select_option(value=None, index=new_level),
            lambda: boundary_check()["level"] == new_level or pytest.fail("level not changed"))

        scores = kernel_eval(kc, "[float(v) for v in explorer.scores]")
        t_lo = kernel_eval(kc, "explorer.threshold.min")
        image0 = kernel_eval(kc, "explorer.image.value")
        t_now = kernel_eval(kc, "explorer.threshold.value")
        # a threshold that flips the verdict on the selected image, so that its overlay must change
        t_new = round(max(scores[image0] - 0.01, t_lo) if scores[image0] < t_now else scores[image0] + 0.01, 4)

        def metrics_check():
            s = kernel_eval(kc, "{k: explorer.state[k] for k in ('threshold', 'flagged_normal', 'n_normal', "
                                "'flagged_seen', 'n_seen')}")
            assert abs(s["threshold"] - t_new) < 2 * (max(scores) - min(scores)) / 400 + 1e-4, s
            shown = ex.part("metrics").text_content()
            assert f"{s['flagged_normal']}/{s['n_normal']}" in shown and f"{s['threshold']:.4f}" in shown, (s, shown)

        act("threshold (typed)", ["scores", "overlay"], type_into("threshold", t_new), metrics_check)
        n_images = len(scores)
        new_image = (image0 + 1) % n_images

        def image_check():
            s = kernel_eval(kc, "explorer.state['image']")
            assert s == new_image, s
            assert f"#{new_image} " in kernel_eval(kc, "explorer.state['overlay_title']")

        act("test image (drop-down)", ["scores", "overlay"],
            lambda: ex.select("image").select_option(index=new_image), image_check)
        epoch0 = kernel_eval(kc, "explorer.epoch.value")
        act("epoch (arrow key)", ["epoch"], arrow("epoch", "ArrowLeft"),
            lambda: kernel_eval(kc, "explorer.state['epoch']") == epoch0 - 1 or pytest.fail("epoch did not step"))
        report["redraw_s"] = timings
        _element_shot(page, ex.root, out / "explorer-after.png")

        # --- the plotly animation plays (offline: the bundled plotly.js of the extension) ---
        plot = page.locator(".js-plotly-plot").first
        plot.scroll_into_view_if_needed()
        label = plot.locator(".slider-container text.slider-label").first  # "epoch <n>"
        first_label = label.text_content()
        plot.locator(".updatemenu-button").first.click()
        last = kernel_eval(kc, "recorder.snapshots[-1].epoch")
        page.wait_for_function("([el, t]) => el.textContent.trim() === t",
                               arg=[label.element_handle(), f"epoch {last}"], timeout=30_000)
        report["animation"] = [first_label, label.text_content()]
        plot.screenshot(path=str(out / "animation.png"))

        # --- save, close and reopen: no "model not found" --------------------------------
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_timeout(1000)
        page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
        page.wait_for_timeout(1000)
        n_console = len(console)
        page.evaluate(f"() => window.jupyterapp.commands.execute('docmanager:open', {{path: '{NOTEBOOK.name}'}})")
        page.wait_for_selector(".bgad-explorer img", state="attached", timeout=60_000)
        _scroll_through(page)
        text = _notebook_text(page)
        missing = [m for m in console[n_console:] if "model not found" in m]
        report["after_reopen"] = {"model_not_found_in_page": text.count("model not found"),
                                  "model_not_found_in_console": len(missing)}
        Explorer(page).root.scroll_into_view_if_needed()
        page.screenshot(path=str(out / "screen-reopened.png"))
        assert not Explorer(page).root.locator(".bgad-stale-msg").first.is_visible(), "kernel alive, said gone"
        assert "Error displaying widget" not in text and not missing, f"after reopening: {report['after_reopen']}"

        # --- kernel restart: the explorer says what to do; its cell alone gives a clear message ---
        kc.stop_channels()
        kc = None
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
        page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                               ".status === 'idle'", timeout=60_000)
        page.wait_for_timeout(1000)
        ex = Explorer(page)
        ex.root.scroll_into_view_if_needed()
        before = ex.srcs()
        ex.select("image").select_option(index=(new_image + 1) % n_images)  # nothing can redraw now
        page.wait_for_timeout(3000)
        stale = ex.root.locator(".bgad-stale-msg").first
        report["after_restart"] = {"redrawn": ex.srcs() != before, "status": ex.part("status").text_content(),
                                   "message_shown": stale.is_visible(), "message": stale.text_content()}
        page.screenshot(path=str(out / "screen-after-restart.png"))
        assert not report["after_restart"]["redrawn"]
        assert report["after_restart"]["message_shown"], "no message that the kernel is gone"
        assert "kernel" in report["after_restart"]["status"] and "Run All" in report["after_restart"]["status"]

        # the explorer's cell alone, in the fresh kernel: a clear message, no bare NameError
        page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = nb.widgets.findIndex(c => c.model.sharedModel.getSource()
                .includes('widgets.margin_explorer(flows')); }""")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
        page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                               ".status === 'idle' && document.querySelector('.jp-Notebook .jp-mod-active"
                               " .jp-OutputArea-output')", timeout=60_000)
        page.wait_for_timeout(500)
        message = page.locator(".jp-Notebook .jp-mod-active .jp-OutputArea").first.text_content()
        report["explorer_cell_alone"] = message[-400:]
        page.locator(".jp-Notebook .jp-mod-active").first.screenshot(path=str(out / "explorer-cell-alone.png"))
        assert "NameError" not in message and "run" in message.lower(), message

        report["offsite_requests"] = offsite
        # the Colab badge in the title is an <img> from colab.research.google.com (offline: its alt text)
        fetched = [u for u in offsite if not u.startswith("https://colab.research.google.com/assets/")]
        assert not fetched, f"the page tried to fetch from outside (offline!): {fetched[:5]}"
        mathjax = [m for m in console if "mathjax" in m.lower()]
        assert not mathjax, f"MathJax errors in the console: {mathjax[:3]}"
    finally:
        report["test_s"] = round(time.perf_counter() - t_test, 1)
        report["console"] = console[:40]
        (out / "report.json").write_text(json.dumps(report, indent=1))
        try:
            page.screenshot(path=str(out / "screen-last.png"))
        except Exception:  # noqa: BLE001 - a screenshot must not hide the real failure
            pass
        if kc is not None:
            kc.stop_channels()
        context.close()
        lab.close()
    print(json.dumps(report, indent=1))
