"""Per-kernel LLVM options for Numba: compile one kernel with the SLP vectoriser on, or with the
loop vectoriser's width forced.

Numba turns LLVM's superword-level-parallelism (SLP) vectoriser off by default, process-wide
(``NUMBA_SLP_VECTORIZE=0``, after miscompilations were reported in 2023, numba/numba#8852).
Straight-line code on consecutive addresses — the back-projection's nine contiguous floats per
grid corner — becomes vector adds only with it: the back-projection of 1 000 particles into
three classes at the 48³ box (pad 2; views in viewing-direction order) took 16 ms with it and
25 ms without, in one process, interleaved (the class-by-class kernel before it: 37–40 ms; see
``benchmarks/RESULTS.md``). The log-likelihood gather ran slower with it.

The log-likelihood gather is vectorised by the *loop* vectoriser instead (over disc pixels,
with gathers where the cost model finds them worth it; float64 sums cap it at one 256-bit
register).
On a CPU with AVX-512 (the Intel Xeon of ``benchmarks/RESULTS.md``) 8 lanes — one 512-bit
register — ran 1.2–1.5× faster (48³, K = 3, 1 000 particles: 10.4–11.4 vs 16.0 ms), so there
the gathers are compiled with LLVM's ``-force-vector-width=8`` (:func:`gather_lanes`). On an
AVX2-only CPU (AMD EPYC, Zen 3) 8 lanes are two registers per sum and ran 1.2–1.6× *slower* than
the cost model's choice, so there it chooses. There it vectorises the pixel loop 4 wide but
builds the corner vectors from scalar loads: its machine code has no gather instruction, only
``vmovsd`` loads and ``vinsertps``/``vmovlhps`` beside packed ``vfmadd231ps`` (Numba's
``library.get_asm_str()``, 2026-12-06). The width changes results only by float64 rounding
(lanes are pixels: each lane sums its share of a particle's pixels in float64).

Both options are switched on for the kernels wrapped here, only while they compile (under
Numba's compiler lock, so no other function compiles meanwhile), not for the rest of the
process. The kernels' results are checked against their array-code twins by the test suite
(``tests/test_core_slices.py``) and, once per binary, on a tiny problem before first use
(:func:`cryoclass.core.slices._verified_kernel`: a disagreement — a miscompilation on that CPU —
switches to the kernel compiled without the option, with a warning).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["compiled_with", "gather_lanes", "slp_vectorised", "vector_width"]


@contextmanager
def _llvm_options(slp: bool, width: int) -> Iterator[None]:
    """Within: Numba's SLP switch on (``slp``) and LLVM's loop-vectoriser width forced to
    ``width`` (0: the cost model's choice, LLVM's default). Restored on exit."""
    from numba.core import config as _config

    config: Any = _config  # its attributes are made at run time from the environment
    before = config.SLP_VECTORIZE
    if slp:
        config.SLP_VECTORIZE = 1
    if width:
        import llvmlite.binding as llvm

        llvm.set_option("", f"-force-vector-width={int(width)}")
    try:
        with _without_vectoriser_remarks(active=bool(width)):
            yield
    finally:
        config.SLP_VECTORIZE = before
        if width:
            llvm.set_option("", "-force-vector-width=0")


@contextmanager
def _without_vectoriser_remarks(active: bool) -> Iterator[None]:
    """With a forced width LLVM prints ``remark: … loop not vectorized: …`` to the C-level
    stderr for each loop it cannot vectorise (the outer loops): catch the process's stderr
    meanwhile and pass on everything but those lines."""
    if not active:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            kept = [ln for ln in text.splitlines(True) if "loop not vectorized" not in ln]
            if kept:
                sys.stderr.write("".join(kept))


def compiled_with(dispatcher: Any, *, slp: bool = False, width: int = 0) -> Callable[..., Any]:
    """Wrap a Numba dispatcher so that its compilations (first call per type signature, and
    the on-disk cache entry it writes) use the given LLVM options (:func:`_llvm_options`);
    later calls go straight to it. Under ``NUMBA_DISABLE_JIT=1`` the "dispatcher" is the plain
    Python function: returned as is."""
    if not hasattr(dispatcher, "overloads"):
        return dispatcher
    from numba.core.compiler_lock import global_compiler_lock

    @functools.wraps(dispatcher.py_func)
    def kernel(*args: Any) -> Any:
        if dispatcher.overloads:  # compiled or loaded from the cache already
            return dispatcher(*args)
        with global_compiler_lock, _llvm_options(slp, width):
            return dispatcher(*args)

    kernel.dispatcher = dispatcher  # type: ignore[attr-defined]
    return kernel


def slp_vectorised(dispatcher: Any) -> Callable[..., Any]:
    """:func:`compiled_with` the SLP vectoriser on."""
    return compiled_with(dispatcher, slp=True)


def vector_width(width: int) -> Callable[[Any], Callable[..., Any]]:
    """Decorator: :func:`compiled_with` the loop-vectoriser width forced to ``width`` lanes."""
    return functools.partial(compiled_with, width=width)


def gather_lanes() -> int:
    """Loop-vectoriser lanes to force on the gather kernels: 8 where the CPU Numba compiles for
    has AVX-512 (one 512-bit register of float64 sums; LLVM's cost model stops at 256 bits), else
    0 (the cost model's own choice). Measured in ``benchmarks/RESULTS.md``: 8 lanes 1.2–1.5×
    faster than 4 on an AVX-512 Xeon, 1.2–1.6× slower on an AVX2 EPYC (Zen 3). The CPU is
    Numba's target: ``NUMBA_CPU_FEATURES`` where set, else the host's."""
    from numba.core import config

    features = getattr(config, "CPU_FEATURES", None)
    if features is None:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    return 8 if "+avx512f" in str(features).split(",") else 0
