"""The classify CLI pauses cyclic garbage collection while it loads its libraries and
preprocesses, and resumes it (everything loaded so far frozen) when the first later phase
starts; it never leaves the collector off, on success or on error."""

from __future__ import annotations

import gc

import pytest

from cryoclass.cli import _StartupGC, main
from cryoclass.events import JobStarted, PhaseStarted, Progress


@pytest.fixture
def gc_restored():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def test_paused_through_preprocessing_resumed_at_the_next_phase(gc_restored):
    gc.enable()
    g = _StartupGC()
    assert not gc.isenabled()
    g(JobStarted(n_particles=1, n_classes=1, box=8, pixel_size_A=1.0, box_c=8,
                 pixel_size_c_A=1.0, params=None))  # fmt: skip
    g(PhaseStarted(phase="preprocess"))
    g(Progress(phase="preprocess", done=1, total=2))
    assert not gc.isenabled()
    g(PhaseStarted(phase="consensus"))
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what was loaded is never re-walked
    g.release()  # idempotent
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(gc_restored):
    gc.disable()
    g = _StartupGC()
    g(PhaseStarted(phase="init"))
    assert not gc.isenabled()


def test_classify_leaves_the_collector_on(tmp_path, capsys, gc_restored):
    from cryoclass.sim import simulate

    gc.enable()
    simulate(n_particles=60, box=24, pixel_size_A=6.0, snr=1.0, seed=3).write(tmp_path)
    seen = []
    import cryoclass.engine.job as job_mod

    orig = job_mod.Classification._emit

    def spy(self, ev):  # the collector's state once each phase start is announced
        orig(self, ev)
        if isinstance(ev, PhaseStarted):
            seen.append((ev.phase, gc.isenabled()))

    job_mod.Classification._emit = spy
    try:
        args = ["-K", "2", "--filter-res", "15", "--oem-epochs", "1", "--max-fem-iters", "1",
                "--batch-per-class", "30", "--quiet"]  # fmt: skip
        assert main(["classify", str(tmp_path / "particles.star"), "-o", str(tmp_path / "o"),
                     *args]) == 0  # fmt: skip
    finally:
        job_mod.Classification._emit = orig
    assert seen[0] == ("preprocess", False)
    assert all(on for phase, on in seen[1:]), seen
    assert gc.isenabled()
    # a failing run (K > N) also leaves it on
    assert main(["classify", str(tmp_path / "particles.star"), "-o", str(tmp_path / "o2"),
                 "-K", "500", "--filter-res", "15", "--quiet"]) == 2  # fmt: skip
    assert gc.isenabled()
    capsys.readouterr()


def test_paused_while_the_parser_is_built_and_on_after_a_usage_error(gc_restored, monkeypatch):
    """``main`` pauses the collector before building the classify parser (it imports the
    engine), hands that pause to the command, and restores it when parsing ends the call."""
    import cryoclass.cli as cli

    gc.enable()
    seen = {}
    build = cli.build_parser

    def spy_build(command=None):
        seen["building"] = gc.isenabled()
        return build(command)

    def spy_classify(a, argv, startup_gc=None):
        seen["handed"] = startup_gc is not None and not gc.isenabled()
        startup_gc.release()
        return 0

    monkeypatch.setattr(cli, "build_parser", spy_build)
    monkeypatch.setattr(cli, "cmd_classify", spy_classify)
    assert main(["classify", "p.star", "-K", "2", "--filter-res", "9", "-o", "o"]) == 0
    assert seen == {"building": False, "handed": True} and gc.isenabled()
    with pytest.raises(SystemExit):
        main(["classify", "p.star"])  # no -K: argparse exits
    assert gc.isenabled()
    seen.clear()
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert seen == {"building": True} and gc.isenabled()  # other commands: never paused
