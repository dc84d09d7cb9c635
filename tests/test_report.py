"""``cryoclass report OUTDIR``: the dashboard's diagnostic plots and class table of a finished
classification as one self-contained HTML page, checked against the OUTDIR's own files."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly")

from cryoclass_widgets.report import report_figures, write_report  # noqa: E402

import cryoclass  # noqa: E402
from cryoclass import sim  # noqa: E402
from cryoclass.errors import InputFileError  # noqa: E402


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    ds = sim.simulate(n_particles=300, box=32, pixel_size_A=6.0, snr=1.0, seed=5)
    d = tmp_path_factory.mktemp("report") / "class3d"
    p = cryoclass.ClassificationParams(
        n_classes=3,
        filter_res_A=14.0,
        seed=0,
        rms_change_check=False,  # at least two F-EM iterations: a class flow to show
        convergence_pct=0.0,
        max_fem_iters=3,
        oem_epochs=1,
        init_particles_per_class=60,
        oem_batch_size_per_class=60,
    )
    cryoclass.Classification(ds.particles, p, outdir=d, command="cryoclass test").run()
    return d


def test_figures_hold_the_outdirs_numbers(outdir):
    figs = report_figures(outdir)
    assert list(figs) == [
        "assignments", "ess", "sizes", "convergence", "sankey", "flow_matrix", "fsc",
        "diff_slices",
    ]  # fmt: skip
    table = pd.read_csv(outdir / "diagnostics" / "class_table.csv")
    np.testing.assert_array_equal(figs["assignments"].data[0].y, table["size"])
    its = pd.read_csv(outdir / "iterations.csv")
    assert list(figs["sizes"].data[0].x) == list(its["global_iteration"] + 1)
    # the last flow matrix: every particle once, F-EM iteration counted from 1 in the title
    flows = sorted((outdir / "diagnostics").glob("class_flow_matrix_it*.csv"))
    m = pd.read_csv(flows[-1]).to_numpy()
    it = int(re.search(r"it(\d+)", flows[-1].name).group(1))
    assert sum(figs["sankey"].data[0].link.value) == m.sum() == 300
    assert f"F-EM iteration {it + 1}" in figs["flow_matrix"].layout.title.text
    cs = np.load(outdir / "particles.cs")
    assert sum(figs["ess"].data[0].y) == len(cs)


def test_page_is_self_contained_and_written_atomically(outdir, tmp_path):
    out = write_report(outdir, tmp_path / "r.html")
    text = out.read_text()
    assert text.count("class='plot'") == 8 and "cryoclass test" in text  # plots, the command
    # opens offline: plotly.js inside the page, no script loaded from elsewhere
    assert "plotly.js v" in text and not re.search(r"<script[^>]*\bsrc=", text)
    table = pd.read_csv(outdir / "diagnostics" / "class_table.csv")
    for size in table["size"]:
        assert f"<td>{size}</td>" in text
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left


def test_cli_writes_the_report_and_refuses_a_non_outdir(outdir, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cryoclass.cli", "report", str(outdir)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (outdir / "report.html").is_file() and "report in" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "cryoclass.cli", "report", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(tmp_path) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(InputFileError, match="not a directory"):
        report_figures(tmp_path / "missing")


def test_flow_files_in_iteration_order(tmp_path):
    from cryoclass_widgets.report import _flow_files

    for it in (2, 100, 99):
        (tmp_path / f"class_flow_matrix_it{it:02d}.csv").write_text("0\n1\n")
    (tmp_path / "class_flow_edges.csv").write_text("")
    assert [it for it, _ in _flow_files(tmp_path)] == [2, 99, 100]  # it100 after it99
    assert _flow_files(tmp_path / "none") == []
