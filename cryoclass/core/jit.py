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

__all__ = ["EVERY_JOB_KERNELS", "uncompiled_kernels", "COMPILE_NOTE", "quick_cache_loads"]

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


def quick_cache_loads() -> bool:
    """Load cached kernels without Numba's target-context refresh (this process only).

    Before it loads a function from its on-disk cache, Numba refreshes its CPU target context:
    it imports and registers the implementations of everything it could ever compile
    (``numba.np.arraymath``, whose BLAS check imports all of ``scipy.linalg``, ``numba.typed``,
    the random generators, …; about 70 modules). A cached function needs none of them: its
    machine code is rebuilt from the cache and linked against Numba's runtime (NRT) alone. So
    here loading from the cache only initialises the NRT; a function that is *compiled* (not
    in the cache) still gets the full refresh, which Numba's compiler runs itself, as does
    Numba when an implementation is first looked up. A load that fails this way is retried
    the usual way. The machine code, and so every result, is the same: only the start-up
    changes (a fresh process's preprocessing, where the first kernel loads, median of 10:
    0.28 -> 0.20 s; the classify CLI at N = 5 000 median 2.99 -> 2.88 s over 10 interleaved
    pairs; ``benchmarks/RESULTS.md``).

    Only the CLI's job commands call this: in a notebook, other libraries' Numba functions
    share the process. A no-op (False) where Numba's internals differ from those this was
    written against (``numba.core.caching.Cache.load_overload`` and ``_load_overload``,
    ``numba.core.runtime.nrt.rtsys.initialize``); Numba then loads as usual. Returns whether
    the quick path is in place."""
    try:
        from numba.core import caching
        from numba.core.runtime import nrt
    except ImportError:
        return False
    cache_cls = getattr(caching, "Cache", None)
    rtsys: Any = getattr(nrt, "rtsys", None)
    needed = ("load_overload", "_load_overload", "_guard_against_spurious_io_errors")
    if cache_cls is None or not all(hasattr(cache_cls, n) for n in needed):
        return False
    if not callable(getattr(rtsys, "initialize", None)):
        return False
    usual = cache_cls.load_overload
    if getattr(usual, "quick", False):
        return True

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        rtsys.initialize(target_context)  # cached code calls the NRT (allocation, refcounts)
        try:
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
        except Exception:  # noqa: BLE001 - retried with the full refresh, as Numba would
            return usual(self, sig, target_context)

    load_overload.quick = True  # type: ignore[attr-defined]
    load_overload.__wrapped_usual__ = usual  # type: ignore[attr-defined]
    cache_cls.load_overload = load_overload
    return True
