"""The dashboard in real JupyterLab, in headless Chromium (Playwright-python).

Starts JupyterLab on 127.0.0.1 with a fresh root/workspace, opens a notebook generated from
``notebooks/dashboard_sim.py`` (tiny simulated data set, real engine), runs all cells, then checks
on the page: the controls render; after *Run* the Plotly figures and the class table change while
the job runs (no cell executing); the NGL canvas is not blank; *Stop* (pressed twice) stops a
second run; no JavaScript errors. Screenshots go to ``test-artifacts/browser/``.

Needs ``/usr/bin/chromium`` (Debian ``chromium``; or ``CC_CHROMIUM``) and ``playwright``; with
``CRYOCLASS_REQUIRE_BROWSER=1`` their absence fails the test instead of skipping it.

Run::

    CRYOCLASS_REQUIRE_BROWSER=1 .venv/bin/python -m pytest -m browser -v -s tests/browser
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ART = Path(os.environ.get("CC_ARTIFACTS", REPO / "test-artifacts" / "browser"))
CHROMIUM = os.environ.get("CC_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("CRYOCLASS_REQUIRE_BROWSER", "") == "1"
TOKEN = "cctest"
CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",  # WebGL on SwiftShader (CPU)
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
OVERRIDES = REPO / "widgets" / "lab_overrides.json"


def _unavailable(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"browser test cannot run: {what} (CRYOCLASS_REQUIRE_BROWSER=1)")
    pytest.skip(what)


def _percent_script_to_notebook(src: Path, dst: Path) -> None:
    """Cells separated by ``# %%`` lines → an .ipynb (header comments before the first marker
    are dropped)."""
    import nbformat

    cells, cur = [], None
    for line in src.read_text().splitlines():
        if line.startswith("# %%"):
            if cur is not None:
                cells.append("\n".join(cur).strip())
            cur = []
        elif cur is not None:
            cur.append(line)
    if cur:
        cells.append("\n".join(cur).strip())
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, dst)


def _ensure_lab_overrides() -> None:
    """Same as ``widgets/setup_lab.sh``: settings overrides into this environment's lab dir."""
    dst = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    want = json.loads(OVERRIDES.read_text())
    if dst.exists():
        have = json.loads(dst.read_text())
        if all(have.get(k) == v for k, v in want.items()):
            return
        want = {**have, **want}
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(want, indent=2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium fonts-liberation)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    try:
        import jupyterlab  # noqa: F401
        import nglview  # noqa: F401
    except ImportError as e:
        _unavailable(f"notebook stack missing: {e} (pip install -e '.[widgets,browser]')")
    _ensure_lab_overrides()
    ART.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cc-lab-"))
    _percent_script_to_notebook(HERE / "notebooks" / "dashboard_sim.py", root / "dashboard.ipynb")
    port = _free_port()
    log = open(ART / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.workspaces_dir={root}/.ws",
            f"--LabApp.user_settings_dir={root}/.settings",
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None:
                    raise RuntimeError(
                        "jupyter lab exited; see test-artifacts/browser/jupyterlab.log"
                    ) from None
                time.sleep(0.2)
        else:
            raise RuntimeError("jupyter lab did not start within 60 s")
        yield base, root
    finally:
        proc.terminate()  # only the server this fixture started; it shuts down its kernels
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    base, _ = lab
    profile = tempfile.mkdtemp(prefix="cc-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROME_ARGS,
            viewport={"width": 1400, "height": 3000},
        )
        pg = ctx.new_page()
        pg.console_errors, pg.console_all = [], []
        pg.on(
            "console",
            lambda m: (
                pg.console_all.append(f"{time.time():.1f} {m.type}: {m.text}"),
                m.type == "error" and pg.console_errors.append(m.text),
            ),
        )
        pg.on("pageerror", lambda e: pg.console_errors.append(f"pageerror: {e}"))
        pg.goto(f"{base}/lab/tree/dashboard.ipynb?token={TOKEN}")
        try:
            yield pg
        finally:
            (ART / "browser_console.log").write_text("\n".join(pg.console_all))
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------- helpers
def _nonwhite_fraction(png: bytes) -> float:
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("L")
    hist = im.histogram()
    return 1 - sum(hist[245:]) / (im.width * im.height)


_SNAPSHOT_JS = """() => {
  const all = s => Array.from(document.querySelectorAll(s));
  const d = s => all(s).map(e => e.getAttribute('d') || '');
  const txt = s => { const e = document.querySelector(s); return e ? e.innerText : ''; };
  return {status: txt('.cc-status'), bars: d('.cc-plot-assignments .bars path'),
          sizes: d('.cc-plot-sizes .scatterlayer path'), table: txt('.cc-class-table'),
          running_cells: all('.jp-InputPrompt').filter(e => e.innerText.includes('[*]')).length};
}"""


def _snapshot(page: Any) -> dict[str, Any]:
    """Status line, plot geometry and class table, read in one round trip."""
    s = page.evaluate(_SNAPSHOT_JS)
    s["bars"], s["sizes"], s["t"] = tuple(s["bars"]), tuple(s["sizes"]), time.time()
    return s


def _shot(page: Any, name: str, locator: Any = None) -> bytes:
    png = (locator or page).screenshot(**({} if locator is not None else {"full_page": True}))
    (ART / name).write_bytes(png)
    return png


def _dismiss_dialogs(page: Any) -> None:
    """Close any JupyterLab modal dialog (seen intermittently right after load: a kernel or
    notification dialog) so it cannot intercept clicks; its text and a screenshot are kept."""
    dialogs = page.locator(".jp-Dialog")
    for _ in range(3):
        if dialogs.count() == 0:
            return
        text = dialogs.first.inner_text()
        _shot(page, "dialog.png")
        with open(ART / "dialogs.log", "a") as fh:
            fh.write(text.replace("\n", " | ") + "\n")
        accept = dialogs.first.locator(".jp-Dialog-button.jp-mod-accept")
        if text.startswith("Select Kernel") and _has_kernel(page):
            # a Run All that raced the kernel connection: keep the running kernel (accepting
            # would start a second one and shut down the first, losing the queued cells)
            page.keyboard.press("Escape")
        elif accept.count():
            accept.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(500)


def _has_kernel(page: Any) -> bool:
    """Whether the notebook toolbar names a kernel (not "No Kernel")."""
    name = page.locator(".jp-Toolbar-kernelName, .jp-KernelName").first
    try:
        label = name.inner_text(timeout=2_000)
    except Exception:  # noqa: BLE001 - no such element in this JupyterLab version
        return False
    return bool(label.strip()) and "No Kernel" not in label


# --------------------------------------------------------------------------- tests (in order)
def test_notebook_runs_and_controls_render(page):
    from playwright.sync_api import expect

    t0 = time.time()
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    expect(idle).to_be_visible(timeout=90_000)
    first_prompt = page.locator(".jp-Cell").first.locator(".jp-InputPrompt")
    for _ in range(6):  # right after load "Run All Cells" can be a no-op: retry
        _dismiss_dialogs(page)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            expect(first_prompt).not_to_have_text("[ ]:", timeout=5_000)
            break
        except AssertionError:
            page.keyboard.press("Escape")
    else:
        raise AssertionError("could not start Run All Cells")
    # executed (a number, not [ ] or [*]); a Run All retried on a cold start may number it [3]
    expect(page.locator(".jp-Cell").last.locator(".jp-InputPrompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=240_000
    )
    errors_in_cells = page.locator(".jp-OutputArea-output[data-mime-type*='error']")
    assert errors_in_cells.count() == 0, errors_in_cells.first.inner_text()
    print(f"\n[timing] notebook executed after {time.time() - t0:.1f}s")

    dash = page.locator(".cc-dashboard")
    expect(dash).to_be_visible(timeout=60_000)
    expect(page.locator(".cc-run")).to_be_enabled()
    expect(page.locator(".cc-stop")).to_be_disabled()
    expect(page.locator(".cc-filter-slider")).to_be_visible()
    expect(page.locator(".cc-box-label")).to_contain_text("Classification box")
    expect(page.locator(".cc-box-label")).to_contain_text("px")
    expect(page.locator(".cc-particles-info")).to_contain_text("600 particles")
    if not os.environ.get("CRYOCLASS_BROWSER_DEMO"):  # the particles box suggests the file
        suggestion = page.locator(".cc-particles-path datalist option[value='sim/particles.star']")
        expect(suggestion).to_have_count(1, timeout=30_000)
    expect(page.locator(".cc-field-n_classes input")).to_have_value("3")
    expect(
        page.locator(
            ".cc-setup .jupyter-widget-Accordion, .cc-setup .lm-AccordionPanel, "
            ".cc-setup .widget-accordion, .cc-setup .p-Accordion"
        ).first
    ).to_be_visible()
    expect(page.locator(".js-plotly-plot")).to_have_count(8, timeout=60_000)
    expect(page.locator(".cc-ngl canvas")).to_have_count(1, timeout=60_000)
    # invalid value → message beside the field, not a traceback
    n_classes = page.locator(".cc-field-n_classes input")
    n_classes.fill("0")
    n_classes.press("Enter")
    err = page.locator(".cc-field-n_classes").locator("xpath=..").locator(".cc-field-error")
    expect(err).to_contain_text("≥ 1", timeout=15_000)
    n_classes.fill("3")
    n_classes.press("Enter")
    expect(err).to_have_text("", timeout=15_000)
    _shot(page, "01_ready.png")


def test_run_updates_plots_and_table_while_running(page):
    from playwright.sync_api import expect

    page.locator(".cc-run").click()
    expect(page.locator(".cc-stop")).to_be_enabled(timeout=20_000)
    snaps = []
    t_end = time.time() + 240
    while time.time() < t_end:
        s = _snapshot(page)
        snaps.append(s)
        if "Finished" in s["status"] or "Failed" in s["status"]:
            break
        if len(snaps) == 8:
            _shot(page, "02_running.png")
        time.sleep(0.15)
    running = [s for s in snaps if "ETA" in s["status"] and s["bars"]]
    print(
        f"[live] {len(snaps)} snapshots, {len(running)} while running; statuses:",
        sorted({s["status"][:40] for s in running})[:6],
    )
    assert "Finished" in snaps[-1]["status"], snaps[-1]["status"]
    assert len({s["bars"] for s in running}) >= 2, "assignment histogram did not change live"
    assert len({s["sizes"] for s in running}) >= 2, "class-size plot did not change live"
    assert len({s["table"] for s in running}) >= 2, "class table did not change live"
    assert all(s["running_cells"] == 0 for s in snaps), "a cell was executing during the run"
    expect(page.locator(".cc-run")).to_be_enabled(timeout=20_000)
    expect(page.locator(".cc-export-classes")).to_be_enabled(timeout=20_000)
    expect(page.locator(".cc-plot-sankey .sankey")).to_have_count(1, timeout=20_000)
    assert page.locator(".cc-class-table").inner_text().count("class ") == 3
    time.sleep(1.5)
    _shot(page, "03_finished.png")
    for name in ("assignments", "sankey", "flow_matrix", "sizes", "diff_slices"):
        _shot(page, f"plot_{name}.png", page.locator(f".cc-plot-{name}"))


def test_ngl_canvas_is_not_blank(page):
    canvas = page.locator(".cc-ngl canvas").first
    canvas.scroll_into_view_if_needed()
    _shot(page, "04_viewer.png", page.locator(".cc-viewer"))
    fr = 0.0
    for _ in range(20):  # WebGL on SwiftShader can take a moment after the last swap
        png = _shot(page, "04_ngl_canvas.png", canvas)
        fr = _nonwhite_fraction(png)
        if fr > 0.01:
            break
        time.sleep(0.5)
    print(f"[ngl] non-white fraction {fr:.4f}")
    assert fr > 0.01, f"NGL canvas looks blank (non-white fraction {fr:.4f})"
    _shot(page, "04_viewer.png", page.locator(".cc-viewer"))


def test_stop_stops_a_run(page):
    from playwright.sync_api import expect

    status = page.locator(".cc-status")
    # A run long enough that Stop always lands first: the notebook's 30 F-EM iterations take
    # ~4 s on CI, less than the browser → kernel → job round trip can be behind the status line
    # (CI once saw "iteration 22/30" and then "Finished"). Set through the form, as a user would.
    iters = page.locator(".cc-field-max_fem_iters input")
    if not iters.is_visible():
        page.locator(".cc-advanced").get_by_text("F-EM and convergence").click()
    expect(iters).to_be_visible(timeout=10_000)
    iters.fill("2000")
    iters.press("Enter")
    expect(iters).to_have_value("2000")
    page.locator(".cc-run").click()
    expect(page.locator(".cc-stop")).to_be_enabled(timeout=20_000)  # the new run started
    seen = []
    t_end = time.time() + 120
    while time.time() < t_end:
        seen.append(status.inner_text())
        if any(w in seen[-1] for w in ("iteration", "Finished", "Failed", "Stopped")):
            break
        time.sleep(0.1)
    if "iteration" not in seen[-1]:
        _shot(page, "05_stop_failed.png")
        raise AssertionError(f"second run did not reach an iteration: {sorted(set(seen))}")
    stop = page.locator(".cc-stop")
    stop.click()
    stop.click(force=True)  # pressing twice is fine (the button is disabled after the first)
    expect(status).to_contain_text("Stopped", timeout=60_000)
    expect(page.locator(".cc-run")).to_be_enabled(timeout=20_000)
    expect(stop).to_be_disabled()
    s1 = _snapshot(page)
    time.sleep(1.5)
    s2 = _snapshot(page)
    assert s1["bars"] == s2["bars"] and s1["table"] == s2["table"], "still updating after Stop"
    _shot(page, "05_stopped.png")


def test_no_javascript_errors(page):
    errs = [e for e in page.console_errors if "favicon" not in e]
    assert not errs, "JavaScript errors:\n" + "\n".join(errs[:20])
