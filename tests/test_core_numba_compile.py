"""The per-kernel LLVM options (SLP switch, forced vector width): on while the wrapped kernel
compiles, restored afterwards. The SLP test spies on Numba's pass builder, the internal that
reads the switch: if a Numba release moves it, this fails, where the wrapper itself would only
silently stop vectorising. The width test reads the generated machine code."""

from __future__ import annotations

import platform

import numba
import numpy as np
import pytest
from numba.core import config

from cryoclass.core import _numba_compile as NC
from cryoclass.core._numba_compile import slp_vectorised, vector_width


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


def _sum_squares(x):
    s = 0.0
    for i in range(x.size):
        s += np.float64(x[i] * x[i])
    return s


def _widest_vector_lanes(dispatcher):
    """Lanes of float32 the compiled code adds at once, read from its x86 assembly (zmm: 16,
    ymm: 8, xmm: 4); 1 when it has no packed single-precision multiply."""
    import re

    asm = "\n".join(dispatcher.inspect_asm().values())
    regs = re.findall(r"vmulps\s+%?([xyz])mm", asm)
    return max(({"x": 4, "y": 8, "z": 16}[r] for r in regs), default=1)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="reads x86 assembly")
def test_forced_vector_width_applies_to_the_wrapped_kernel_only():
    """A float64 sum of float32 squares: the cost model picks at most 8 float32 lanes (one
    256-bit float64 register, or scalar code); forced to 16 it uses zmm registers. A kernel
    compiled afterwards gets the default again."""
    x = np.arange(1000, dtype=np.float32)
    plain = numba.njit(fastmath=True)(_sum_squares)
    wide = vector_width(16)(numba.njit(fastmath=True)(_sum_squares))
    after = numba.njit(fastmath=True)(_sum_squares)
    ref = float(np.sum(x.astype(np.float64) ** 2))
    assert plain(x) == pytest.approx(ref) and wide(x) == pytest.approx(ref)
    assert after(x) == pytest.approx(ref)
    import llvmlite.binding as llvm

    if not llvm.get_host_cpu_features().get("avx512f", False):
        pytest.skip("16 float32 lanes in one register need AVX-512")
    default = _widest_vector_lanes(plain)
    if default >= 16:
        pytest.skip(f"this CPU's default is already {default} lanes")
    assert _widest_vector_lanes(wide.dispatcher) == 16
    assert _widest_vector_lanes(after) == default


def test_vectoriser_remarks_are_dropped_and_other_stderr_kept(capfd):
    """LLVM's 'loop not vectorized' remarks (C-level stderr) are filtered while a kernel
    compiles with a forced width; anything else written to stderr meanwhile gets through."""
    import os

    with NC._without_vectoriser_remarks(active=True):
        os.write(2, b"remark: <unknown>:0:0: loop not vectorized: call instruction\n")
        os.write(2, b"a real message\n")
    err = capfd.readouterr().err
    assert "a real message" in err and "loop not vectorized" not in err


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_import_makes_idle_openmp_threads_sleep_unless_the_user_chose(preset):
    """``import cryoclass`` sets ``OMP_WAIT_POLICY=PASSIVE`` for the OpenMP runtime Numba loads
    later (idle workers spinning took the cores SciPy's FFT threads need), and keeps a value
    the user set."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    code = "import os, cryoclass; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == (preset or "PASSIVE")


def test_gather_lanes_follow_the_target_cpu(monkeypatch):
    """8 forced lanes only where Numba compiles for AVX-512 (one 512-bit register of float64
    sums); elsewhere 0, LLVM's cost model's own width (8 were slower on an AVX2 EPYC)."""
    from numba.core import config

    from cryoclass.core._numba_compile import gather_lanes

    monkeypatch.setattr(config, "CPU_FEATURES", "+64bit,+avx,+avx2,+fma,-avx512f", raising=False)
    assert gather_lanes() == 0
    monkeypatch.setattr(config, "CPU_FEATURES", "+64bit,+avx2,+avx512f,+avx512dq", raising=False)
    assert gather_lanes() == 8
    monkeypatch.setattr(config, "CPU_FEATURES", None, raising=False)
    import llvmlite.binding as llvm

    host_avx512 = bool(llvm.get_host_cpu_features().get("avx512f", False))
    assert gather_lanes() == (8 if host_avx512 else 0)
