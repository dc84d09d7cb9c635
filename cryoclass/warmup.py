"""``cryoclass compile``: compile the CPU kernels now instead of in the first job.

Numba compiles cryoclass's kernels on their first call and keeps them in its on-disk cache
(:mod:`cryoclass.core.jit`), so the first classification on a machine spends up to 2 minutes
compiling. Before a workshop, or when building a Binder / Docker image, run this once: it
simulates a tiny dataset and classifies it (every kernel a job and the simulator use is
compiled and cached), and later jobs and tutorials start at once. The cache is specific to the
CPU: a machine of another kind compiles again (the first job says so).

Example
-------
>>> from cryoclass.warmup import compile_kernels       # doctest: +SKIP
>>> compile_kernels()                                  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .core.jit import EVERY_JOB_KERNELS, uncompiled_kernels

__all__ = ["compile_kernels"]


def compile_kernels(stream: Any = None) -> dict[str, Any]:
    """Compile (or load) every kernel a CPU job and the simulator use, by simulating 120
    particles (box 24) and classifying them into 2 classes in memory. Prints what it does to
    ``stream`` (default stderr). Returns ``{"compiled": [kernels that were missing],
    "seconds": wall time, "remaining": [kernels still missing — empty unless the cache could
    not be written]}``."""
    import cryoclass
    from cryoclass import sim

    out = stream or sys.stderr
    missing = uncompiled_kernels()
    if missing:
        print(
            f"compiling the CPU kernels for this machine ({len(missing)} of "
            f"{len(EVERY_JOB_KERNELS)} not in Numba's cache; this takes up to 2 minutes) …",
            file=out,
            flush=True,
        )
    else:
        print("the CPU kernels are compiled for this machine already; checking …", file=out)
    t0 = time.perf_counter()
    ds = sim.simulate(n_particles=120, box=24, pixel_size_A=6.0, snr=1.0, seed=5)
    params = cryoclass.ClassificationParams(
        n_classes=2, filter_res_A=14.0, oem_epochs=1, max_fem_iters=1, init_restarts=1
    )
    cryoclass.Classification(ds.particles, params).run()
    seconds = time.perf_counter() - t0
    remaining = uncompiled_kernels()
    if remaining:
        print(
            "warning: these kernels could not be saved in Numba's cache (is it writable? "
            f"set NUMBA_CACHE_DIR): {', '.join(remaining)}",
            file=out,
        )
    else:
        print(f"done in {seconds:.1f} s; jobs on this machine now start at once", file=out)
    return {"compiled": missing, "seconds": seconds, "remaining": remaining}
