"""The first-run notice: a job says when it compiles the CPU kernels before it starts (Numba's
on-disk cache has nothing for this CPU), in its JobStarted event, the CLI and the dashboard."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest

import cryoclass
from cryoclass import events as ev
from cryoclass import sim
from cryoclass.cli import ProgressPrinter
from cryoclass.core import jit

needs_jit = pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="the kernels are plain Python"
)


@pytest.fixture(scope="module")
def tiny():
    return sim.simulate(n_particles=120, box=24, pixel_size_A=6.0, snr=1.0, seed=5)


def _params(seed: int = 0):
    return cryoclass.ClassificationParams(
        n_classes=2, filter_res_A=14.0, seed=seed, oem_epochs=1, max_fem_iters=1,
        init_restarts=1,
    )  # fmt: skip


def test_every_listed_kernel_is_a_cached_numba_kernel():
    # a renamed or uncached kernel would make the check blind to it
    for spec in jit.EVERY_JOB_KERNELS:
        d = jit._dispatcher(spec)
        if not hasattr(d, "overloads"):  # NUMBA_DISABLE_JIT
            continue
        assert d._cache._cache_file is not None, spec


@needs_jit
def test_an_empty_cache_reports_every_kernel(tmp_path):
    # a fresh Numba cache directory is what a new machine (or a new installation) has; the
    # check only reads the cache indexes, it compiles nothing
    code = textwrap.dedent(
        """
        from cryoclass.core.jit import EVERY_JOB_KERNELS, uncompiled_kernels
        assert uncompiled_kernels() == list(EVERY_JOB_KERNELS), uncompiled_kernels()
        print("ok")
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@needs_jit
def test_a_job_calls_every_listed_kernel():
    # the list names only kernels that every CPU job calls (else every run would look like a
    # first one): in a fresh process, after the small job of `cryoclass compile`, each has a
    # loaded compilation
    code = textwrap.dedent(
        """
        from cryoclass.core import jit
        from cryoclass.warmup import compile_kernels
        assert compile_kernels()["remaining"] == []
        unused = [k for k in jit.EVERY_JOB_KERNELS if not jit._dispatcher(k).overloads]
        assert unused == [], unused
        assert jit.uncompiled_kernels() == []  # and they are in the on-disk cache now
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_a_warm_run_says_nothing(tiny):
    events = []
    cryoclass.Classification(tiny.particles, _params()).run([events.append])
    again = []
    cryoclass.Classification(tiny.particles, _params(seed=1)).run([again.append])
    assert [e.compiling_kernels for e in again if isinstance(e, ev.JobStarted)] == [False]


def test_job_started_says_when_kernels_will_compile(tiny, monkeypatch):
    monkeypatch.setattr(jit, "uncompiled_kernels", lambda: ["some:kernel"])
    events = []
    cryoclass.Classification(tiny.particles, _params()).run([events.append])
    assert [e.compiling_kernels for e in events if isinstance(e, ev.JobStarted)] == [True]


def _started(compiling: bool) -> ev.JobStarted:
    return ev.JobStarted(
        n_particles=10, n_classes=2, box=24, pixel_size_A=6.0, box_c=16,
        pixel_size_c_A=9.0, params=_params(), compiling_kernels=compiling,
    )  # fmt: skip


@pytest.mark.parametrize("compiling", [True, False])
def test_cli_prints_the_notice_only_when_compiling(compiling):
    out = io.StringIO()
    ProgressPrinter(bar=False, stream=out)(_started(compiling))
    assert (jit.COMPILE_NOTE in out.getvalue()) is compiling


def test_dashboard_status_shows_compiling_until_the_first_iteration():
    from cryoclass_widgets.state import RunState

    s = RunState()
    s.apply(_started(True))
    s.apply(ev.PhaseStarted(phase="consensus"))
    assert "compiling the CPU kernels" in s.progress_text()
    assert "ETA" not in s.progress_text()  # an ETA would be meaningless meanwhile
    assert any("compiling the CPU kernels" in line for line in s.log)
    import numpy as np

    s.apply(
        ev.IterationFinished(
            phase="oem", iteration=0, global_iteration=0, eta=0.4, beta=0.5,
            class_mass=np.array([5.0, 5.0]), hard_counts=np.array([5, 5]),
            pct_switched=float("nan"), rms_change=0.1, mean_ess=1.5, log_likelihood=-1.0,
            fsc_res_A=np.array([20.0, 20.0]), elapsed_s=1.0, eta_remaining_s=3.0,
            volumes=np.zeros((2, 4, 4, 4), np.float32),
        )
    )  # fmt: skip
    assert "compiling" not in s.progress_text() and "ETA 0:03" in s.progress_text()


def test_cli_compile_leaves_nothing_to_compile(capsys):
    from cryoclass.cli import main

    assert main(["compile"]) == 0
    err = capsys.readouterr().err
    assert "done in" in err and "jobs on this machine now start at once" in err
    if os.environ.get("NUMBA_DISABLE_JIT") != "1":
        assert jit.uncompiled_kernels() == []


def test_compile_reports_kernels_it_could_not_cache(monkeypatch):
    # a read-only cache (no NUMBA_CACHE_DIR) must not pass silently: the CLI exits 1
    from cryoclass import warmup

    monkeypatch.setattr(warmup, "uncompiled_kernels", lambda: ["cryoclass.core.x:kernel"])
    out = io.StringIO()
    res = warmup.compile_kernels(stream=out)
    assert res["remaining"] == ["cryoclass.core.x:kernel"]
    assert "could not be saved" in out.getvalue() and "NUMBA_CACHE_DIR" in out.getvalue()


def test_eta_is_not_inflated_by_a_compiling_first_iteration():
    # the first O-EM iteration of a first run includes compiling the kernels (here 60 s against
    # 0.5 s for the others): the estimate uses the median iteration time, so it recovers as soon
    # as most iterations are ordinary ones
    from types import SimpleNamespace

    from cryoclass.engine.driver import Driver

    d = SimpleNamespace(
        times={"oem": [60.0, 0.5, 0.6], "fem": []},
        oem_plan=lambda: (3000, 2, 6),  # batch, batches per epoch, O-EM iterations
        st=SimpleNamespace(iteration=3),
        p=SimpleNamespace(max_fem_iters=4),
    )
    eta = Driver._eta_remaining(d, "oem")  # type: ignore[arg-type]
    # 3 O-EM iterations left at 0.6 s, then 4 F-EM at 2 batches' worth (1.2 s) each
    assert eta == pytest.approx(3 * 0.6 + 4 * 1.2)
    d.times["fem"] = [1.0, 1.4, 1.2]
    d.st.iteration = 2
    assert Driver._eta_remaining(d, "fem") == pytest.approx(1 * 1.2)
