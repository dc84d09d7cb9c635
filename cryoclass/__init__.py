"""cryoclass — cryo-EM 3D classification without alignment.

Particles whose poses and CTF are known are sorted into K 3D classes by expectation maximisation
over class volumes (CryoSPARC "3D Classification", RELION ``--skip_align``).

Example
-------
>>> import cryoclass
>>> ds = cryoclass.sim.simulate(n_particles=200, box=48, seed=0)      # doctest: +SKIP
>>> job = cryoclass.Classification(ds.particles, cryoclass.ClassificationParams(
...     n_classes=3, filter_res_A=8.0))                                   # doctest: +SKIP
>>> result = job.run()                                                    # doctest: +SKIP

Public names are imported lazily so that ``import cryoclass`` is fast and never pulls in the
notebook stack (the engine never imports a widget library).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise). GNU OpenMP's
# default (Numba's "omp" threading layer) keeps a worker spinning for a while after every
# parallel kernel; on a small machine that takes the core SciPy's FFT threads — and a
# notebook's other threads — need next. N = 5 000 job on 2 cores, 5 interleaved CLI runs each:
# wall 3.70 -> 3.43 s (median), CPU 6.13 -> 5.19 s; the M-step FFTs 0.73 -> 0.49 s in total.
# OpenMP reads it when its runtime loads (Numba's first parallel kernel), so it is set here,
# before any kernel runs; a runtime another library already loaded keeps its own setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# public name -> module that defines it
_LAZY = {
    "CryoclassError": "cryoclass.errors",
    "InputFileError": "cryoclass.errors",
    "ParameterError": "cryoclass.errors",
    "JobCancelled": "cryoclass.errors",
    "Particles": "cryoclass.io.particles",
    "read_particles": "cryoclass.io.particles",
    "write_star": "cryoclass.io.star",
    "write_cs": "cryoclass.io.cryosparc",
    "read_mrc": "cryoclass.io.mrc",
    "write_mrc": "cryoclass.io.mrc",
    "ClassificationParams": "cryoclass.params",
    "Classification": "cryoclass.engine.job",
    "ClassificationResult": "cryoclass.engine.result",
    "classify": "cryoclass.engine.job",
}
_SUBMODULES = {
    "sim",
    "followup",
    "demo",
    "distributed",
    "cli",
    "conventions",
    "core",
    "io",
    "engine",
    "events",
    "params",
    "backend",
    "errors",
}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"cryoclass.{name}")
    raise AttributeError(f"module 'cryoclass' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
