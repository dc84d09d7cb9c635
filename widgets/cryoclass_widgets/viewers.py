"""3D viewer of the class volumes (nglview): isosurfaces per class in the class colours,
difference from consensus, mask previews; maps are swapped live as the job runs.

Maps are sent from memory as small MRC files (classification box, capped at ``max_display_box``
voxels a side and quantised to int8, so each update is a few hundred kB). A new map is always
added *before* the old one is removed, so the canvas is never blank (see the browser-test recipe).

Example
-------
>>> import numpy as np
>>> from cryoclass_widgets.viewers import VolumeViewer, mrc_bytes
>>> mrc_bytes(np.zeros((8, 8, 8), np.float32))[208:212]     # MRC magic word
b'MAP '
>>> v = VolumeViewer()
>>> v.set_data(volumes=np.random.rand(2, 16, 16, 16).astype(np.float32), pixel_size_A=4.0)
>>> v.n_components
2
"""

from __future__ import annotations

import io
import threading
from typing import Any

import ipywidgets as W
import numpy as np

from .figures import class_colors

__all__ = ["VolumeViewer", "mrc_bytes", "display_volume", "match_shape"]

_MASK_COLOURS = {"solvent": "#1f77b4", "focus": "#ff7f0e"}


def mrc_bytes(
    vol: np.ndarray, voxel_size_A: float = 1.0, origin_A: tuple[float, float] = (0.0, 0.0)
) -> bytes:
    """An MRC file's bytes for a ``[z, y, x]`` volume, written by ``mrcfile`` into memory;
    ``origin_A`` = (x, y) moves it in the header's origin, which NGL applies (maps side by
    side)."""
    from mrcfile.mrcinterpreter import MrcInterpreter

    bio = io.BytesIO()
    m = MrcInterpreter()
    m._iostream = bio  # mrcfile's documented way to write to a stream: an interpreter on it
    m._create_default_attributes()
    m.set_data(np.ascontiguousarray(vol))
    m.voxel_size = voxel_size_A
    m.header.origin.x, m.header.origin.y = origin_A
    m.flush()
    return bio.getvalue()


def display_volume(vol: np.ndarray, max_box: int = 48) -> tuple[np.ndarray, float]:
    """Downsample (Fourier crop) to at most ``max_box`` and quantise to int8.

    Returns ``(int8 volume, scale)`` where ``value = int8 * scale``; sigma-based isolevels are
    unaffected by the quantisation.
    """
    from cryoclass.conventions import resample_volume

    v = np.asarray(vol, dtype=np.float32)
    if v.shape[0] > max_box:
        v = resample_volume(v, max_box - max_box % 2)
    s = float(np.abs(v).max()) / 127.0 or 1.0
    return np.clip(np.round(v / s), -127, 127).astype(np.int8), s


def match_shape(vol: np.ndarray, D: int) -> np.ndarray:
    """Nearest-neighbour resample of a ``[z, y, x]`` cube to ``(D, D, D)``, keeping the centre
    voxel ``n // 2`` at ``D // 2`` (masks at the extraction box shown over classification maps)."""
    n = vol.shape[0]
    if n == D:
        return vol
    idx = np.clip(np.round((np.arange(D) - D // 2) * n / D + n // 2).astype(int), 0, n - 1)
    return vol[np.ix_(idx, idx, idx)]


class VolumeViewer:
    """nglview widget plus controls: which map (the classes side by side, in rows / all
    classes overlaid / one class / consensus / mask preview), map or difference-from-consensus,
    and the isolevel (in σ of each map).

    Call :meth:`set_data` with new arrays (from the dashboard's updater thread); the controls'
    callbacks are routed through ``dispatch`` (set by the dashboard) so that only one thread talks
    to the widget at a time.
    """

    def __init__(
        self,
        *,
        max_display_box: int = 48,
        max_overlay: int = 8,
        width: str = "500px",
        height: str = "420px",
    ) -> None:
        import nglview

        self.max_display_box, self.max_overlay = max_display_box, max_overlay
        self.view = nglview.NGLWidget()
        self.view.layout = W.Layout(width=width, height=height)
        # the canvas takes its size from NGL, not from the widget layout: without this it is
        # as wide as the notebook and the maps sit outside the visible box
        self.view._set_size(width, height)
        self.view.add_class("cc-ngl")
        self.show = W.Dropdown(
            options=[("side by side", "row"), ("all classes overlaid", "all")],
            value="row",
            description="show",
            layout=W.Layout(width="230px"),
        )
        self.mode = W.ToggleButtons(
            options=[("map", "map"), ("difference", "diff")],
            value="map",
            style={"button_width": "90px"},
            tooltip="map, or the class minus the consensus (green +, red −)",
        )
        self.isolevel = W.FloatSlider(
            value=1.5,
            min=0.3,
            max=6.0,
            step=0.1,
            description="isolevel (σ)",
            continuous_update=False,
            layout=W.Layout(width="360px"),
        )
        self.info = W.HTML()
        self.info.add_class("cc-viewer-info")
        self.dispatch = lambda fn: fn()
        self._lock = threading.RLock()
        self._comps: list[tuple[Any, str, int]] = []  # (component, isolevel type, n surfaces)
        self._labels: Any = None  # the side-by-side view's "class k" texts (a shape component)
        self._data: dict[str, Any] = dict(
            volumes=None, consensus=None, solvent_mask=None, focus_mask=None, pixel_size_A=1.0
        )
        self.n_swaps = 0
        self.show.observe(lambda _c: self.dispatch(self.refresh), names="value")
        self.mode.observe(lambda _c: self.dispatch(self.refresh), names="value")
        self.isolevel.observe(lambda _c: self.dispatch(self._apply_isolevel), names="value")
        self.widget = W.VBox(
            [
                W.HTML("<h3 style='margin:4px 0'>Volumes</h3>"),
                W.HBox([self.show, self.mode]),
                self.isolevel,
                self.view,
                self.info,
            ]
        )
        self.widget.layout = W.Layout(width="520px", min_width="520px")
        self.widget.add_class("cc-viewer")

    @property
    def n_components(self) -> int:
        """Number of maps currently shown."""
        return len(self._comps)

    # ------------------------------------------------------------------ data in
    def set_data(
        self,
        *,
        volumes: np.ndarray | None = None,
        consensus: np.ndarray | None = None,
        solvent_mask: np.ndarray | None = None,
        focus_mask: np.ndarray | None = None,
        pixel_size_A: float | None = None,
        refresh: bool = True,
    ) -> None:
        """Store new maps (None keeps the previous one) and redraw what is shown."""
        with self._lock:
            for k, v in dict(
                volumes=volumes,
                consensus=consensus,
                solvent_mask=solvent_mask,
                focus_mask=focus_mask,
                pixel_size_A=pixel_size_A,
            ).items():
                if v is not None:
                    self._data[k] = v
            if volumes is not None:
                self._update_options(volumes.shape[0])
            if refresh:
                self.refresh()

    def preview_mask(self, kind: str, mask: np.ndarray | None = None) -> None:
        """Show the ``'solvent'`` or ``'focus'`` mask over the consensus (when known)."""
        with self._lock:
            if mask is not None:
                self._data[f"{kind}_mask"] = mask
            self._update_options(self._n_classes())
            if (kind, f"{kind} mask") in [(v, k) for k, v in self.show.options]:
                if self.show.value == kind:
                    self.refresh()
                else:
                    self.show.value = kind  # triggers refresh

    def _n_classes(self) -> int:
        v = self._data["volumes"]
        return 0 if v is None else int(v.shape[0])

    def _update_options(self, K: int) -> None:
        opts = [("side by side", "row"), ("all classes overlaid", "all")]
        opts += [(f"class {k}", str(k)) for k in range(K)]
        if self._data["consensus"] is not None:
            opts.append(("consensus", "consensus"))
        for kind in ("solvent", "focus"):
            if self._data[f"{kind}_mask"] is not None:
                opts.append((f"{kind} mask", kind))
        if opts != list(self.show.options):
            value = self.show.value if self.show.value in [v for _, v in opts] else "row"
            with self.show.hold_trait_notifications():
                self.show.options = opts
                self.show.value = value

    # ------------------------------------------------------------------ drawing
    def _items(self) -> list[tuple[np.ndarray, list[dict[str, Any]], str]]:
        """What to draw: ``(volume, [surface params], isolevel type)`` per component; in the
        side-by-side view :meth:`refresh` places each class's components in a grid
        (:meth:`_grid_origin`)."""
        d, lvl = self._data, float(self.isolevel.value)
        vols, cons = d["volumes"], d["consensus"]
        show, diff = self.show.value, self.mode.value == "diff"
        items: list[tuple[np.ndarray, list[dict[str, Any]], str]] = []

        def sigma_surf(color: str, opacity: float = 1.0, negate: bool = False) -> dict[str, Any]:
            return dict(
                isolevelType="sigma",
                isolevel=lvl,
                color=color,
                opacity=opacity,
                negateIsolevel=negate,
                smooth=1,
            )

        if show in ("solvent", "focus"):
            if cons is not None:
                items.append((cons, [sigma_surf("#aaaaaa")], "sigma"))
            m = d[f"{show}_mask"]
            if cons is not None:
                m = match_shape(m, cons.shape[0])
            items.append(
                (
                    m,
                    [
                        dict(
                            isolevelType="value",
                            isolevel=0.5,
                            color=_MASK_COLOURS[show],
                            opacity=0.35,
                            smooth=1,
                        )
                    ],
                    "value",
                )
            )
            return items
        if show == "consensus" and cons is not None:
            return [(cons, [sigma_surf("#aaaaaa")], "sigma")]
        if vols is None:
            return items
        K = vols.shape[0]
        colors = class_colors(K)
        many = show in ("all", "row")
        classes = list(range(min(K, self.max_overlay))) if many else [int(show)]
        if diff and cons is not None:
            fm = d["focus_mask"]
            for k in classes:
                dv = vols[k] - cons
                if fm is not None:
                    dv = dv * match_shape(fm, cons.shape[0])
                if show == "all":  # overlaid: each class's gain, in its colour
                    items.append((dv, [sigma_surf(colors[k])], "sigma"))
                    continue
                # one class, or each beside the others: the consensus faintly, + green, − red
                items.append((cons, [sigma_surf("#bbbbbb", 0.2)], "sigma"))
                surfs = [sigma_surf("#2ca02c"), sigma_surf("#d62728", negate=True)]
                items.append((dv, surfs, "sigma"))
            return items
        opacity = 0.5 if show == "all" and len(classes) > 1 else 1.0
        return [(vols[k], [sigma_surf(colors[k], opacity)], "sigma") for k in classes]

    def refresh(self) -> None:
        """Redraw: add the new components first, then remove the old ones."""
        with self._lock:
            items = self._items()
            apix = float(self._data["pixel_size_A"])
            row = self.show.value == "row"
            # components per class in the row: 1 (map) or 2 (consensus + difference)
            per_class = max(1, len(items) // max(1, min(self._n_classes(), self.max_overlay)))
            new = []
            for i, (vol, surfaces, kind) in enumerate(items):
                q, scale = display_volume(vol, self.max_display_box)
                vox = apix * vol.shape[0] / q.shape[0]
                step_A = 1.1 * q.shape[0] * vox  # side by side: a box and a tenth apart
                origin = self._grid_origin(i // per_class, step_A) if row else (0.0, 0.0)
                # NGL's default representation of a map is a surface, and loading a map with it
                # makes the stage frame the scene (without it the camera shows nothing): load
                # with it, restyle it as our first surface, then add the others.
                comp = self.view.add_component(io.BytesIO(mrc_bytes(q, vox, origin)), ext="mrc")
                for j, surf in enumerate(surfaces):
                    surf = dict(surf)
                    if surf["isolevelType"] == "value":
                        surf["isolevel"] = surf["isolevel"] / scale
                    if j == 0:
                        self.view.update_representation(component=comp._index, repr_index=0, **surf)
                    else:
                        comp.add_surface(**surf)
                new.append((comp, kind, len(surfaces)))
            K = self._n_classes()
            shown = min(K, self.max_overlay)
            labels = self._add_labels(shown, step_A) if row and items and shown else None
            for comp, _, _ in self._comps:
                self.view.remove_component(comp)
            if self._labels is not None:
                self.view.remove_component(self._labels)
            self._comps, self._labels = new, labels
            self.n_swaps += 1
            what = dict(
                all=f"all {shown} classes overlaid" if K else "waiting for the first class volumes",
                row=f"classes 0–{shown - 1} side by side, left to right"
                + (", top to bottom" if shown > self._grid_columns(shown) else "")
                if K
                else "waiting for the first class volumes",
                consensus="consensus",
                solvent="solvent mask over the consensus",
                focus="focus mask over the consensus",
            ).get(self.show.value, f"class {self.show.value}")
            if self.mode.value == "diff" and self.show.value not in (
                "consensus",
                "solvent",
                "focus",
            ):
                what += " − consensus (green +, red −)"
            self.info.value = f"<span style='font-size:11px;color:#555'>{what}</span>"

    def _add_labels(self, shown: int, step_A: float) -> Any:
        """One shape component with "class k" under each map of the side-by-side view, in the
        class colours (NGL text faces the camera and is anchored at its left end)."""
        colors = class_colors(self._n_classes())
        box_A = step_A / 1.1
        size = 0.3 * box_A  # "class k" is about 1.4 sizes wide
        texts = []
        for k in range(shown):
            x, y = self._grid_origin(k, step_A)
            rgb = [int(colors[k][i : i + 2], 16) / 255 for i in (1, 3, 5)]
            # −x is to the right on screen: the text starts (on its left, as seen) half its
            # width left of the map's centre x + box_A / 2, just below the map
            start = x + box_A / 2 + 0.7 * size
            texts.append(("text", [start, y, box_A / 2], rgb, size, f"class {k}"))
        return self.view._add_shape(texts, name="class labels")

    @staticmethod
    def _grid_columns(n: int) -> int:
        """Maps per row side by side: all of up to 4 in one row, then a near-square grid."""
        return n if n <= 4 else int(np.ceil(np.sqrt(n)))

    def _grid_origin(self, k: int, step_A: float) -> tuple[float, float]:
        """Where class k goes side by side, ``step_A`` apart: left to right, then the next row
        below. NGL's default camera looks along +z with +y up, so −x is to the right."""
        cols = self._grid_columns(min(self._n_classes(), self.max_overlay))
        return -step_A * (k % cols), -step_A * (k // cols)

    def _apply_isolevel(self) -> None:
        with self._lock:
            for comp, kind, n_surfaces in self._comps:
                if kind == "sigma":
                    for j in range(n_surfaces):  # index looked up now: it shifts on removals
                        self.view.update_representation(
                            component=comp._index, repr_index=j, isolevel=float(self.isolevel.value)
                        )
