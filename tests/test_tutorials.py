"""The tutorials run: every ``tutorials/NN_*.ipynb`` is executed with nbclient (kernel ``python3``
of this environment) in small mode (``CRYOCLASS_TUTORIAL_SMALL=1``) in a temporary directory, and
no cell may raise. The ``.py`` (jupytext percent) twin of each notebook must hold the same cells,
so that what is reviewed is what runs.

Run::

    .venv/bin/python -m pytest -v tests/test_tutorials.py            # about 5 min on 2 cores
    CRYOCLASS_TUTORIAL_ONLY=03 .venv/bin/python -m pytest tests/test_tutorials.py

Timings per notebook are printed with ``-s`` and appended to ``test-artifacts/tutorials.csv``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 300
ONLY = os.environ.get("CRYOCLASS_TUTORIAL_ONLY", "")

nbformat = pytest.importorskip("nbformat")


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_tutorials_exist():
    names = [p.stem for p in TUTORIALS]
    assert len(names) == 7, names
    for p in TUTORIALS:
        assert p.with_suffix(".py").exists(), f"{p.name} has no jupytext .py twin"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_notebook_matches_its_py_twin(path):
    jupytext = pytest.importorskip("jupytext")
    py = jupytext.read(path.with_suffix(".py"))
    nb = nbformat.read(path, as_version=4)
    assert _cells(py) == _cells(nb), (
        f"{path.name} and {path.with_suffix('.py').name} differ: run "
        f"`jupytext --sync tutorials/{path.with_suffix('.py').name}`"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    if ONLY and not path.stem.startswith(ONLY):
        pytest.skip(f"CRYOCLASS_TUTORIAL_ONLY={ONLY}")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("cryoclass_widgets")
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
    # the kernel inherits this environment: small sizes, no GPU search, tidy threads
    monkeypatch.setenv("CRYOCLASS_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    wall = time.perf_counter() - t0
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors[0]
    print(f"\n[tutorial] {path.stem}: {wall:.1f} s")
    art = REPO / "test-artifacts"
    art.mkdir(exist_ok=True)
    with open(art / "tutorials.csv", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')},{path.stem},{wall:.1f}\n")
