"""Pure figure builders: diagnostic data (NumPy arrays) → ``plotly.graph_objects.Figure``.

Nothing here touches widgets, threads or the engine; every function takes plain arrays and returns a
new figure, so each one can be tested (and reused in scripts and reports) on its own. The live
dashboard copies these figures into its ``FigureWidget``\\ s with :func:`sync_figure`.

Example
-------
>>> import numpy as np
>>> from cryoclass_widgets.figures import class_histogram_figure
>>> fig = class_histogram_figure(np.array([10, 20]), np.array([12.5, 17.5]))
>>> [t.name for t in fig.data]
['hard count', 'effective size']
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "class_colors",
    "class_labels",
    "placeholder_figure",
    "sankey_figure",
    "flow_matrix_figure",
    "ess_histogram_figure",
    "class_histogram_figure",
    "class_sizes_figure",
    "fsc_figure",
    "convergence_figure",
    "difference_slices_figure",
    "central_slices",
    "sync_figure",
]

_BASE_LAYOUT: dict[str, Any] = dict(
    width=470,
    height=360,
    margin=dict(l=60, r=20, t=50, b=50),
    template="plotly_white",
    font=dict(size=11),
)


def class_colors(n_classes: int) -> list[str]:
    """One distinct ``#rrggbb`` colour per class (shared by plots and the 3D viewer).

    Plotly's 10-colour palette up to 10 classes, the 26-colour Alphabet palette up to 26, evenly
    spaced hues beyond.
    """
    if n_classes <= 10:
        return list(plotly.colors.qualitative.Plotly[:n_classes])
    if n_classes <= 26:
        return list(plotly.colors.qualitative.Alphabet[:n_classes])
    out = []
    for k in range(n_classes):
        r, g, b = colorsys.hls_to_rgb(k / n_classes, 0.5 - 0.12 * (k % 2), 0.75)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def class_labels(n_classes: int) -> list[str]:
    """Class names as users see them: 0-based like CryoSPARC's ``.cs`` (``class 0`` …)."""
    return [f"class {k}" for k in range(n_classes)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha:.3f})"


def _layout(title: str, **kw: Any) -> dict[str, Any]:
    lay = dict(_BASE_LAYOUT, title=dict(text=title, x=0.02), annotations=[], shapes=[])
    lay.update(kw)
    return lay


def placeholder_figure(title: str, message: str) -> go.Figure:
    """An empty figure with a centred note (e.g. "appears after the 2nd F-EM iteration")."""
    fig = go.Figure(layout=_layout(title))
    fig.update_layout(
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        annotations=[
            dict(
                text=message,
                x=0.5,
                y=0.5,
                xref="paper",
                yref="paper",
                showarrow=False,
                font=dict(size=13, color="#666"),
            )
        ],
    )
    return fig


# --------------------------------------------------------------------------- class flow
def sankey_figure(
    flow: np.ndarray, *, iteration: int | None = None, colors: Sequence[str] | None = None
) -> go.Figure:
    """Class flow diagram: hard-class moves between two consecutive F-EM iterations.

    Parameters
    ----------
    flow : (K, K) array
        ``flow[i, j]`` particles in class ``i`` at the previous iteration and ``j`` now.
    iteration : int, optional
        0-based F-EM iteration (as in the events, ``result.class_flow()`` and
        ``iterations.csv``); the title counts from 1, as the CLI and the status line do.
    colors : list of str, optional
        Class colours (default :func:`class_colors`).

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Sankey`` trace; left nodes = previous classes, right nodes = current classes.
        Links of particles that stayed are light grey, switches take the source class colour with
        an opacity that grows with the number of particles.
    """
    flow = np.asarray(flow, dtype=float)
    K = flow.shape[0]
    colors = list(colors) if colors is not None else class_colors(K)
    src, dst, val, col = [], [], [], []
    off_max = max(float((flow - np.diag(np.diag(flow))).max(initial=0.0)), 1.0)
    for i in range(K):
        for j in range(K):
            if flow[i, j] <= 0:
                continue
            src.append(i)
            dst.append(K + j)
            val.append(float(flow[i, j]))
            if i == j:
                col.append("rgba(200,200,200,0.35)")
            else:
                col.append(_rgba(colors[i], 0.25 + 0.65 * min(flow[i, j] / off_max, 1.0)))
    labels = [f"{k} (prev)" for k in range(K)] + [f"{k}" for k in range(K)]
    n_sw = int(flow.sum() - np.trace(flow))
    title = "Class flow" + (
        f" into F-EM iteration {iteration + 1}" if iteration is not None else ""
    )
    title += f" — {n_sw} switched"
    fig = go.Figure(
        go.Sankey(
            arrangement="fixed",
            node=dict(label=labels, color=colors + colors, pad=8, thickness=14),
            link=dict(source=src, target=dst, value=val, color=col),
        ),
        layout=_layout(title),
    )
    return fig


def flow_matrix_figure(
    flow: np.ndarray, *, iteration: int | None = None, normalize: bool = True
) -> go.Figure:
    """Class flow matrix: rows = previous class, columns = current class (``iteration``: as in
    :func:`sankey_figure`, 0-based, shown from 1).

    Each column is the distribution (fraction when ``normalize``) of where the particles now in
    that class came from; counts are in the hover text. Cell text is printed only up to 12 classes,
    so the matrix stays readable at 25+ classes.
    """
    flow = np.asarray(flow, dtype=float)
    K = flow.shape[0]
    col_sum = flow.sum(axis=0, keepdims=True)
    z = np.divide(flow, col_sum, out=np.zeros_like(flow), where=col_sum > 0) if normalize else flow
    text = [[f"{int(flow[i, j])}" for j in range(K)] for i in range(K)]
    heat = go.Heatmap(
        z=z,
        x=list(range(K)),
        y=list(range(K)),
        colorscale="Viridis",
        zmin=0,
        zmax=1 if normalize else None,
        text=text,
        texttemplate="%{text}" if K <= 12 else None,
        hovertemplate="prev %{y} → now %{x}<br>%{text} particles<br>fraction %{z:.3f}"
        "<extra></extra>",
        colorbar=dict(title="fraction" if normalize else "count", thickness=12),
    )
    fig = go.Figure(
        heat,
        layout=_layout(
            "Class flow matrix"
            + (f" (F-EM iteration {iteration + 1})" if iteration is not None else "")
        ),
    )
    tick = dict(tickmode="linear", dtick=1 if K <= 30 else 5)
    fig.update_layout(
        xaxis=dict(title="current class", **tick),
        yaxis=dict(title="previous class", autorange="reversed", scaleanchor="x", **tick),
    )
    return fig


# --------------------------------------------------------------------------- per-class sizes
def ess_histogram_figure(ess: np.ndarray, n_classes: int, *, bins: int = 40) -> go.Figure:
    """Per-particle class ESS histogram (ESS_i = 1 / Σ_k r_ik², 1 = confidently one class).

    The histogram is computed here (``np.histogram``) so only ``bins`` numbers are sent to the
    browser however many particles there are.
    """
    ess = np.asarray(ess, dtype=float)
    hi = max(float(n_classes), 1.0 + 1e-6)
    counts, edges = np.histogram(np.clip(ess, 1.0, hi), bins=bins, range=(1.0, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig = go.Figure(
        go.Bar(
            x=centres,
            y=counts,
            width=float(edges[1] - edges[0]),
            marker_color="#4c78a8",
            name="particles",
            hovertemplate="ESS %{x:.2f}: %{y}<extra></extra>",
        ),
        layout=_layout(
            f"Per-particle class ESS (mean {ess.mean():.2f})"
            if ess.size
            else "Per-particle class ESS"
        ),
    )
    fig.update_layout(
        xaxis=dict(title="class ESS", range=[1.0, hi]), yaxis=dict(title="particles"), bargap=0
    )
    return fig


def class_histogram_figure(hard_counts: np.ndarray, class_mass: np.ndarray) -> go.Figure:
    """Class assignment histogram: hard count (argmax) and effective size (Σ_i r_ik), side by
    side."""
    hard = np.asarray(hard_counts, dtype=float)
    mass = np.asarray(class_mass, dtype=float)
    x = list(range(hard.size))
    fig = go.Figure(
        [
            go.Bar(x=x, y=hard, name="hard count", marker_color="#4c78a8"),
            go.Bar(x=x, y=mass, name="effective size", marker_color="#f58518"),
        ],
        layout=_layout("Class assignments"),
    )
    fig.update_layout(
        barmode="group",
        xaxis=dict(title="class", tickmode="linear", dtick=1 if hard.size <= 30 else 5),
        yaxis=dict(title="particles"),
        legend=dict(orientation="h", y=1.08, x=0.5),
    )
    return fig


def class_sizes_figure(
    iterations: Sequence[int] | np.ndarray,
    class_mass: np.ndarray,
    *,
    phases: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
) -> go.Figure:
    """Class sizes over iterations as a stacked area (one band per class).

    Parameters
    ----------
    iterations : sequence of int, length T
        0-based global iteration numbers (``global_iteration``); the x axis counts from 1, as
        the CLI does.
    class_mass : (T, K) array
        Effective size of each class at each iteration.
    phases : sequence of str, optional
        Phase of each iteration ('oem'/'fem'); a dotted line marks the start of F-EM.
    """
    mass = np.atleast_2d(np.asarray(class_mass, dtype=float))
    K = mass.shape[1] if mass.size else 0
    colors = list(colors) if colors is not None else class_colors(K)
    x = [int(i) + 1 for i in iterations]  # shown from 1, as the CLI counts
    traces = [
        go.Scatter(
            x=x,
            y=mass[:, k],
            name=f"class {k}",
            stackgroup="one",
            mode="lines",
            line=dict(width=0.5, color=colors[k]),
            fillcolor=_rgba(colors[k], 0.6),
        )
        for k in range(K)
    ]
    fig = go.Figure(traces, layout=_layout("Class sizes over iterations"))
    shapes: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    if phases is not None and "fem" in phases:
        i0 = list(phases).index("fem")
        if i0 > 0:
            shapes.append(
                dict(
                    type="line",
                    x0=x[i0] - 0.5,
                    x1=x[i0] - 0.5,
                    y0=0,
                    y1=1,
                    xref="x",
                    yref="paper",
                    line=dict(dash="dot", color="#444"),
                )
            )
            # which side is which phase, just above the plot
            for text, anchor in (("O-EM ", "right"), (" F-EM", "left")):
                notes.append(
                    dict(
                        text=text,
                        x=x[i0] - 0.5,
                        y=1.0,
                        xref="x",
                        yref="paper",
                        xanchor=anchor,
                        yanchor="bottom",
                        showarrow=False,
                        font=dict(size=10, color="#444"),
                    )
                )
    fig.update_layout(
        xaxis=dict(title="iteration"),
        yaxis=dict(title="effective size"),
        shapes=shapes,
        annotations=notes,
        showlegend=K <= 12,
    )
    return fig


# ----------------------------------------------------------------- resolution and convergence
def fsc_figure(
    freq_invA: np.ndarray,
    fsc: np.ndarray,
    *,
    fsc_res_A: np.ndarray | None = None,
    colors: Sequence[str] | None = None,
) -> go.Figure:
    """Half-set FSC curve of every class against spatial frequency (1/Å), with the 0.143 line."""
    freq = np.asarray(freq_invA, dtype=float)
    fsc = np.atleast_2d(np.asarray(fsc, dtype=float))
    K = fsc.shape[0]
    colors = list(colors) if colors is not None else class_colors(K)
    res = np.divide(1.0, freq, out=np.full_like(freq, np.inf), where=freq > 0)
    traces = []
    for k in range(K):
        name = f"class {k}"
        if fsc_res_A is not None and np.isfinite(fsc_res_A[k]):
            name += f" ({fsc_res_A[k]:.1f} Å)"
        traces.append(
            go.Scatter(
                x=freq,
                y=fsc[k],
                name=name,
                mode="lines",
                line=dict(color=colors[k], width=1.5),
                customdata=res,
                hovertemplate="%{customdata:.1f} Å: %{y:.3f}<extra></extra>",
            )
        )
    fig = go.Figure(traces, layout=_layout("FSC per class"))
    fig.update_layout(
        xaxis=dict(title="spatial frequency (1/Å)"),
        yaxis=dict(title="FSC", range=[-0.05, 1.05]),
        shapes=[
            dict(
                type="line",
                x0=0,
                x1=1,
                xref="paper",
                y0=0.143,
                y1=0.143,
                line=dict(dash="dot", color="#888"),
            )
        ],
        showlegend=K <= 12,
    )
    return fig


def _log_ticks(values: Sequence[float]) -> dict[str, Any]:
    """Tick values and labels for a log axis over ``values``: 1–2–5 steps in each decade,
    labelled as plain numbers ("0.01", "0.02", "0.05"). Plotly's own labels on a log axis that
    spans less than a few decades are a lone major label ("0.1105069") among bare mantissa
    digits ("2", "5"). Empty when there is no positive finite value (Plotly's default then)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return {}
    lo, hi = float(v.min()), float(v.max())
    steps = (1.0, 2.0, 5.0) if hi / lo < 1e3 else (1.0,)
    ticks = [
        float(f"{m * 10.0**e:.12g}")
        for e in range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
        for m in steps
    ]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    if len(inside) < 2:  # a narrow range: the neighbours on both sides
        below = [t for t in ticks if t <= lo][-1:]
        above = [t for t in ticks if t >= hi][:1]
        inside = sorted(set(below + inside + above))
    return dict(tickvals=inside, ticktext=[f"{t:g}" for t in inside])


def convergence_figure(
    iterations: Sequence[int] | np.ndarray,
    pct_switched: Sequence[float] | np.ndarray,
    rms_change: Sequence[float] | np.ndarray,
    *,
    convergence_pct: float | None = None,
    rms_threshold: float | None = None,
) -> go.Figure:
    """Convergence: % of particles switching class (left axis) and relative RMS volume change
    (right axis, log scale), with the stopping thresholds as dotted lines."""
    x = [int(i) + 1 for i in iterations]  # shown from 1, as the CLI counts
    sw = np.asarray(pct_switched, dtype=float)
    rms = np.asarray(rms_change, dtype=float)
    fig = go.Figure(
        [
            go.Scatter(
                x=x, y=sw, name="% switched", mode="lines+markers", line=dict(color="#4c78a8")
            ),
            go.Scatter(
                x=x,
                y=rms,
                name="RMS change",
                mode="lines+markers",
                yaxis="y2",
                line=dict(color="#e45756"),
            ),
        ],
        layout=_layout("Convergence"),
    )
    shapes = []
    if convergence_pct is not None:
        shapes.append(
            dict(
                type="line",
                x0=0,
                x1=1,
                xref="paper",
                y0=convergence_pct,
                y1=convergence_pct,
                yref="y",
                line=dict(dash="dot", color="#4c78a8"),
            )
        )
    if rms_threshold is not None and rms_threshold > 0:
        shapes.append(
            dict(
                type="line",
                x0=0,
                x1=1,
                xref="paper",
                y0=rms_threshold,
                y1=rms_threshold,
                yref="y2",
                line=dict(dash="dot", color="#e45756"),
            )
        )
    fig.update_layout(
        xaxis=dict(title="iteration"),
        yaxis=dict(title="% switched", rangemode="tozero"),
        yaxis2=dict(
            title="RMS change",
            overlaying="y",
            side="right",
            type="log",
            showgrid=False,
            **_log_ticks([*rms, rms_threshold or np.nan]),
        ),
        shapes=shapes,
        legend=dict(orientation="h", y=1.08, x=0.5),
    )
    return fig


# --------------------------------------------------------------------------- difference maps
def central_slices(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central ``(xy, xz, yz)`` slices of a ``[z, y, x]`` volume (origin at ``D // 2``)."""
    c = vol.shape[0] // 2
    return vol[c], vol[:, c, :], vol[:, :, c]


def difference_slices_figure(
    volumes: np.ndarray,
    consensus: np.ndarray,
    *,
    focus_mask: np.ndarray | None = None,
    classes: Sequence[int] | None = None,
    max_classes: int = 12,
) -> go.Figure:
    """Difference-from-consensus central slices, (V_k − V_cons)·M_f, one row per class.

    Parameters
    ----------
    volumes : (K, D, D, D) array
    consensus : (D, D, D) array
    focus_mask : (D, D, D) array, optional
    classes : sequence of int, optional
        Classes to show (default the first ``max_classes``).

    The colour scale is symmetric around 0 and shared by all panels (blue = less density than
    the consensus, red = more).
    """
    vols = np.asarray(volumes, dtype=np.float32)
    cons = np.asarray(consensus, dtype=np.float32)
    K = vols.shape[0]
    classes = list(classes) if classes is not None else list(range(min(K, max_classes)))
    diff = vols[classes] - cons[None]
    if focus_mask is not None:
        diff = diff * np.asarray(focus_mask, dtype=np.float32)[None]
    vmax = float(np.abs(diff).max()) or 1.0
    titles = [f"class {k} {p}" for k in classes for p in ("xy", "xz", "yz")]
    fig = make_subplots(
        rows=len(classes),
        cols=3,
        subplot_titles=titles,
        horizontal_spacing=0.03,
        vertical_spacing=0.04 / max(len(classes), 1) * 3,
    )
    for r, d in enumerate(diff):
        for c, sl in enumerate(central_slices(d)):
            fig.add_trace(
                go.Heatmap(
                    z=sl,
                    zmin=-vmax,
                    zmax=vmax,
                    zmid=0,
                    colorscale="RdBu_r",
                    showscale=(r == 0 and c == 2),
                    colorbar=dict(thickness=10, len=0.5),
                    hovertemplate="%{z:.3g}<extra></extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, scaleanchor="x", constrain="domain")
    for i in range(1, 3 * len(classes) + 1):
        fig.update_yaxes(
            scaleanchor=f"x{i if i > 1 else ''}", row=(i - 1) // 3 + 1, col=(i - 1) % 3 + 1
        )
    fig.update_annotations(font_size=10)
    fig.update_layout(
        width=_BASE_LAYOUT["width"],
        height=90 + 150 * len(classes),
        margin=dict(l=10, r=10, t=60, b=10),
        template="plotly_white",
        title=dict(text="Difference from consensus (central slices)", x=0.02),
    )
    return fig


# --------------------------------------------------------------------------- widget sync
def sync_figure(target: go.Figure, new: go.Figure) -> None:
    """Make ``target`` (typically a ``FigureWidget``) show ``new``, with the fewest messages.

    Call it inside ``target.batch_update()``. When the trace types and the layout's top-level keys
    are unchanged, traces and layout are updated in place (the template is not re-sent, and
    ``annotations``/``shapes`` are always replaced so stale notes disappear); otherwise the traces
    and the whole layout are replaced.
    """
    new_types = [t.type for t in new.data]
    lay = new.layout.to_plotly_json()
    lay.pop("template", None)
    old_lay = target.layout.to_plotly_json()
    old_lay.pop("template", None)
    same = [t.type for t in target.data] == new_types and set(old_lay) <= set(lay) | {
        "annotations",
        "shapes",
    }
    if not same:
        target.data = []
        if new.data:
            target.add_traces(list(new.data))
        # a new layout object only sends its own keys: unset the old ones explicitly
        gone = _removed_paths(old_lay, lay)
        if gone:
            target.plotly_relayout(dict.fromkeys(gone))
        target.layout = new.layout
        return
    for old_t, new_t in zip(target.data, new.data):
        d = new_t.to_plotly_json()
        d.pop("type", None)
        old_t.update(d, overwrite=True)
    lay.setdefault("annotations", [])
    lay.setdefault("shapes", [])
    target.layout.update(lay, overwrite=True)


def _removed_paths(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted layout paths set in ``old`` but unset (or emptied) in ``new``."""
    out = []
    for k, v in old.items():
        path = f"{prefix}{k}"
        nv = new.get(k)
        if isinstance(v, dict) and isinstance(nv, dict):
            out += _removed_paths(v, nv, path + ".")
        elif nv is None or (isinstance(nv, (list, tuple)) and not nv and v):
            out.append(path)
    return out
