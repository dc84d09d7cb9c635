"""The per-kernel SLP switch: on while the wrapped kernel compiles, restored afterwards. It spies
on Numba's pass builder, the internal that reads the switch: if a Numba release moves it, this
fails, where the wrapper itself would only silently stop vectorising."""

from __future__ import annotations

import numba
import numpy as np
from numba.core import config

from cryoclass.core._numba_compile import slp_vectorised


def test_slp_is_on_only_while_the_wrapped_kernel_compiles(monkeypatch):
    seen = []

    def spy(*a, **k):  # the pass builder reads the switch at compile time
        seen.append(config.SLP_VECTORIZE)
        return real(*a, **k)

    from numba.core import codegen

    # the new pass manager's builder (Numba ≥ 0.61), else the legacy one
    name = (
        "_pass_builder" if hasattr(codegen.CPUCodegen, "_pass_builder") else "_pass_manager_builder"
    )
    real = getattr(codegen.CPUCodegen, name)
    monkeypatch.setattr(codegen.CPUCodegen, name, spy)
    monkeypatch.setattr(config, "SLP_VECTORIZE", 0)

    @slp_vectorised
    @numba.njit
    def axpy(a, x, y):
        for i in range(x.size):
            y[i] += a * x[i]

    y = np.zeros(5)
    axpy(2.0, np.arange(5.0), y)
    np.testing.assert_array_equal(y, 2.0 * np.arange(5.0))
    assert seen and all(s == 1 for s in seen)  # compiled with SLP
    assert config.SLP_VECTORIZE == 0  # and the process-wide setting is back
    seen.clear()
    axpy(1.0, np.ones(5), y)  # compiled: straight to the kernel, nothing recompiled
    assert seen == [] and y[0] == 1.0


def test_a_plain_function_passes_through():
    """With ``NUMBA_DISABLE_JIT=1`` ``numba.njit`` returns the Python function itself."""

    def f(x):
        return x + 1

    assert slp_vectorised(f) is f
