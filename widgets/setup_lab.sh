#!/usr/bin/env bash
# Prepare a venv for the cryoclass notebook dashboard and its browser tests.
#   bash widgets/setup_lab.sh [VENV_DIR]        (default: .venv of the repository)
# 1. JupyterLab settings overrides (no news/update popups; no cell virtualisation, so every output
#    stays in the DOM for the browser tests) -> $VENV/share/jupyter/lab/settings/overrides.json
# 2. Checks that the lab extensions (ipywidgets, plotly/anywidget, nglview 3.1.4) are installed and
#    that a Chromium for Playwright exists (Debian: apt-get install -y chromium fonts-liberation).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$HERE/../.venv}"
mkdir -p "$VENV/share/jupyter/lab/settings"
cp "$HERE/lab_overrides.json" "$VENV/share/jupyter/lab/settings/overrides.json"
echo "installed $VENV/share/jupyter/lab/settings/overrides.json"
"$VENV/bin/jupyter" labextension list 2>&1 | grep -E "nglview|jupyterlab-plotly|anywidget|jupyterlab_widgets|@jupyter-widgets" || {
  echo "lab extensions missing: pip install -e '.[widgets,browser]'" >&2; exit 1; }
CHROMIUM="${CC_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "no Chromium at $CHROMIUM: apt-get install -y chromium fonts-liberation" >&2; exit 1
fi
"$VENV/bin/python" -c "import playwright.sync_api" || { echo "pip install playwright" >&2; exit 1; }
echo "OK: browser tests can run:  CRYOCLASS_REQUIRE_BROWSER=1 $VENV/bin/python -m pytest -m browser tests/browser"
