"""One self-contained HTML page of a finished classification: the dashboard's diagnostic plots
and class table, rebuilt from an OUTDIR (``cryoclass report OUTDIR``).

For a run from the command line, or on a cluster, the diagnostics otherwise exist only as the
CSV files behind them. The page embeds plotly.js, so it opens offline, and it can be attached to
a lab notebook or e-mailed.

Example
-------
>>> from cryoclass_widgets.report import write_report     # doctest: +SKIP
>>> write_report("class3d")                                # → class3d/report.html  # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoclass.errors import InputFileError

from . import figures as F

__all__ = ["write_report", "report_figures"]


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _maps(d: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Class maps (K, D, D, D), the consensus and the focus mask (None when absent)."""
    from cryoclass.followup.sources import _class_maps
    from cryoclass.io.mrc import read_mrc

    vols = np.stack([read_mrc(p)[0] for p in _class_maps(d)]).astype(np.float32)
    cons = read_mrc(d / "consensus.mrc")[0] if (d / "consensus.mrc").is_file() else None
    focus = read_mrc(d / "mask_focus.mrc")[0] if (d / "mask_focus.mrc").is_file() else None
    return vols, cons, focus


def _read_outdir(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(iterations.csv, diagnostics/class_table.csv, params.yaml)`` of a classification
    OUTDIR; :class:`~cryoclass.errors.InputFileError` naming it when it is not one."""
    import yaml

    if not d.is_dir():
        raise InputFileError(d, "not a directory (expected a classification OUTDIR)")
    its = _read_csv(d / "iterations.csv")
    table = _read_csv(d / "diagnostics" / "class_table.csv")
    if its is None or table is None:
        raise InputFileError(d, "no iterations.csv or diagnostics/class_table.csv here")
    doc = yaml.safe_load((d / "params.yaml").read_text()) if (d / "params.yaml").is_file() else {}
    return its, table, doc or {}


def _flow_files(diag: Path) -> list[tuple[int, Path]]:
    """``(F-EM iteration, path)`` of the class-flow matrices, in iteration order (by number:
    ``it100`` after ``it99``)."""
    found = ((re.fullmatch(r"class_flow_matrix_it(\d+)\.csv", p.name), p) for p in diag.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m) if diag.is_dir() else []


def report_figures(outdir: str | os.PathLike) -> dict[str, Any]:
    """The diagnostic figures of a classification OUTDIR, by dashboard name (those whose data
    the directory holds): assignments, ess, sizes, convergence, sankey, flow_matrix, fsc,
    diff_slices."""
    d = Path(outdir)
    return _figures(d, *_read_outdir(d))


def _figures(
    d: Path, its: pd.DataFrame, table: pd.DataFrame, doc: dict[str, Any]
) -> dict[str, Any]:
    diag = d / "diagnostics"
    params = doc.get("params", {}) or {}
    K = len(table)
    mass_cols = [f"mass_{k}" for k in range(K)]
    figs: dict[str, Any] = {}
    figs["assignments"] = F.class_histogram_figure(
        table["size"].to_numpy(), table["effective_size"].to_numpy()
    )
    if (d / "particles.cs").is_file():
        cs = np.load(d / "particles.cs")
        if "alignments3D/class_ess" in (cs.dtype.names or ()):
            figs["ess"] = F.ess_histogram_figure(np.asarray(cs["alignments3D/class_ess"]), K)
    x = its["global_iteration"].to_numpy()
    figs["sizes"] = F.class_sizes_figure(
        x, its[mass_cols].to_numpy(), phases=its["phase"].astype(str).tolist()
    )
    figs["convergence"] = F.convergence_figure(
        x,
        its["pct_switched"].to_numpy(dtype=float),
        its["rms_change"].to_numpy(dtype=float),
        convergence_pct=params.get("convergence_pct"),
        rms_threshold=params.get("rms_change_threshold")
        if params.get("rms_change_check")
        else None,
    )
    flows = _flow_files(diag)
    if flows:
        it, last = flows[-1]
        m = pd.read_csv(last).to_numpy()
        figs["sankey"] = F.sankey_figure(m, iteration=it)
        figs["flow_matrix"] = F.flow_matrix_figure(m, iteration=it)
    fsc = _read_csv(diag / "fsc.csv")
    if fsc is not None:
        cols = [c for c in fsc.columns if c.startswith("class_")]
        figs["fsc"] = F.fsc_figure(
            fsc["freq_invA"].to_numpy(),
            fsc[cols].to_numpy().T,
            fsc_res_A=table["fsc_res_A"].to_numpy(dtype=float),
        )
    vols, cons, focus = _maps(d)
    if cons is not None:
        figs["diff_slices"] = F.difference_slices_figure(vols, cons, focus_mask=focus)
    return figs


def _page(d: Path, figs: dict[str, Any], table: pd.DataFrame, doc: dict[str, Any]) -> str:
    import plotly.offline

    import cryoclass

    params = doc.get("params", {}) or {}
    command = html.escape(str(doc.get("command", "")))
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
        for r in table.round(3).itertuples(index=False)
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    prm = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in params.items()
    )
    plots = "".join(
        f"<div class='plot' id='plot-{name}'>"
        + fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        + "</div>"
        for name, fig in figs.items()
    )
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    ran_by = html.escape(str(doc.get("cryoclass_version", "?")))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>cryoclass report: {html.escape(d.name)}</title>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 12px; text-align: right; }}
code {{ background: #f4f4f4; padding: 2px 4px; }}
.plots {{ display: grid; grid-template-columns: repeat(2, 520px); gap: 8px; }}
</style></head><body>
<h2>cryoclass — 3D classification without alignment</h2>
<p>Output directory <code>{html.escape(str(d))}</code>; report written {stamp} by cryoclass
{html.escape(cryoclass.__version__)} (the run: cryoclass {ran_by}).</p>
<p>Command: <code>{command}</code></p>
<h3>Classes</h3><table><tr>{head}</tr>{rows}</table>
<details><summary>All parameters</summary><table>{prm}</table></details>
<h3>Diagnostics</h3><div class="plots">{plots}</div>
</body></html>
"""


def write_report(outdir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Write the report of a classification OUTDIR to ``path`` (default
    ``OUTDIR/report.html``), atomically; returns the path. Raises
    :class:`~cryoclass.errors.InputFileError` naming the directory when it is not a
    classification OUTDIR."""
    from cryoclass.io.mrc import atomic_path

    d = Path(outdir)
    its, table, doc = _read_outdir(d)
    text = _page(d, _figures(d, its, table, doc), table, doc)
    out = Path(path) if path is not None else d / "report.html"
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return out
