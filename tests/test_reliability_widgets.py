"""Reliability, widgets under stress (headless, real engine on tiny data): Stop pressed twice,
the dashboard closed while running, a second Run after Stop, Stop during the final writes.

Afterwards there must be no orphan ``cryoclass-job`` or dashboard updater thread, and the
dashboard's OUTDIR must be consistent (every file parses; leftovers only hidden ``.*.tmp``).
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")
pytest.importorskip("nglview")

from cryoclass_widgets import Dashboard  # noqa: E402
from test_reliability_kill import check_consistent  # noqa: E402

from cryoclass.params import ClassificationParams  # noqa: E402

OURS = ("cryoclass-job", "cryoclass-dashboard-updater")
PARAMS = dict(
    n_classes=2,
    filter_res_A=15.0,
    oem_epochs=2,
    max_fem_iters=3,
    init_particles_per_class=30,
    oem_batch_size_per_class=50,
    pca_n_reconstructions=6,
    convergence_pct=0.0,
    rms_change_check=False,
)


def _ours() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(OURS)]


def _no_orphans(timeout: float = 30.0) -> None:
    t_end = time.time() + timeout
    while _ours() and time.time() < t_end:
        time.sleep(0.05)
    assert not _ours(), [t.name for t in _ours()]


@pytest.fixture(scope="module")
def particles():
    from cryoclass.sim import simulate

    return simulate(n_particles=200, box=24, pixel_size_A=6.0, snr=1.0, seed=4).particles


def _dash(particles, outdir) -> Dashboard:
    return Dashboard(particles, params=ClassificationParams(**PARAMS), outdir=outdir)


def _wait_for(pred, timeout: float = 60.0) -> bool:
    t_end = time.time() + timeout
    while not pred() and time.time() < t_end:
        time.sleep(0.01)
    return pred()


def test_stop_twice_then_run_again(particles, tmp_path):
    out = tmp_path / "out"
    d = _dash(particles, out)
    assert d.start(), d.status.value
    assert _wait_for(lambda: (out / "checkpoint" / "state.json").exists())
    d.stop()
    d.stop()  # second press while stopping: no-op
    assert d.wait(60)
    d.stop()  # after the end: no-op
    assert d.state.status == "cancelled", d.state.error
    _no_orphans()
    check_consistent(out)
    # a second Run never overwrites the first: it goes to a fresh OUTDIR_2, the first is untouched
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert d.start(), d.status.value
    assert str(d.job.outdir) == str(tmp_path / "out_2")
    assert d.wait(240) and d.state.status == "finished", (d.state.error, d.errors)
    _no_orphans()
    assert check_consistent(tmp_path / "out_2")["files"] > 10
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    d.close()


def test_close_while_running(particles, tmp_path):
    out = tmp_path / "out"
    d = _dash(particles, out)
    assert d.start()
    assert _wait_for(lambda: d.state.status not in ("", "idle") and d.running)
    time.sleep(0.5)
    d.close()  # the notebook tab is closed / cell re-run: stop, join, close widgets
    _no_orphans()
    check_consistent(out)


def test_stop_during_final_writes(particles, tmp_path):
    out = tmp_path / "out"
    d = _dash(particles, out)
    assert d.start()
    _wait_for(lambda: (out / "particles.star").exists() or not d.running, 240)
    d.stop()
    d.stop()
    assert d.wait(60)
    _no_orphans()
    assert d.state.status in ("finished", "cancelled")
    check_consistent(out)


def test_many_dashboards_started_and_dropped(particles, tmp_path):
    """A kernel restart drops every reference; jobs are daemon threads and must not outlive
    close(). Start several, close them all at random moments."""
    dashes = [_dash(particles, tmp_path / f"o{i}") for i in range(3)]
    for i, d in enumerate(dashes):
        assert d.start()
        time.sleep(0.2 * i)
    for d in dashes:
        d.close()
    _no_orphans()
    for i in range(3):
        check_consistent(tmp_path / f"o{i}")
