"""Whether this machine has compiled cryoclass's Numba kernels yet.

The CPU kernels are compiled by Numba on their first call and kept in Numba's on-disk cache
(``cache=True``: the ``__pycache__`` beside each module, or ``NUMBA_CACHE_DIR``). The first job
on a machine therefore spends up to 2 minutes compiling (28–80 s on 2 cores, see
``benchmarks/RESULTS.md``), later jobs load the compiled code in well under a second. A job
looks here before it starts so that the CLI and the dashboard can say why the first run sits
still, instead of showing a progress bar stuck at 0 %.

Example
-------
>>> from cryoclass.core.jit import uncompiled_kernels
>>> isinstance(uncompiled_kernels(), list)
True
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EVERY_JOB_KERNELS", "uncompiled_kernels", "COMPILE_NOTE"]

#: ``module:function`` of the cached kernels that every CPU classification calls (the
#: preprocessing, consensus, initialisation, O-EM and F-EM passes and their M-steps), so that
#: a kernel which only some jobs use does not make every run look like a first one (so not
#: ``_scale_numba.scale_inplace``: O-EM only, and ``oem_epochs = 0`` is allowed).
EVERY_JOB_KERNELS = (
    "cryoclass.core._preprocess_numba:disc_ctf_kernel",
    "cryoclass.core._slice_numba:loglik_kernel",
    "cryoclass.core._slice_numba:backproject_kernel",
    "cryoclass.core._slice_numba:slice_stats_kernel",
    "cryoclass.core._solve_numba:solve_kernel",
    "cryoclass.core._solve_numba:shell_weight_sums_kernel",
    "cryoclass.core._solve_numba:fourier_to_grid_kernel",
    "cryoclass.core._fsc_numba:fsc_sums_kernel",
    "cryoclass.core._shrink_numba:joint_shrink_kernel",
)

#: What the CLI and the dashboard say while the kernels compile.
COMPILE_NOTE = (
    "first run on this machine: compiling the CPU kernels (up to 2 minutes, once; "
    "later runs start at once)"
)


def _dispatcher(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _has_entry_for_this_cpu(dispatcher: Any) -> bool:
    """Whether ``dispatcher``'s on-disk cache index holds a compilation for this CPU (its
    codegen's magic tuple: target triple, CPU name and features) that is current for the
    source (Numba's index loader returns nothing when the source changed since)."""
    cache = getattr(dispatcher, "_cache", None)
    index_file = getattr(cache, "_cache_file", None)
    if index_file is None:  # no on-disk cache for this function: nothing to look up
        return True
    from numba.core.registry import cpu_target

    magic = cpu_target.target_context.codegen().magic_tuple()
    try:
        index = index_file._load_index()
    except Exception:  # noqa: BLE001 - an unreadable index: Numba recompiles
        return False
    return any(len(key) > 1 and key[1] == magic for key in index)


def uncompiled_kernels(kernels: tuple[str, ...] = EVERY_JOB_KERNELS) -> list[str]:
    """The ``kernels`` (``module:function``) with no compiled code in the on-disk cache for
    this CPU: a job run now compiles them first. Empty when everything loads from the cache,
    and under ``NUMBA_DISABLE_JIT=1`` (the kernels are then plain Python)."""
    missing = []
    for spec in kernels:
        d = _dispatcher(spec)
        if not hasattr(d, "overloads"):  # NUMBA_DISABLE_JIT: a plain function
            continue
        if not _has_entry_for_this_cpu(d):
            missing.append(spec)
    return missing
