"""Take the README screenshot of the dashboard: tutorial 1 in real JupyterLab, headless Chromium.

Starts JupyterLab on 127.0.0.1 in a temporary root holding a copy of
``tutorials/01_quickstart.ipynb``, runs all cells in Chromium (Playwright), waits for the
classification to finish, photographs the dashboard widget and writes a palette-compressed PNG
(< 300 KB) to ``docs/img/dashboard.png``.

Needs the notebook and browser extras (``pip install -e '.[widgets,browser]'``,
``bash widgets/setup_lab.sh``) and Debian's ``chromium``.

Run::

    .venv/bin/python docs/screenshot.py                 # full-size tutorial (≈ 1–2 min)
    .venv/bin/python docs/screenshot.py --small         # CRYOCLASS_TUTORIAL_SMALL=1 sizes
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CC_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TOKEN = "ccshot"
MAX_BYTES = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(root / "jupyterlab.log", "w")
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
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.workspaces_dir={root}/.ws",
            f"--LabApp.user_settings_dir={root}/.settings",
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=1)
            return proc, base
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited; see {root / 'jupyterlab.log'}") from None
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("jupyter lab did not start within 60 s")


def _run_all(page) -> None:
    from playwright.sync_api import expect

    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    expect(idle).to_be_visible(timeout=90_000)
    first = page.locator(".jp-Cell.jp-CodeCell").first.locator(".jp-InputPrompt")
    for _ in range(6):  # right after load "Run All Cells" can be a no-op: retry
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            expect(first).not_to_have_text("[ ]:", timeout=5_000)
            return
        except AssertionError:
            page.keyboard.press("Escape")
    raise RuntimeError("could not start Run All Cells")


# The parts of the dashboard shown (top to bottom); the rest of the setup form and the lower plot
# rows are left out so that the picture stays readable at README width.
SECTIONS = {
    "dashboard": ".cc-dashboard",
    "setup": ".cc-setup",
    "box_label": ".cc-box-label",
    "run": ".cc-run",
    "assignments": ".cc-plot-assignments",
    "ess": ".cc-plot-ess",
    "viewer": ".cc-viewer",
    "results": ".cc-results",
}


def _compose(png: bytes, boxes: dict) -> bytes:
    """Title + particles/filter part of the form, run row + first two plot rows, viewer + table."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    d = boxes["dashboard"]
    x0, x1 = int(d["x"]), int(d["x"] + d["width"])
    bottom = lambda b: b["y"] + b["height"]  # noqa: E731
    spans = [
        (d["y"], bottom(boxes["box_label"]) + 6),
        (boxes["run"]["y"] - 8, max(bottom(boxes["assignments"]), bottom(boxes["ess"])) + 4),
        (
            min(boxes["viewer"]["y"], boxes["results"]["y"]) - 4,
            max(bottom(boxes["viewer"]), bottom(boxes["results"])) + 4,
        ),
    ]
    parts = [im.crop((x0, int(a), x1, int(b))) for a, b in spans]
    gap = 12
    out = Image.new("RGB", (x1 - x0, sum(p.height for p in parts) + gap * 2), "white")
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height + gap
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def compress(png: bytes, out: Path, width: int = 1000) -> int:
    """Resize to ``width`` px and quantise to a 256-colour palette until under MAX_BYTES."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    while True:
        w = min(width, im.width)
        small = im.resize((w, round(im.height * w / im.width)), Image.Resampling.LANCZOS)
        pal = small.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        pal.save(buf, format="PNG", optimize=True)
        if buf.tell() < MAX_BYTES or width < 500:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(buf.getvalue())
            return buf.tell()
        width = int(width * 0.85)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CRYOCLASS_TUTORIAL_SMALL=1 sizes")
    ap.add_argument("-o", "--out", default=str(REPO / "docs" / "img" / "dashboard.png"))
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run")
    a = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    root = Path(tempfile.mkdtemp(prefix="cc-shot-"))
    shutil.copy(REPO / "tutorials" / "01_quickstart.ipynb", root / "01_quickstart.ipynb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if a.small:
        env["CRYOCLASS_TUTORIAL_SMALL"] = "1"
    proc, base = _start_lab(root, env)
    profile = tempfile.mkdtemp(prefix="cc-chromium-")
    t0 = time.time()
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROME_ARGS,
                viewport={"width": 1700, "height": 5000},
            )
            page = ctx.new_page()
            page.goto(f"{base}/lab/tree/01_quickstart.ipynb?token={TOKEN}")
            _run_all(page)
            status = page.locator(".cc-status")
            expect(status).to_contain_text("Finished", timeout=int(a.timeout * 1000))
            busy = page.locator(".jp-InputPrompt", has_text="[*]")
            expect(busy).to_have_count(0, timeout=int(a.timeout * 1000))
            errors = page.locator(".jp-OutputArea-output[data-mime-type*='error']")
            if errors.count():
                raise RuntimeError(errors.first.inner_text())
            dash = page.locator(".cc-dashboard")
            dash.evaluate("e => e.scrollIntoView({block: 'start'})")
            time.sleep(4)  # NGL (WebGL on SwiftShader) and Plotly settle
            boxes = {name: page.locator(sel).first.bounding_box() for name, sel in SECTIONS.items()}
            png = page.screenshot()
            ctx.close()
        n = compress(_compose(png, boxes), Path(a.out))
        print(f"wrote {a.out} ({n / 1e3:.0f} KB) after {time.time() - t0:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
