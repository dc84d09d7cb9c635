#!/usr/bin/env bash
# Check the Binder environment without Binder: build a clean venv from exactly binder/runtime.txt,
# binder/requirements.txt and binder/postBuild (the way repo2docker does: pip run from the
# repository root), check the JupyterLab extensions, then execute tutorial 1 headless in it.
#
#   bash binder/check.sh [WORKDIR]          # default: a new temporary directory (kept; path printed)
#   CRYOCLASS_TUTORIAL_SMALL=1 bash binder/check.sh    # smaller tutorial sizes (as in CI)
#
# Needs python3 of the minor version in runtime.txt (a warning otherwise) and a package index.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d -t cryoclass-binder-XXXX)}"
mkdir -p "$WORK"
PY="${PYTHON:-python3}"
t0=$(date +%s)

want="$(sed -n 's/^python-\([0-9.]*\).*/\1/p' "$REPO/binder/runtime.txt")"
have="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
[ "$want" = "$have" ] || echo "WARNING: runtime.txt asks for Python $want, this check uses $have" >&2

echo "== venv in $WORK/venv (Python $have)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
echo "== pip install -r binder/requirements.txt (from the repository root, as repo2docker)"
(cd "$REPO" && "$WORK/venv/bin/python" -m pip install -q -r binder/requirements.txt)
echo "== binder/postBuild"
(cd "$REPO" && PATH="$WORK/venv/bin:$PATH" NB_PYTHON_PREFIX="$WORK/venv" bash binder/postBuild)
t1=$(date +%s)

echo "== JupyterLab extensions"
ext="$("$WORK/venv/bin/jupyter" labextension list 2>&1)"
for e in "@jupyter-widgets/jupyterlab-manager" "jupyterlab-plotly" "anywidget" "nglview-js-widgets"; do
  echo "$ext" | grep -q "$e.*enabled.*OK" || { echo "$ext"; echo "FAILED: lab extension $e missing or not OK" >&2; exit 1; }
  echo "  $e OK"
done
"$WORK/venv/bin/python" -m pip check
test -f "$WORK/venv/share/jupyter/lab/settings/overrides.json"

echo "== tutorial 1, headless (nbclient, kernel python3 of the new venv)"
mkdir -p "$WORK/run"
cp "$REPO/tutorials/01_quickstart.ipynb" "$WORK/run/"
(cd "$WORK/run" && "$WORK/venv/bin/jupyter" execute --kernel_name=python3 --inplace 01_quickstart.ipynb)
"$WORK/venv/bin/python" - "$WORK/run/01_quickstart.ipynb" <<'PYEOF'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
assert not errors, errors[0]
widgets = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {})
              for c in nb.cells if c.cell_type == "code" for o in c.outputs)
assert widgets >= 1, "the dashboard did not display"
print(f"  {len(nb.cells)} cells, no errors, {widgets} widget view(s)")
PYEOF
t2=$(date +%s)
echo "OK: binder environment in $((t1 - t0)) s, tutorial 1 in $((t2 - t1)) s (total $((t2 - t0)) s); $WORK"
