"""Per-kernel LLVM options for Numba: compile one kernel with the SLP vectoriser on.

Numba turns LLVM's superword-level-parallelism (SLP) vectoriser off by default, process-wide
(``NUMBA_SLP_VECTORIZE=0``, after miscompilations were reported in 2023, numba/numba#8852).
Straight-line code on consecutive addresses — the back-projection's nine contiguous floats per
grid corner — becomes vector adds only with it: the back-projection of 1 000 particles into
three classes at the 48³ box (pad 2; views in viewing-direction order) took 16 ms with it and
25 ms without, in one process, interleaved (the class-by-class kernel before it: 37–40 ms; see
``benchmarks/RESULTS.md``). It is switched on for the kernels wrapped here, only while they
compile (under Numba's compiler lock, so no other function compiles meanwhile), not for the
rest of the process: the log-likelihood gather, for one, ran slower with it. The kernel's
results are checked against its array-code twin by the test suite (``tests/test_core_slices.py``)
and, once per process, on a tiny problem before first use
(:func:`cryoclass.core.slices._verified_backproject_kernel`: a disagreement — a miscompilation on
that CPU — switches to the kernel compiled without SLP, with a warning).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["slp_vectorised"]


def slp_vectorised(dispatcher: Any) -> Callable[..., Any]:
    """Wrap a Numba dispatcher so that its compilations (first call per type signature, and
    the on-disk cache entry it writes) use the SLP vectoriser; later calls go straight to it.
    Under ``NUMBA_DISABLE_JIT=1`` the "dispatcher" is the plain Python function: returned as is."""
    if not hasattr(dispatcher, "overloads"):
        return dispatcher
    from numba.core import config as _config
    from numba.core.compiler_lock import global_compiler_lock

    config: Any = _config  # its attributes are made at run time from the environment

    @functools.wraps(dispatcher.py_func)
    def kernel(*args: Any) -> Any:
        if dispatcher.overloads:  # compiled or loaded from the cache already
            return dispatcher(*args)
        with global_compiler_lock:
            before = config.SLP_VECTORIZE
            config.SLP_VECTORIZE = 1
            try:
                return dispatcher(*args)
            finally:
                config.SLP_VECTORIZE = before

    kernel.dispatcher = dispatcher  # type: ignore[attr-defined]
    return kernel
