"""The dashboard's model of a run: events in, plain data out (no widgets, no threads).

:class:`RunState` folds the job's event stream (:mod:`cryoclass.events`) into what the dashboard
shows: status, phase and progress, the per-iteration records, and the latest arrays (volumes,
ESS, flow matrix, FSC). :meth:`RunState.apply` returns the set of *parts* that changed, so the
renderer redraws only those.

Example
-------
>>> from cryoclass.events import PhaseStarted
>>> s = RunState()
>>> sorted(s.apply(PhaseStarted(phase="oem", total_iterations=25)))
['progress']
>>> s.phase, s.phase_total
('oem', 25)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoclass import events as ev

__all__ = ["RunState", "format_eta", "PHASE_NAMES", "TERMINAL_EVENTS"]

#: How phases are named in the progress line.
PHASE_NAMES = {
    "preprocess": "Preprocessing",
    "consensus": "Consensus",
    "init": "Initial classes",
    "oem": "O-EM",
    "fem": "F-EM",
    "finish": "Writing outputs",
}

#: Events after which a job emits nothing more.
TERMINAL_EVENTS = (ev.JobFinished, ev.JobCancelledEvent, ev.JobFailed)


def format_eta(seconds: float | None) -> str:
    """``83.2`` → ``'1:23'``; ``None``/NaN → ``'—'``; hours as ``'h:mm:ss'``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class RunState:
    """Everything the dashboard knows about the current run, updated by :meth:`apply`.

    Parts returned by :meth:`apply`: ``'status'``, ``'progress'``, ``'iterations'`` (records,
    sizes, convergence, class table), ``'volumes'``, ``'ess'``, ``'flow'``, ``'fsc'``,
    ``'result'``, ``'log'``.
    """

    status: str = "idle"  #: idle | running | finished | cancelled | failed
    n_particles: int = 0
    n_classes: int = 0
    box: int = 0
    pixel_size_A: float = 0.0
    box_c: int = 0
    pixel_size_c_A: float = 0.0
    params: Any = None
    phase: str = ""
    phase_total: int = 0
    phase_iteration: int = -1  #: last finished iteration in the phase (0-based)
    progress_done: int = 0
    progress_total: int = 0
    progress_message: str = ""
    #: the run compiles the CPU kernels first (first run on this machine), until its first
    #: iteration finishes
    compiling_kernels: bool = False
    eta_remaining_s: float = float("nan")
    time_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)
    volumes: np.ndarray | None = None
    consensus: np.ndarray | None = None
    ess: np.ndarray | None = None
    hard_class: np.ndarray | None = None
    flow_matrix: np.ndarray | None = None
    flow_iteration: int | None = None
    fsc: np.ndarray | None = None
    fsc_freq_invA: np.ndarray | None = None
    result: Any = None
    converged: bool | None = None
    reason: str = ""
    error: str = ""
    log: list[str] = field(default_factory=list)
    n_events: int = 0

    # ------------------------------------------------------------------ folding events
    def apply(self, event: ev.Event) -> set[str]:
        """Fold one event into the state; return the parts that changed."""
        self.n_events += 1
        self.time_s = max(self.time_s, float(getattr(event, "time_s", 0.0)))
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is None:
            return set()
        return handler(event)

    def _on_JobStarted(self, e: ev.JobStarted) -> set[str]:
        self.status = "running"
        self.n_particles, self.n_classes = int(e.n_particles), int(e.n_classes)
        self.box, self.pixel_size_A = int(e.box), float(e.pixel_size_A)
        self.box_c, self.pixel_size_c_A = int(e.box_c), float(e.pixel_size_c_A)
        self.params = e.params
        self.log.append(
            f"Started: {self.n_particles} particles, K = {self.n_classes}, box {self.box} px "
            f"({self.pixel_size_A:.3g} Å) → {self.box_c} px ({self.pixel_size_c_A:.3g} Å)"
        )
        self.compiling_kernels = bool(getattr(e, "compiling_kernels", False))
        if self.compiling_kernels:
            from cryoclass.core.jit import COMPILE_NOTE

            self.log.append(COMPILE_NOTE[:1].upper() + COMPILE_NOTE[1:] + ".")
        return {"status", "progress", "log"}

    def _on_PhaseStarted(self, e: ev.PhaseStarted) -> set[str]:
        self.phase, self.phase_total = e.phase, int(e.total_iterations)
        self.phase_iteration = -1
        self.progress_done, self.progress_total, self.progress_message = 0, 0, ""
        return {"progress"}

    def _on_Progress(self, e: ev.Progress) -> set[str]:
        self.phase = e.phase
        self.progress_done, self.progress_total = int(e.done), int(e.total)
        self.progress_message = e.message
        return {"progress"}

    def _on_IterationFinished(self, e: ev.IterationFinished) -> set[str]:
        changed = {"progress", "iterations"}
        self.phase = e.phase
        self.compiling_kernels = False
        self.phase_iteration = int(e.iteration)
        self.eta_remaining_s = float(e.eta_remaining_s)
        self.progress_done, self.progress_total = 0, 0
        self.records.append(
            dict(
                phase=e.phase,
                iteration=int(e.iteration),
                global_iteration=int(e.global_iteration),
                eta=float(e.eta),
                beta=float(e.beta),
                class_mass=np.asarray(e.class_mass, dtype=float),
                hard_counts=np.asarray(e.hard_counts, dtype=float),
                pct_switched=float(e.pct_switched),
                rms_change=float(e.rms_change),
                mean_ess=float(e.mean_ess),
                log_likelihood=float(e.log_likelihood),
                fsc_res_A=np.asarray(e.fsc_res_A, dtype=float),
                elapsed_s=float(e.elapsed_s),
            )
        )
        if self.n_classes == 0:
            self.n_classes = len(e.class_mass)
        if e.volumes is not None:
            self.volumes = e.volumes
            changed.add("volumes")
        if e.consensus is not None:
            self.consensus = e.consensus
            changed.add("volumes")
        if e.ess is not None:
            self.ess = e.ess
            changed.add("ess")
        if e.hard_class is not None:
            self.hard_class = e.hard_class
        if e.flow_matrix is not None:
            self.flow_matrix = e.flow_matrix
            self.flow_iteration = int(e.iteration)
            changed.add("flow")
        if e.fsc is not None:
            self.fsc, self.fsc_freq_invA = e.fsc, e.fsc_freq_invA
            changed.add("fsc")
        return changed

    def _on_ClassesReseeded(self, e: ev.ClassesReseeded) -> set[str]:
        self.log.append(
            f"Iteration {e.iteration + 1}: re-seeded classes {list(e.classes)} ({e.message})"
        )
        return {"log"}

    def _on_OutputsWritten(self, e: ev.OutputsWritten) -> set[str]:
        self.log.append(
            f"Wrote {len(e.files)} files to {e.outdir}" + (" (final)" if e.final else "")
        )
        return {"log"}

    def _on_JobFinished(self, e: ev.JobFinished) -> set[str]:
        self.status, self.result = "finished", e.result
        self.converged, self.reason = bool(e.converged), e.reason
        self.log.append(f"Finished: {e.reason}")
        # "flow": the flow plots say why they stayed empty (one F-EM iteration only)
        return {"status", "progress", "result", "log", "flow"}

    def _on_JobCancelledEvent(self, e: ev.JobCancelledEvent) -> set[str]:
        self.status = "cancelled"
        self.log.append(f"Stopped during {PHASE_NAMES.get(e.phase, e.phase)}: {e.message}")
        return {"status", "progress", "log"}

    def _on_JobFailed(self, e: ev.JobFailed) -> set[str]:
        self.status, self.error = "failed", e.error
        self.log.append(f"Failed: {e.error}")
        return {"status", "progress", "log"}

    # ------------------------------------------------------------------ derived data
    @property
    def finished(self) -> bool:
        """True once the job emitted a terminal event (finished, cancelled or failed)."""
        return self.status in ("finished", "cancelled", "failed")

    def series(self, key: str) -> np.ndarray:
        """One per-iteration quantity over all iterations: ``(T,)`` or ``(T, K)``."""
        if not self.records:
            return np.zeros((0, self.n_classes)) if key in _PER_CLASS else np.zeros(0)
        return np.array([r[key] for r in self.records])

    def latest(self) -> dict[str, Any] | None:
        """The last iteration record, or ``None`` before the first iteration."""
        return self.records[-1] if self.records else None

    def fraction_done(self) -> float:
        """Progress inside the current phase in [0, 1]."""
        if self.status == "finished":
            return 1.0
        if self.progress_total > 0:
            base = max(self.phase_iteration + 1, 0)
            tot = max(self.phase_total, 1)
            return min((base + self.progress_done / self.progress_total) / tot, 1.0)
        if self.phase_total > 0:
            return min((self.phase_iteration + 1) / self.phase_total, 1.0)
        return 0.0

    def progress_text(self) -> str:
        """One line: status, phase, iteration and ETA."""
        if self.status == "idle":
            return "Ready."
        if self.status == "finished":
            return f"Finished in {format_eta(self.time_s)} — {self.reason}"
        if self.status == "cancelled":
            return "Stopped."
        if self.status == "failed":
            return f"Failed: {self.error}"
        name = PHASE_NAMES.get(self.phase, self.phase or "Starting")
        parts = [name]
        if self.phase in ("oem", "fem"):
            it = self.phase_iteration + 1
            parts.append(
                f"iteration {it}/{self.phase_total}" if self.phase_total else f"iteration {it}"
            )
        if self.progress_total:
            parts.append(
                f"{self.progress_done}/{self.progress_total}"
                + (f" {self.progress_message}" if self.progress_message else "")
            )
        if self.compiling_kernels:
            parts.append("compiling the CPU kernels (first run on this machine, up to 2 minutes)")
        else:
            parts.append(f"ETA {format_eta(self.eta_remaining_s)}")
        return " · ".join(parts)


_PER_CLASS = {"class_mass", "hard_counts", "fsc_res_A"}
