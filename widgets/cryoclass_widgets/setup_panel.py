"""Setup panel: particles, masks, filter resolution and every job parameter, validated live.

The form is generated from :func:`cryoclass.params.param_info` (same names, defaults and help as
the API and the CLI). Values are checked by constructing :class:`cryoclass.ClassificationParams`;
a :class:`cryoclass.errors.ParameterError` is shown beside the field it names, never as a traceback.

Example
-------
>>> from cryoclass_widgets.setup_panel import SetupPanel
>>> from cryoclass_widgets.demo import DemoParticles
>>> panel = SetupPanel(DemoParticles(600, box=48, pixel_size_A=2.0))
>>> panel.fields["filter_res_A"].value = 8.0
>>> panel.box_label.value
'Classification box <b>24 px</b> at <b>4 Å</b>/px (from 48 px at 2 Å/px)'
>>> panel.fields["n_classes"].value = 0
>>> panel.get_params() is None, panel.errors["n_classes"].value
(True, 'must be ≥ 1, got 0')
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from cryoclass import backend
from cryoclass.conventions import classification_box
from cryoclass.errors import CryoclassError, ParameterError
from cryoclass.params import GUIDANCE_FILTER_RES, ClassificationParams, param_info, read_params_file

__all__ = ["SetupPanel", "particle_geometry", "read_mask"]

_LABEL_STYLE = {"description_width": "250px"}
_FIELD_LAYOUT = W.Layout(width="420px")
_SYMMETRIES = [
    "C1",
    "C2",
    "C3",
    "C4",
    "C5",
    "C6",
    "C7",
    "D2",
    "D3",
    "D4",
    "D5",
    "D6",
    "D7",
    "T",
    "O",
    "I",
]


def particle_geometry(particles: Any) -> tuple[int, int, float]:
    """``(n_particles, box_px, pixel_size_A)`` of a particle set (duck-typed).

    Accepts the attributes ``box`` / ``box_size`` / ``image_size`` and ``pixel_size_A`` /
    ``apix`` / ``psize_A``.
    """
    n = len(particles)
    box = next(
        (
            getattr(particles, a)
            for a in ("box", "box_size", "image_size", "D")
            if getattr(particles, a, None) is not None
        ),
        None,
    )
    apix = next(
        (
            getattr(particles, a)
            for a in ("pixel_size_A", "apix", "psize_A")
            if getattr(particles, a, None) is not None
        ),
        None,
    )
    if box is None or apix is None:
        raise TypeError(f"{type(particles).__name__} has no box / pixel_size_A attributes")
    return int(n), int(box), float(apix)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask volume from an MRC file (float32, ``[z, y, x]``); ``ValueError`` naming the file."""
    import mrcfile

    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        with mrcfile.open(p, permissive=True) as m:
            data = np.asarray(m.data, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - any reader problem becomes one clear line
        raise ValueError(f"{p}: not a readable MRC file ({e})") from None
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise ValueError(f"{p}: a mask must be a cubic 3D volume, got shape {data.shape}")
    return data


def _error_html() -> W.HTML:
    e = W.HTML("", layout=W.Layout(margin="0 0 0 8px"))
    e.add_class("cc-field-error")
    return e


def _details_html(particles: Any) -> str:
    """A collapsed *details* block with ``cryoclass info``'s summary of a particle set (optics,
    defocus, half-sets, view coverage, classification boxes); empty for objects without
    metadata (e.g. the demo's stand-in particles)."""
    if getattr(particles, "meta", None) is None or not hasattr(particles, "rotations"):
        return ""
    from cryoclass.io.summary import format_summary, particle_summary

    try:
        lines = format_summary(particle_summary(particles)).splitlines()[1:]
    except Exception:  # a summary is a nicety: never let it break loading
        return ""
    body = html.escape("\n".join(line[2:] if line.startswith("  ") else line for line in lines))
    return (
        "<details class='cc-particles-details' style='margin-left:254px'>"
        "<summary style='cursor:pointer;color:#555'>details</summary>"
        f"<pre style='font-size:11px;margin:2px 0'>{body}</pre></details>"
    )


def _joined(base: str, names: list[str]) -> tuple[str, ...]:
    return tuple(os.path.normpath(os.path.join(base, n)) for n in names)


def _make_field(info: dict[str, Any]) -> W.ValueWidget:
    name, t, default = info["name"], info["type"], info["default"]
    kw: dict[str, Any] = dict(
        description=info.get("label", name),
        value=default,
        style=_LABEL_STYLE,
        layout=_FIELD_LAYOUT,
        tooltip=f"{name}: {info.get('help', '')}",  # the Python/CLI name, then what it does
    )
    if info.get("choices"):
        w: W.ValueWidget = W.Dropdown(options=list(info["choices"]), **kw)
    elif t == "bool":  # the label sits right of the box: room for the longest one
        w = W.Checkbox(indent=True, **dict(kw, layout=W.Layout(width="560px")))
    elif t == "int":
        w = W.IntText(**kw)
    elif t == "float":
        w = W.FloatText(**kw)
    else:
        w = W.Text(**kw)
    w.add_class(f"cc-field-{name}")
    return w


class SetupPanel:
    """The job form. ``widget`` is the panel; ``fields[name]`` the input of each parameter and
    ``errors[name]`` the message beside it.

    Parameters
    ----------
    particles : Particles, optional
        The particle set (anything with ``len()``, ``box``, ``pixel_size_A``).
    particles_path, passthrough : str
        Shown in the path boxes; loaded with ``loader`` when the user presses *Load*.
    solvent_mask, focus_mask : str, path or ndarray, optional
        A file path (mode *file*) or an array (mode *given*); default auto / none.
    params : ClassificationParams, optional
        Initial values (default: the defaults, with filter resolution 8 Å).
    loader : callable, optional
        ``loader(path, passthrough) -> Particles`` (default :func:`cryoclass.read_particles`).
    suggest_dir : path or None
        The path boxes suggest the particle and passthrough files found under this directory
        (default: the kernel's working directory; :func:`cryoclass.io.discover.find_particle_files`,
        searched in a background thread); None: no suggestions.
    """

    def __init__(
        self,
        particles: Any = None,
        *,
        particles_path: str = "",
        passthrough: str = "",
        solvent_mask: Any = None,
        focus_mask: Any = None,
        params: ClassificationParams | None = None,
        loader: Callable[[str, str | None], Any] | None = None,
        suggest_dir: str | os.PathLike | None = ".",
    ) -> None:
        self.particles = particles
        self._loader = loader
        self.on_particles_changed: list[Callable[[Any], None]] = []
        self.on_preview: Callable[[str], None] | None = None
        self.fields: dict[str, W.ValueWidget] = {}
        self.errors: dict[str, W.HTML] = {}
        defaults = params.to_dict() if params is not None else {}
        infos = {
            i["name"]: dict(i, default=defaults.get(i["name"], i["default"])) for i in param_info()
        }
        if params is None:
            infos["filter_res_A"]["default"] = 8.0
        self._infos = infos
        for name, info in infos.items():
            self.fields[name] = _make_field(info)
            self.errors[name] = _error_html()
        self._build_particles(particles_path, passthrough)
        self._build_masks(solvent_mask, focus_mask)
        self._build_params_file()
        self._build_filter_res()
        self._build_symmetry()
        common = ["n_classes", "filter_res_A", "symmetry", "init_mode", "seed", "device"]
        rows = [self._row(n) for n in common if n != "filter_res_A"]
        rows.insert(1, self._filter_box)
        groups: dict[str, list[W.HBox]] = {}
        for n, i in infos.items():
            if i.get("section") != "common":
                groups.setdefault(i.get("group", "Other"), []).append(self._row(n))
        #: the advanced parameters, one collapsed panel per stage of the job (params.PARAM_GROUPS)
        self.advanced = W.Accordion(
            children=[W.VBox(rows_) for rows_ in groups.values()],
            titles=tuple(groups),
            selected_index=None,
        )
        self.advanced.add_class("cc-advanced")
        self.widget = W.VBox(
            [
                W.HTML("<h3 style='margin:4px 0'>Setup</h3>"),
                self._particles_box,
                self._masks_box,
                self._params_file_box,
                *rows,
                W.HTML("<b>Advanced parameters</b>", layout=W.Layout(margin="8px 0 0 0")),
                self.advanced,
            ]
        )
        self.widget.add_class("cc-setup")
        for w in self.fields.values():
            w.observe(lambda _c: self.validate(), names="value")
        self._update_particles_info()
        self.validate()
        self.suggest_thread: threading.Thread | None = None
        if suggest_dir is not None:
            self.suggest_files(suggest_dir)

    def suggest_files(self, root: str | os.PathLike = ".") -> threading.Thread:
        """Fill the path boxes' suggestions with the particle / passthrough files under ``root``
        (relative paths, as the kernel resolves them from ``root`` = its working directory), in a
        background thread that is returned."""
        from cryoclass.io.discover import find_particle_files

        def scan() -> None:
            try:
                found = find_particle_files(root)
                base = os.path.relpath(root)
            except (OSError, ValueError):  # gone, or another drive: no suggestions
                return
            self.path_text.options = _joined(base, found["particles"])
            self.passthrough_text.options = _joined(base, found["passthrough"])

        self.suggest_thread = threading.Thread(target=scan, name="cryoclass-suggest", daemon=True)
        self.suggest_thread.start()
        return self.suggest_thread

    # ------------------------------------------------------------------ layout pieces
    def _row(self, name: str) -> W.HBox:
        return W.HBox([self.fields[name], self.errors[name]])

    def _build_particles(self, path: str, passthrough: str) -> None:
        # text boxes that also suggest the project's particle files (suggest_files)
        self.path_text = W.Combobox(
            value=str(path or ""),
            description="particles",
            placeholder="particles.star or particles.cs (type or pick)",
            ensure_option=False,
            style=_LABEL_STYLE,
            layout=W.Layout(width="560px"),
            tooltip="Particle file (.star or CryoSPARC .cs) with poses and CTF",
        )
        self.path_text.add_class("cc-particles-path")
        self.passthrough_text = W.Combobox(
            value=str(passthrough or ""),
            description="passthrough",
            placeholder="(.cs only) passthrough .cs",
            ensure_option=False,
            style=_LABEL_STYLE,
            layout=W.Layout(width="560px"),
        )
        self.load_button = W.Button(
            description="Load", icon="folder-open", layout=W.Layout(width="90px")
        )
        self.load_button.on_click(lambda _b: self.load_particles())
        self.particles_info = W.HTML()
        self.particles_info.add_class("cc-particles-info")
        self.errors["particles"] = _error_html()
        self._particles_box = W.VBox(
            [
                W.HBox([self.path_text, self.load_button, self.errors["particles"]]),
                self.passthrough_text,
                self.particles_info,
            ]
        )

    def _build_params_file(self) -> None:
        self.params_path_text = W.Text(
            value="",
            description="parameters from",
            placeholder="(optional) a run's params.yaml",
            style=_LABEL_STYLE,
            layout=W.Layout(width="560px"),
            tooltip="Fill the form from a classification's params.yaml (or a YAML mapping of "
            "parameter names to values); the particles and masks are not changed",
        )
        self.params_load_button = W.Button(
            description="Load", icon="folder-open", layout=W.Layout(width="90px")
        )
        self.params_load_button.add_class("cc-params-load")
        self.params_load_button.on_click(lambda _b: self.load_params_file())
        self.errors["params_file"] = _error_html()
        self._params_file_box = W.HBox(
            [self.params_path_text, self.params_load_button, self.errors["params_file"]]
        )

    def set_values(self, values: dict[str, Any]) -> None:
        """Set form fields by parameter name (then validated, problems shown beside them). A
        value a field cannot hold (text for a number, an unknown choice) leaves that field as it
        was, with the reason beside it."""
        refused = {}
        for name, value in values.items():
            if name in self.fields:
                try:
                    self.fields[name].value = value
                except Exception as e:  # noqa: BLE001 - a traitlets TraitError, or a bad cast
                    refused[name] = f"not set: {value!r} ({type(e).__name__})"
        self.validate()
        for name, why in refused.items():
            self.errors[name].value = html.escape(why)

    def load_params_file(self, path: str | None = None) -> bool:
        """Fill the form from a parameter file (the path box's, or ``path``); False with the
        reason beside the box when it cannot be read (the form is then left as it was)."""
        path = (path or self.params_path_text.value).strip()
        self.errors["params_file"].value = ""
        if not path:
            self.errors["params_file"].value = "enter the path of a params.yaml"
            return False
        try:
            values = read_params_file(path)
        except CryoclassError as e:
            self.errors["params_file"].value = html.escape(str(e))
            return False
        self.set_values(values)
        self.errors["params_file"].value = html.escape(
            f"{len(values)} parameters from {Path(path).name}"
        )
        return True

    def _mask_row(self, kind: str, value: Any, options: list[str]) -> tuple[W.Dropdown, W.Text]:
        mode_default = options[0]
        path = ""
        if isinstance(value, (str, Path)):
            mode_default, path = "file", str(value)
        elif value is not None:
            options = ["given", *options]
            mode_default = "given"
        mode = W.Dropdown(
            options=options,
            value=mode_default,
            description=f"{kind} mask",
            style=_LABEL_STYLE,
            layout=W.Layout(width="380px"),
            tooltip="auto: dilated, soft-edged consensus; none: all ones; "
            "file: an MRC at the particles' box and pixel size",
        )
        text = W.Text(
            value=path,
            placeholder=f"{kind}_mask.mrc",
            layout=W.Layout(width="260px", display="" if mode_default == "file" else "none"),
        )
        mode.observe(
            lambda c: setattr(text.layout, "display", "" if c["new"] == "file" else "none"),
            names="value",
        )
        mode.add_class(f"cc-field-{kind}_mask")
        return mode, text

    def _build_masks(self, solvent_mask: Any, focus_mask: Any) -> None:
        self._given_masks = {"solvent": solvent_mask, "focus": focus_mask}
        self.solvent_mode, self.solvent_path = self._mask_row(
            "solvent", solvent_mask, ["auto", "none", "file"]
        )
        self.focus_mode, self.focus_path = self._mask_row("focus", focus_mask, ["none", "file"])
        rows = []
        for kind, mode, text in (
            ("solvent", self.solvent_mode, self.solvent_path),
            ("focus", self.focus_mode, self.focus_path),
        ):
            self.errors[f"{kind}_mask"] = _error_html()
            btn = W.Button(
                description="Preview",
                icon="eye",
                layout=W.Layout(width="90px"),
                tooltip=f"Show the {kind} mask over the consensus in the viewer",
            )
            btn.on_click(lambda _b, k=kind: self.on_preview and self.on_preview(k))
            rows.append(W.HBox([mode, text, btn, self.errors[f"{kind}_mask"]]))
        self._masks_box = W.VBox(rows)

    def _build_filter_res(self) -> None:
        box_field = self.fields["filter_res_A"]
        box_field.layout = W.Layout(width="330px")
        self.filter_slider = W.FloatSlider(
            value=box_field.value,
            min=2.0,
            max=40.0,
            step=0.5,
            readout=False,
            layout=W.Layout(width="260px"),
            tooltip=self._infos["filter_res_A"]["help"],
        )
        self.filter_slider.add_class("cc-filter-slider")
        W.link((self.filter_slider, "value"), (box_field, "value"))
        self.box_label = W.HTML()
        self.box_label.add_class("cc-box-label")
        guidance = W.HTML(
            f"<div style='font-size:11px;color:#555;max-width:760px;"
            f"margin-left:254px'>{html.escape(GUIDANCE_FILTER_RES)}</div>"
        )
        box_field.observe(lambda _c: self._update_box_label(), names="value")
        self._filter_box = W.VBox(
            [
                W.HBox([box_field, self.filter_slider, self.errors["filter_res_A"]]),
                W.HBox([W.HTML("", layout=W.Layout(width="254px")), self.box_label]),
                guidance,
            ]
        )

    def _build_symmetry(self) -> None:
        old = self.fields["symmetry"]
        sym = W.Combobox(
            value=old.value,
            options=_SYMMETRIES,
            ensure_option=False,
            description=old.description,
            style=_LABEL_STYLE,
            layout=_FIELD_LAYOUT,
            tooltip=old.tooltip,
        )
        sym.add_class("cc-field-symmetry")
        self.fields["symmetry"] = sym

    # ------------------------------------------------------------------ particles
    def load_particles(self) -> Any:
        """Read the particle file named in the path box; errors go beside the box."""
        path, pt = self.path_text.value.strip(), self.passthrough_text.value.strip() or None
        self.errors["particles"].value = ""
        if not path:
            self.errors["particles"].value = "enter a .star or .cs path"
            return None
        try:
            loader = self._loader
            if loader is None:
                from cryoclass import read_particles

                def loader(p: str, q: str | None) -> Any:
                    return read_particles(p, passthrough=q) if q else read_particles(p)

            particles = loader(path, pt)
        except Exception as e:  # noqa: BLE001 - shown to the user beside the field
            self.errors["particles"].value = html.escape(str(e) or type(e).__name__)
            return None
        self.set_particles(particles)
        return particles

    def set_particles(self, particles: Any) -> None:
        """Use this particle set (updates the box / pixel-size line and validation)."""
        self.particles = particles
        self._update_particles_info()
        self.validate()
        for cb in self.on_particles_changed:
            cb(particles)

    def geometry(self) -> tuple[int, int, float] | None:
        """``(n, box, pixel_size_A)`` of the current particles, or None."""
        if self.particles is None:
            return None
        try:
            return particle_geometry(self.particles)
        except (TypeError, AttributeError):
            return None

    def _update_particles_info(self) -> None:
        g = self.geometry()
        if g is None:
            self.particles_info.value = (
                "<span style='color:#888;margin-left:254px'>No particles loaded.</span>"
            )
        else:
            n, box, apix = g
            self.particles_info.value = (
                f"<span style='margin-left:254px'>{n} particles, box "
                f"{box} px, pixel size {apix:g} Å</span>" + _details_html(self.particles)
            )
            self.filter_slider.min = round(2 * apix, 2)
            self.filter_slider.max = max(round(box * apix / 2, 1), self.filter_slider.min + 1)
        self._update_box_label()

    def _update_box_label(self) -> None:
        g = self.geometry()
        res = self.fields["filter_res_A"].value
        if g is None:
            self.box_label.value = (
                "<span style='color:#888'>Load particles to see the classification box.</span>"
            )
            return
        _, box, apix = g
        try:
            dc, apix_c = classification_box(box, apix, float(res))
        except ParameterError as e:
            self.box_label.value = f"<span style='color:#b00'>{html.escape(e.problem)}</span>"
            return
        self.box_label.value = (
            f"Classification box <b>{dc} px</b> at <b>{apix_c:.3g} Å</b>/px "
            f"(from {box} px at {apix:g} Å/px)"
        )

    # ------------------------------------------------------------------ masks
    def get_masks(self) -> tuple[Any, Any] | None:
        """``(solvent_mask, focus_mask)`` as the job takes them (None = auto / all ones), or
        None when a mask file cannot be read (message beside the field)."""
        out = []
        ok = True
        for kind, mode, text in (
            ("solvent", self.solvent_mode, self.solvent_path),
            ("focus", self.focus_mode, self.focus_path),
        ):
            err = self.errors[f"{kind}_mask"]
            err.value = ""
            m: Any = None
            if mode.value == "given":
                m = self._given_masks[kind]
            elif mode.value == "file":
                try:
                    m = read_mask(text.value.strip())
                except ValueError as e:
                    err.value, ok = html.escape(str(e)), False
            elif mode.value == "none" and kind == "solvent":
                g = self.geometry()
                m = np.ones((g[1],) * 3, np.float32) if g else None
            out.append(m)
        return (out[0], out[1]) if ok else None

    # ------------------------------------------------------------------ validation
    def values(self) -> dict[str, Any]:
        """Raw field values keyed by parameter name."""
        return {n: w.value for n, w in self.fields.items()}

    def validate(self) -> ClassificationParams | None:
        """Build the params; show each problem beside its field. Returns None when invalid."""
        for n in self._infos:
            self.errors[n].value = ""
        try:
            params = ClassificationParams(**self.values())
        except ParameterError as e:
            target = self.errors.get(e.name, self.errors["n_classes"])
            target.value = html.escape(e.problem if e.name in self.errors else str(e))
            return None
        except (TypeError, ValueError) as e:
            self.errors["n_classes"].value = html.escape(str(e))
            return None
        if params.device == "gpu" and not backend.cupy_available():
            self.errors["device"].value = html.escape(
                "no usable GPU here: needs an NVIDIA GPU and CuPy "
                "(pip install 'cryoclass[gpu]'); choose 'cpu'"
            )
            return None
        g = self.geometry()
        if g is not None:
            try:
                classification_box(g[1], g[2], params.filter_res_A)
            except ParameterError as e:
                self.errors["filter_res_A"].value = html.escape(e.problem)
                return None
        return params

    def get_params(self) -> ClassificationParams | None:
        """Alias of :meth:`validate` (the params to run with, or None)."""
        return self.validate()

    def set_enabled(self, enabled: bool) -> None:
        """Lock the form while a job runs."""
        for w in [
            *self.fields.values(),
            self.path_text,
            self.passthrough_text,
            self.load_button,
            self.params_path_text,
            self.params_load_button,
            self.solvent_mode,
            self.focus_mode,
            self.filter_slider,
        ]:
            w.disabled = not enabled
