"""Events emitted by a running classification job.

Small frozen dataclasses that subscribers (CLI progress bar, notebook widgets, checkpoint writer,
logs) consume. Arrays inside events are NumPy arrays owned by the event (copies), safe to keep.
The engine never imports a widget library; widgets only read these.

Example
-------
>>> from cryoclass.events import PhaseStarted
>>> PhaseStarted(phase="oem", total_iterations=25).phase
'oem'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Event",
    "JobStarted",
    "PhaseStarted",
    "Progress",
    "IterationFinished",
    "ClassesReseeded",
    "OutputsWritten",
    "JobFinished",
    "JobCancelledEvent",
    "JobFailed",
    "PHASES",
]

#: Phases in the order a job goes through them.
PHASES = ("preprocess", "consensus", "init", "oem", "fem", "finish")


@dataclass(frozen=True)
class Event:
    """Base class; ``time_s`` is seconds since the job started."""

    time_s: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True)
class JobStarted(Event):
    n_particles: int
    n_classes: int
    box: int  #: extracted box (px)
    pixel_size_A: float
    box_c: int  #: classification box (px)
    pixel_size_c_A: float  #: classification pixel size (Å)
    params: Any  #: the ClassificationParams
    #: True when the CPU kernels are not yet compiled on this machine (Numba's on-disk cache
    #: has no entry for this CPU): this run compiles them first, up to 2 minutes, once
    #: (:func:`cryoclass.core.jit.uncompiled_kernels`).
    compiling_kernels: bool = False


@dataclass(frozen=True)
class PhaseStarted(Event):
    phase: str  #: one of PHASES
    total_iterations: int = 0  #: iterations planned in this phase (0 = unknown / not iterative)


@dataclass(frozen=True)
class Progress(Event):
    """Fine-grained progress inside a phase (e.g. particles processed in this pass)."""

    phase: str
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class IterationFinished(Event):
    """One O-EM or F-EM iteration (M-step done). Arrays are per class unless noted."""

    phase: str  #: 'oem' or 'fem'
    iteration: int  #: 0-based index within the phase
    global_iteration: int  #: 0-based over the whole job
    eta: float  #: learning rate used (1.0 in F-EM)
    beta: float  #: class similarity used
    class_mass: np.ndarray  #: (K,) effective size Σ_i r_ik over the whole data (estimate in O-EM)
    hard_counts: np.ndarray  #: (K,) argmax counts over the particles seen
    pct_switched: float  #: % of particles whose argmax class changed (F-EM; NaN in O-EM)
    rms_change: float  #: relative RMS change of the class volumes inside the solvent mask
    mean_ess: float  #: mean per-particle class ESS (1/Σ_k r_ik²)
    log_likelihood: float  #: mean per-particle log-likelihood (class-dependent part)
    fsc_res_A: np.ndarray  #: (K,) FSC=0.143 resolution of each class (Å; NaN when unknown)
    elapsed_s: float  #: wall time of this iteration
    eta_remaining_s: float  #: estimated time to finish (s; NaN when unknown)
    volumes: np.ndarray  #: (K, Dc, Dc, Dc) float32 real-space class volumes (classification box)
    consensus: np.ndarray | None = None  #: (Dc, Dc, Dc) float32
    ess: np.ndarray | None = None  #: (N,) per-particle ESS (F-EM: all particles)
    hard_class: np.ndarray | None = None  #: (N,) argmax class (F-EM: all particles)
    flow_matrix: np.ndarray | None = None  #: (K, K) counts prev→current (F-EM from the 2nd)
    fsc: np.ndarray | None = None  #: (K, n_shells) FSC curves
    fsc_freq_invA: np.ndarray | None = None  #: (n_shells,) shell frequencies (1/Å)


@dataclass(frozen=True)
class ClassesReseeded(Event):
    iteration: int  #: 0-based global iteration (O-EM and F-EM counted together)
    classes: tuple[int, ...]
    message: str


@dataclass(frozen=True)
class OutputsWritten(Event):
    outdir: str
    files: tuple[str, ...]
    final: bool


@dataclass(frozen=True)
class JobFinished(Event):
    result: Any  #: ClassificationResult
    converged: bool
    reason: str


@dataclass(frozen=True)
class JobCancelledEvent(Event):
    phase: str
    message: str = "cancelled"


@dataclass(frozen=True)
class JobFailed(Event):
    error: str
