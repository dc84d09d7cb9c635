"""The classification dashboard: setup form, Run/Stop with progress, live plots, 3D viewer and
class table in one widget.

The job runs in a background thread (``job.start()``), so the notebook stays responsive. The job's
events go through an :class:`~cryoclass_widgets._events.EventPump` to a single updater thread,
which redraws only what changed.

Example
-------
>>> from cryoclass_widgets import Dashboard
>>> from cryoclass_widgets.demo import DemoParticles, demo_job_factory
>>> dash = Dashboard(DemoParticles(300, box=32), job_factory=demo_job_factory(delay_s=0.0))
>>> dash.setup.fields["n_classes"].value = 3
>>> dash.start()
True
>>> dash.wait(30)
True
>>> dash.state.status, dash.results.rows[2]["size"].value != ""
('finished', True)

In a notebook, ``Dashboard(particles)`` or ``Dashboard.from_files("particles.star")`` as the last
line of a cell shows it.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from cryoclass.errors import ParameterError
from cryoclass.params import ClassificationParams

from ._events import EventPump
from .live_plots import LivePlots
from .results_panel import ResultsPanel
from .setup_panel import SetupPanel, read_mask
from .state import PHASE_NAMES, RunState
from .viewers import VolumeViewer

__all__ = ["Dashboard"]

JobFactory = Callable[..., Any]


def _default_job_factory(particles: Any, params: ClassificationParams, **inputs: Any) -> Any:
    from cryoclass import Classification

    return Classification(particles, params, **inputs)


class Dashboard:
    """Set up, run, watch and export a 3D classification from a notebook.

    Parameters
    ----------
    particles : Particles, optional
        Particle set (from :func:`cryoclass.read_particles` or the simulator); or give a path in
        the form / use :meth:`from_files`.
    params : ClassificationParams, optional
        Initial form values.
    solvent_mask, focus_mask : str, path or ndarray, optional
        Masks (file path or array); default auto solvent mask and no focus mask.
    init_volumes : ndarray, optional
        ``(K, D, D, D)`` initial volumes for ``init_mode='input'``.
    outdir : str, optional
        Passed to the job (outputs written there) and used as the export folder.
    particles_path, passthrough : str
        Pre-filled path boxes.
    job_factory : callable, optional
        ``job_factory(particles, params, solvent_mask=, focus_mask=, init_volumes=, outdir=)``
        returning a job (default :class:`cryoclass.Classification`).
    loader : callable, optional
        ``loader(path, passthrough)`` for the path box (default :func:`cryoclass.read_particles`).
    suggest_dir : path or None
        The path boxes suggest the particle files found under it (default: the working
        directory); None: no suggestions.
    """

    def __init__(
        self,
        particles: Any = None,
        *,
        params: ClassificationParams | None = None,
        solvent_mask: Any = None,
        focus_mask: Any = None,
        init_volumes: Any = None,
        outdir: str | Path | None = None,
        particles_path: str = "",
        passthrough: str = "",
        job_factory: JobFactory | None = None,
        loader: Callable[[str, str | None], Any] | None = None,
        suggest_dir: str | Path | None = ".",
    ) -> None:
        self.job_factory = job_factory or _default_job_factory
        self.init_volumes, self.outdir = init_volumes, outdir
        self.job: Any = None
        self.job_thread: threading.Thread | None = None
        self.pump: EventPump | None = None
        self.state = RunState()
        self.errors: list[str] = []
        self._stop_requested = False
        self.setup = SetupPanel(
            particles,
            particles_path=particles_path,
            passthrough=passthrough,
            solvent_mask=solvent_mask,
            focus_mask=focus_mask,
            params=params,
            loader=loader,
            suggest_dir=suggest_dir,
        )
        self.plots = LivePlots()
        self.viewer = VolumeViewer()
        self.results = ResultsPanel()
        if outdir is not None:
            self.results.outdir.value = str(outdir)
        self.viewer.dispatch = self._dispatch
        self.setup.on_preview = self.preview_mask
        self.run_button = W.Button(
            description="Run", icon="play", button_style="success", layout=W.Layout(width="100px")
        )
        self.run_button.add_class("cc-run")
        self.stop_button = W.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            layout=W.Layout(width="100px"),
        )
        self.stop_button.add_class("cc-stop")
        self.run_button.on_click(lambda _b: self.start())
        self.stop_button.on_click(lambda _b: self.stop())
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="300px"))
        self.progress.add_class("cc-progress")
        self.status = W.HTML("Ready.")
        self.status.add_class("cc-status")
        self.log = W.HTML()
        self.log.add_class("cc-log")
        run_row = W.HBox(
            [self.run_button, self.stop_button, self.progress, self.status],
            layout=W.Layout(align_items="center", grid_gap="8px"),
        )
        self.widget = W.VBox(
            [
                W.HTML(
                    "<h2 style='margin:4px 0'>cryoclass — 3D classification without alignment</h2>"
                ),
                self.setup.widget,
                run_row,
                self.log,
                self.plots.widget,
                W.HBox([self.viewer.widget, self.results.widget], layout=W.Layout(grid_gap="16px")),
            ]
        )
        self.widget.add_class("cc-dashboard")

    @classmethod
    def from_files(
        cls,
        path: str | Path,
        passthrough: str | Path | None = None,
        solvent_mask: str | Path | np.ndarray | None = None,
        focus_mask: str | Path | np.ndarray | None = None,
        **kwargs: Any,
    ) -> Dashboard:
        """A dashboard for the particles in ``path`` (``.star`` or ``.cs`` + ``passthrough``).

        A file that cannot be read is reported in the form (beside the path), not raised.
        """
        dash = cls(
            None,
            particles_path=str(path),
            passthrough=str(passthrough or ""),
            solvent_mask=solvent_mask,
            focus_mask=focus_mask,
            **kwargs,
        )
        dash.setup.load_particles()
        return dash

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ run / stop
    @property
    def running(self) -> bool:
        """True while the job's thread is alive."""
        return self.job_thread is not None and self.job_thread.is_alive()

    def _next_outdir(self) -> Path | None:
        """``outdir`` itself for the first run; a fresh ``outdir_2``, ``outdir_3`` … when it
        already holds a classification (a second Run never overwrites the first one's files)."""
        if self.outdir is None:
            return None
        base = Path(self.outdir)
        candidate, n = base, 1
        while (candidate / "params.yaml").exists() or (candidate / "checkpoint").exists():
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")
        return candidate

    def start(self) -> bool:
        """Validate the form and start the job in a background thread (the Run button).

        Returns False (with the reason shown in the panel) when it cannot start.
        """
        if self.running:
            return False
        params = self.setup.validate()
        if params is None:
            return self._say("Fix the parameters marked in red.", error=True)
        particles = self.setup.particles
        if particles is None and self.setup.path_text.value.strip():
            particles = self.setup.load_particles()
        if particles is None:
            return self._say("Load particles first.", error=True)
        masks = self.setup.get_masks()
        if masks is None:
            return self._say("A mask file could not be read.", error=True)
        try:
            job = self.job_factory(
                particles,
                params,
                solvent_mask=masks[0],
                focus_mask=masks[1],
                init_volumes=self.init_volumes,
                outdir=self._next_outdir(),
            )
        except ParameterError as e:
            if e.name in self.setup.errors:
                self.setup.errors[e.name].value = html.escape(e.problem)
            return self._say(str(e), error=True)
        except Exception as e:  # noqa: BLE001 - e.g. the engine is not installed
            return self._say(f"Could not create the job: {type(e).__name__}: {e}", error=True)
        if getattr(job, "outdir", None) is not None and str(job.outdir) != str(self.outdir):
            self._say(f"{self.outdir} already holds a run; this one writes to {job.outdir}")
        self.job, self._stop_requested = job, False
        self.job_thread = None  # the updater must not see the previous run's (dead) thread
        self.state = RunState()
        self.errors = []
        self.plots.reset()
        self.results.reset()
        self.log.value = ""
        self.pump = EventPump(
            self.state,
            self._render,
            on_error=self._on_error,
            job_alive=lambda: self.job_thread is None or self.job_thread.is_alive(),
        )
        job.subscribe(self.pump.put)
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.setup.set_enabled(False)
        self.progress.value, self.progress.bar_style = 0.0, ""
        self._say("Starting…")
        self.pump.start()
        try:
            self.job_thread = job.start()
        except Exception as e:  # noqa: BLE001
            self.pump.stop()
            self._finish_ui()
            return self._say(f"Could not start the job: {type(e).__name__}: {e}", error=True)
        return True

    def stop(self) -> None:
        """Cancel the running job (the Stop button). Safe to call any number of times."""
        if self.job is None or self._stop_requested or not self.running:
            return
        self._stop_requested = True
        self.stop_button.disabled = True
        self._say("Stopping…")
        try:
            self.job.cancel()
        except Exception as e:  # noqa: BLE001
            self._on_error(f"cancel failed: {e}")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job and the updater thread have finished; True if they did."""
        if self.job_thread is not None:
            self.job_thread.join(timeout)
        if self.pump is not None:
            self.pump.join(timeout)
        return not self.running and not (self.pump is not None and self.pump.running)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the job, wait for the threads and close the widgets."""
        self.stop()
        self.wait(timeout)
        if self.pump is not None:
            self.pump.stop(timeout)
        self.widget.close()

    def replay(self, events: Any, *, reset: bool = True) -> None:
        """Show recorded events (e.g. saved from a finished job) without running anything.

        Events are folded and rendered synchronously in the calling thread; ``reset=False``
        continues the current replay (feed a stream in steps).
        """
        if self.running:
            raise RuntimeError("a job is running; stop it before replaying events")
        if reset or self.pump is None or self.pump.running:
            self.state = RunState()
            self.errors = []
            self.plots.reset()
            self.results.reset()
            self.pump = EventPump(self.state, self._render, on_error=self._on_error)
        for e in events:
            self.pump.put(e)
        self.pump.drain()

    # ------------------------------------------------------------------ updater thread
    def _dispatch(self, fn: Callable[[], None]) -> None:
        if self.pump is not None:
            self.pump.call(fn)
        else:
            fn()

    def _render(self, state: RunState, parts: set[str]) -> None:
        """Redraw what changed (called only from the updater thread or ``pump.drain``)."""
        self.progress.value = state.fraction_done()
        self.status.value = html.escape(state.progress_text())
        if state.phase in PHASE_NAMES:
            self.status.value += (
                f" <span style='color:#888'>(phase "
                f"{list(PHASE_NAMES).index(state.phase) + 1}/6)</span>"
                if not state.finished
                else ""
            )
        self.plots.update(state, parts)
        self.results.update(state, parts)
        if "volumes" in parts and state.volumes is not None:
            self.viewer.set_data(
                volumes=state.volumes,
                consensus=state.consensus,
                pixel_size_A=state.pixel_size_c_A or None,
            )
        if "result" in parts and state.result is not None:
            r = state.result
            self.viewer.set_data(
                solvent_mask=getattr(r, "solvent_mask", None),
                focus_mask=getattr(r, "focus_mask", None),
                refresh=False,
            )
        if "log" in parts:
            self._show_log()
        if "status" in parts and state.finished:
            self.progress.bar_style = {
                "finished": "success",
                "cancelled": "warning",
                "failed": "danger",
            }[state.status]
            self._finish_ui()

    def _finish_ui(self) -> None:
        self.run_button.disabled, self.stop_button.disabled = False, True
        self.setup.set_enabled(True)

    def _on_error(self, text: str) -> None:
        self.errors.append(text)
        self._show_log()

    def _show_log(self) -> None:
        lines = [html.escape(s) for s in self.state.log[-6:]]
        lines += [
            f"<span style='color:#b00'>{html.escape(e.strip().splitlines()[-1])}</span>"
            for e in self.errors[-3:]
        ]
        self.log.value = (
            "<div style='font-size:11px;color:#444;font-family:monospace'>"
            + "<br>".join(lines)
            + "</div>"
        )

    def _say(self, text: str, error: bool = False) -> bool:
        self.status.value = (
            f"<span style='color:#b00'>{html.escape(text)}</span>" if error else html.escape(text)
        )
        return False

    # ------------------------------------------------------------------ masks
    def preview_mask(self, kind: str) -> None:
        """Show the solvent/focus mask of the form over the consensus in the viewer."""
        mode = (self.setup.solvent_mode if kind == "solvent" else self.setup.focus_mode).value
        err = self.setup.errors[f"{kind}_mask"]
        err.value = ""
        mask = None
        if mode == "file":
            path = (self.setup.solvent_path if kind == "solvent" else self.setup.focus_path).value
            try:
                mask = read_mask(path.strip())
            except ValueError as e:
                err.value = html.escape(str(e))
                return
        elif mode == "given":
            mask = self.setup._given_masks[kind]
        elif self.state.result is not None:
            mask = getattr(self.state.result, f"{kind}_mask", None)
        if mask is None:
            err.value = (
                "the auto mask is computed by the job: preview after a run"
                if mode == "auto"
                else "no mask (all ones)"
            )
            return
        self._dispatch(lambda: self.viewer.preview_mask(kind, np.asarray(mask, np.float32)))
