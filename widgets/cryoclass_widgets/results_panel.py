"""Results panel: the class table (size, effective size, FSC resolution), updated live, with
checkboxes to export the selected classes' particles (``.star``/``.cs``) and volumes.

Example
-------
>>> import numpy as np
>>> from cryoclass_widgets.results_panel import ResultsPanel
>>> panel = ResultsPanel()
>>> panel.set_table(np.array([300, 200]), np.array([290.5, 209.5]), np.array([9.1, np.nan]))
>>> panel.rows[0]["size"].value, panel.rows[1]["res"].value
('300', '—')
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from cryoclass.io.relion_model import MODEL_NAME, display_command

from .figures import class_colors
from .state import RunState

__all__ = ["ResultsPanel"]

_COLS = ("select", "class", "size", "effective size", "FSC res. (Å)")


def _cell(text: str = "", bold: bool = False) -> W.HTML:
    return W.HTML(f"<b>{text}</b>" if bold else text, layout=W.Layout(margin="0 4px"))


class ResultsPanel:
    """Class table with selection and export buttons.

    ``rows[k]`` holds the widgets of class ``k`` (``'check'``, ``'size'``, ``'mass'``,
    ``'res'``). Export is enabled once the job has a result (:meth:`set_result`).
    """

    def __init__(self) -> None:
        self.result: Any = None
        self.rows: list[dict[str, W.Widget]] = []
        self.grid = W.GridBox(
            layout=W.Layout(grid_template_columns="50px 90px 70px 140px 100px", grid_gap="2px 0")
        )
        self.grid.add_class("cc-class-table")
        self.outdir = W.Text(
            value="cryoclass_out",
            description="output folder",
            style={"description_width": "100px"},
            layout=W.Layout(width="440px"),
        )
        self.fmt_star = W.Checkbox(
            value=True, description=".star", indent=False, layout=W.Layout(width="70px")
        )
        self.fmt_cs = W.Checkbox(
            value=True, description=".cs", indent=False, layout=W.Layout(width="60px")
        )
        self.min_probability = W.BoundedFloatText(
            value=0.0,
            min=0.0,
            max=1.0,
            step=0.05,
            description="min. probability",
            tooltip="export only particles whose posterior (summed over the selected classes "
            "for selected.star/.cs) is at least this; 0 = every particle of the classes",
            style={"description_width": "initial"},  # the whole label
            layout=W.Layout(width="200px", margin="0 0 0 12px"),
        )
        self.min_probability.add_class("cc-min-probability")
        self.all_button = W.Button(description="all", layout=W.Layout(width="60px"))
        self.none_button = W.Button(description="none", layout=W.Layout(width="60px"))
        self.export_button = W.Button(
            description="Export selected classes",
            icon="download",
            button_style="primary",
            disabled=True,
            layout=W.Layout(width="210px"),
        )
        self.export_button.add_class("cc-export-classes")
        self.write_all_button = W.Button(
            description="Write all outputs",
            icon="save",
            disabled=True,
            layout=W.Layout(width="170px"),
        )
        self.status = W.HTML(
            "<span style='color:#888'>The table fills in as the job runs; "
            "export is available when it finishes.</span>"
        )
        self.status.add_class("cc-results-status")
        self.all_button.on_click(lambda _b: self.select(range(len(self.rows))))
        self.none_button.on_click(lambda _b: self.select([]))
        self.export_button.on_click(lambda _b: self.export_selected())
        self.write_all_button.on_click(lambda _b: self.write_all())
        self.widget = W.VBox(
            [
                W.HTML("<h3 style='margin:4px 0'>Classes</h3>"),
                self.grid,
                W.HBox([W.Label("select:"), self.all_button, self.none_button]),
                self.outdir,
                W.HBox([W.Label("formats:"), self.fmt_star, self.fmt_cs, self.min_probability]),
                W.HBox([self.export_button, self.write_all_button]),
                self.status,
            ]
        )
        self.widget.add_class("cc-results")

    # ------------------------------------------------------------------ table
    def _build_rows(self, K: int) -> None:
        colors = class_colors(K)
        header = [_cell(c, bold=True) for c in _COLS]
        self.rows, cells = [], list(header)
        for k in range(K):
            row = dict(
                check=W.Checkbox(value=True, indent=False, layout=W.Layout(width="40px")),
                name=_cell(f"<span style='color:{colors[k]}'>■</span> class {k}"),
                size=_cell(),
                mass=_cell(),
                res=_cell(),
            )
            row["check"].add_class(f"cc-select-class-{k}")
            self.rows.append(row)
            cells += [row["check"], row["name"], row["size"], row["mass"], row["res"]]
        self.grid.children = cells

    def set_table(
        self, hard_counts: np.ndarray, class_mass: np.ndarray, fsc_res_A: np.ndarray | None = None
    ) -> None:
        """Fill the table (rebuilt when the number of classes changes)."""
        K = len(hard_counts)
        if K != len(self.rows):
            self._build_rows(K)
        total = float(np.sum(class_mass)) or 1.0
        for k, row in enumerate(self.rows):
            row["size"].value = f"{int(hard_counts[k])}"
            row["mass"].value = f"{class_mass[k]:.1f} ({100 * class_mass[k] / total:.1f} %)"
            r = None if fsc_res_A is None else float(fsc_res_A[k])
            row["res"].value = "—" if r is None or not np.isfinite(r) else f"{r:.2f}"

    def update(self, state: RunState, parts: set[str]) -> None:
        """Refresh from the run state (``'iterations'`` → table, ``'result'`` → export)."""
        rec = state.latest()
        if "iterations" in parts and rec is not None:
            self.set_table(rec["hard_counts"], rec["class_mass"], rec["fsc_res_A"])
        if "result" in parts and state.result is not None:
            self.set_result(state.result)

    def set_result(self, result: Any) -> None:
        """Enable export of this result (a ``ClassificationResult``)."""
        self.result = result
        self.export_button.disabled = self.write_all_button.disabled = False
        self.status.value = "Select classes and export their particles and volumes."

    def reset(self) -> None:
        """Clear for a new run."""
        self.result = None
        self.export_button.disabled = self.write_all_button.disabled = True

    # ------------------------------------------------------------------ selection / export
    def selected(self) -> list[int]:
        """Classes whose checkbox is ticked."""
        return [k for k, r in enumerate(self.rows) if r["check"].value]

    def select(self, classes: Sequence[int] | range) -> None:
        """Tick exactly these classes."""
        chosen = set(classes)
        for k, r in enumerate(self.rows):
            r["check"].value = k in chosen

    def export_selected(self) -> list[Any] | None:
        """``result.write_classes(outdir, selected, formats, min_probability)``; reports in the
        status line."""
        classes = self.selected()
        formats = tuple(f for f, w in (("star", self.fmt_star), ("cs", self.fmt_cs)) if w.value)
        if self.result is None:
            self._say("No result yet: run the job first.", error=True)
            return None
        if not classes:
            self._say("Select at least one class.", error=True)
            return None
        if not formats:
            self._say("Tick .star and/or .cs.", error=True)
            return None
        p = float(self.min_probability.value)
        return self._write(
            lambda: self.result.write_classes(
                self.outdir.value, classes, formats=formats, min_probability=p
            ),
            f"classes {classes}" + (f" (probability ≥ {p:g})" if p > 0 else ""),
        )

    def write_all(self) -> list[Any] | None:
        """``result.write(outdir)``: every output of the job."""
        if self.result is None:
            self._say("No result yet: run the job first.", error=True)
            return None
        return self._write(lambda: self.result.write(self.outdir.value), "all outputs")

    def _write(self, fn: Any, what: str) -> list[Any] | None:
        self._say(f"Writing {what}…")
        try:
            files = fn()
        except Exception as e:  # noqa: BLE001 - shown in the panel
            self._say(f"Export failed: {e}", error=True)
            return None
        files = list(files) if files is not None else []
        where = html.escape(str(Path(self.outdir.value).expanduser()))
        text = f"Wrote {what}: {len(files)} file(s) in <code>{where}</code>"
        model = next((f for f in files if Path(f).name == MODEL_NAME), None)
        if model is not None:  # how to open the run in RELION's class selection
            text += f"; in RELION: <code>{html.escape(display_command(model))}</code>"
        self._say(text, raw=True)
        return files

    def _say(self, text: str, error: bool = False, raw: bool = False) -> None:
        t = text if raw else html.escape(text)
        self.status.value = f"<span style='color:#b00'>{t}</span>" if error else t
