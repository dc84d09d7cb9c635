"""Live diagnostic plots: one Plotly ``FigureWidget`` per diagnostic, redrawn from a
:class:`~cryoclass_widgets.state.RunState` by the single updater thread.

Each update builds a fresh figure with the pure builders of :mod:`cryoclass_widgets.figures` and
copies it into the widget inside ``fig.batch_update()``
(:func:`~cryoclass_widgets.figures.sync_figure`).
Plots export to HTML (``fig.write_html``) and PNG (needs ``kaleido``; the panel says so when it is
missing instead of failing).

Example
-------
>>> from cryoclass_widgets.live_plots import LivePlots
>>> plots = LivePlots()
>>> sorted(plots.figs)[:3]
['assignments', 'convergence', 'diff_slices']
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

import ipywidgets as W
import plotly.graph_objects as go

from . import figures as F
from .state import RunState

__all__ = ["LivePlots", "PLOTS", "kaleido_available"]

#: Plot name → (title, note shown until there is data, parts of the state it depends on).
PLOTS: dict[str, tuple[str, str, frozenset[str]]] = {
    # in grid order, two per row: first what every run shows from its first iteration, then
    # the class flow (only from the 2nd F-EM iteration), then FSC and difference slices
    "assignments": (
        "Class assignments",
        "Appears after the first iteration.",
        frozenset({"iterations"}),
    ),
    "ess": ("Per-particle class ESS", "Appears in F-EM.", frozenset({"ess"})),
    "sizes": (
        "Class sizes over iterations",
        "Appears after the first iteration.",
        frozenset({"iterations"}),
    ),
    "convergence": ("Convergence", "Appears after the first iteration.", frozenset({"iterations"})),
    "sankey": ("Class flow", "Appears from the 2nd F-EM iteration.", frozenset({"flow"})),
    "flow_matrix": (
        "Class flow matrix",
        "Appears from the 2nd F-EM iteration.",
        frozenset({"flow"}),
    ),
    "fsc": ("FSC per class", "Appears after the first iteration.", frozenset({"fsc"})),
    "diff_slices": (
        "Difference from consensus (central slices)",
        "Appears with the first class volumes.",
        frozenset({"volumes"}),
    ),
}


def kaleido_available() -> bool:
    """True when ``kaleido`` (Plotly's static image exporter) is importable."""
    return importlib.util.find_spec("kaleido") is not None


def build_figure(name: str, state: RunState) -> go.Figure:
    """The figure ``name`` (a key of :data:`PLOTS`) for the current state (pure)."""
    title, note, _ = PLOTS[name]
    rec = state.latest()
    p = state.params
    if name in ("sankey", "flow_matrix"):
        if state.flow_matrix is None:
            n_fem = sum(r["phase"] == "fem" for r in state.records)
            if state.status == "finished" and n_fem <= 1:
                note = (
                    "Converged after one F-EM iteration: no class flow between F-EM iterations."
                    if n_fem
                    else "No F-EM iteration ran: no class flow to show."
                )
            return F.placeholder_figure(title, note)
        it = state.flow_iteration
        if name == "sankey":
            return F.sankey_figure(state.flow_matrix, iteration=it)
        return F.flow_matrix_figure(state.flow_matrix, iteration=it)
    if name == "ess":
        if state.ess is None:
            return F.placeholder_figure(title, note)
        return F.ess_histogram_figure(state.ess, max(state.n_classes, 1))
    if name == "fsc":
        if state.fsc is None or state.fsc_freq_invA is None:
            return F.placeholder_figure(title, note)
        return F.fsc_figure(
            state.fsc_freq_invA, state.fsc, fsc_res_A=rec["fsc_res_A"] if rec else None
        )
    if name == "diff_slices":
        if state.volumes is None or state.consensus is None:
            return F.placeholder_figure(title, note)
        return F.difference_slices_figure(state.volumes, state.consensus)
    if rec is None:
        return F.placeholder_figure(title, note)
    x = state.series("global_iteration")
    if name == "assignments":
        return F.class_histogram_figure(rec["hard_counts"], rec["class_mass"])
    if name == "sizes":
        return F.class_sizes_figure(
            x, state.series("class_mass"), phases=[r["phase"] for r in state.records]
        )
    if name == "convergence":
        rms_thr = (
            getattr(p, "rms_change_threshold", None)
            if getattr(p, "rms_change_check", False)
            else None
        )
        return F.convergence_figure(
            x,
            state.series("pct_switched"),
            state.series("rms_change"),
            convergence_pct=getattr(p, "convergence_pct", None),
            rms_threshold=rms_thr,
        )
    raise KeyError(name)


class LivePlots:
    """All diagnostic ``FigureWidget``\\ s in a grid, plus an export row."""

    def __init__(self) -> None:
        self.figs: dict[str, go.FigureWidget] = {}
        self._last: dict[str, go.Figure] = {}
        empty = RunState()
        for name in PLOTS:
            fig = go.FigureWidget(build_figure(name, empty))
            self.figs[name] = fig
            self._last[name] = fig
        self.export_which = W.Dropdown(
            options=[("all plots", "all")] + [(PLOTS[n][0], n) for n in PLOTS],
            description="export",
            layout=W.Layout(width="330px"),
        )
        self.export_dir = W.Text(
            value="cryoclass_plots", description="to folder", layout=W.Layout(width="300px")
        )
        self.html_button = W.Button(description="Save HTML", icon="save")
        self.png_button = W.Button(description="Save PNG", icon="image")
        self.export_status = W.HTML()
        self.export_status.add_class("cc-export-status")
        if not kaleido_available():
            self.png_button.disabled = True
            self.png_button.tooltip = "PNG export needs kaleido: pip install kaleido"
            self.export_status.value = (
                "<span style='color:#888'>PNG export needs "
                "<code>kaleido</code> (pip install kaleido); "
                "HTML export works.</span>"
            )
        self.html_button.on_click(lambda _b: self._export_clicked("html"))
        self.png_button.on_click(lambda _b: self._export_clicked("png"))
        boxes = []
        for name, fig in self.figs.items():
            box = W.Box([fig])
            box.add_class(f"cc-plot-{name}")
            boxes.append(box)
        grid = W.GridBox(
            boxes, layout=W.Layout(grid_template_columns="repeat(2, 480px)", grid_gap="6px")
        )
        self.widget = W.VBox(
            [
                W.HTML("<h3 style='margin:4px 0'>Live diagnostics</h3>"),
                grid,
                W.HBox([self.export_which, self.export_dir, self.html_button, self.png_button]),
                self.export_status,
            ]
        )
        self.widget.add_class("cc-live-plots")

    def update(self, state: RunState, parts: set[str]) -> list[str]:
        """Redraw the plots that depend on ``parts``; returns their names."""
        names = [n for n, (_, _, deps) in PLOTS.items() if deps & parts]
        for name in names:
            new = build_figure(name, state)
            self._last[name] = new
            fig = self.figs[name]
            with fig.batch_update():
                F.sync_figure(fig, new)
        return names

    def reset(self) -> None:
        """Back to the placeholders (a new run)."""
        self.update(RunState(), {p for _, _, deps in PLOTS.values() for p in deps})

    # ------------------------------------------------------------------ export
    def export(
        self, which: str = "all", fmt: str = "html", outdir: str | Path = "cryoclass_plots"
    ) -> list[Path]:
        """Write plot(s) to ``outdir`` as ``<name>.html`` or ``<name>.png``.

        Raises
        ------
        RuntimeError
            For PNG when ``kaleido`` is not installed.
        """
        if fmt == "png" and not kaleido_available():
            raise RuntimeError("PNG export needs kaleido (pip install kaleido)")
        out = Path(outdir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for name in list(self.figs) if which == "all" else [which]:
            fig = go.Figure(self.figs[name])
            path = out / f"{name}.{fmt}"
            if fmt == "html":
                fig.write_html(path, include_plotlyjs="cdn")
            else:
                fig.write_image(path)
            files.append(path)
        return files

    def _export_clicked(self, fmt: str) -> None:
        try:
            files = self.export(self.export_which.value, fmt, self.export_dir.value)
        except Exception as e:  # noqa: BLE001 - reported in the panel
            self.export_status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        self.export_status.value = (
            f"Saved {len(files)} file(s) to <code>{html.escape(str(files[0].parent))}</code>"
        )
