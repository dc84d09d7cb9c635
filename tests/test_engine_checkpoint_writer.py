"""Checkpoints written in the background (``engine.state.CheckpointWriter``) and the CLI's quick
exit: what is on disk is what the state was when it was submitted, errors reach the job's
thread, and nothing is cut short when the process ends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cryoclass.engine.reconstruct import ClassStats
from cryoclass.engine.state import CheckpointWriter, EMState, load_checkpoint


def _state() -> EMState:
    rng = np.random.default_rng(0)
    st = EMState(phase="oem", iteration=3, global_iteration=5)
    st.volumes = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    st.r = rng.random((50, 2)).astype(np.float32)
    st.stats = ClassStats(rng.standard_normal((2, 4, 4, 3, 2, 3)).astype(np.float32), np.ones(2))
    st.records = [{"phase": "oem", "iteration": 0, "flow": [[1, 0], [0, 1]]}]
    return st


def _slow_writes(monkeypatch, delay_s: float = 0.3) -> None:
    """Background writes start ``delay_s`` late, so the caller's in-place updates surely come
    first (without a snapshot they would reach the file)."""
    import cryoclass.engine.state as state

    real = state.save_checkpoint

    def slow(*a, **k):
        time.sleep(delay_s)
        real(*a, **k)

    monkeypatch.setattr(state, "save_checkpoint", slow)


def test_the_checkpoint_holds_the_state_as_submitted(tmp_path, monkeypatch):
    _slow_writes(monkeypatch)
    st = _state()
    want_vol, want_acc, want_r = st.volumes.copy(), st.stats.acc.copy(), st.r.copy()
    w = CheckpointWriter()
    w.submit(tmp_path, st, "fp")
    # the next iteration updates everything in place while the write may still be running
    st.volumes += 1.0
    st.stats.acc *= 0.0
    st.stats.mass *= 0.0
    st.r[:] = 0.0
    st.records.append({"phase": "oem", "iteration": 1})
    st.records[0]["iteration"] = 99
    w.wait()
    got, fp = load_checkpoint(tmp_path)
    assert fp == "fp" and (got.phase, got.iteration) == ("oem", 3)
    np.testing.assert_array_equal(got.volumes, want_vol)
    np.testing.assert_array_equal(got.stats.acc, want_acc)
    np.testing.assert_array_equal(got.stats.mass, np.ones(2))
    np.testing.assert_array_equal(got.r, want_r)
    assert [r["iteration"] for r in got.records] == [0]


def test_buffers_are_reused_and_the_latest_checkpoint_wins(tmp_path):
    st = _state()
    w = CheckpointWriter()
    w.submit(tmp_path, st, "fp")
    first = w._buffers["stats_acc"]
    st.stats.acc += 2.0
    st.global_iteration, st.iteration = 6, 4
    w.submit(tmp_path, st, "fp")  # waits for the first write, then reuses its buffers
    assert w._buffers["stats_acc"] is first
    w.wait()
    got, _ = load_checkpoint(tmp_path)
    assert got.iteration == 4
    np.testing.assert_array_equal(got.stats.acc, st.stats.acc)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "state.json",
        "state_oem_00006.npz",
    ]


def test_a_failed_write_is_raised_in_the_caller(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the output directory should be")
    w = CheckpointWriter()
    w.submit(blocker, _state(), "fp")  # returns at once; the write fails in the background
    with pytest.raises(OSError):
        w.wait()
    w.wait()  # reported once


def test_settle_waits_for_a_write_left_in_flight(tmp_path, monkeypatch):
    _slow_writes(monkeypatch)
    CheckpointWriter().submit(tmp_path, _state(), "fp")  # the writer object is dropped at once
    assert not (tmp_path / "checkpoint" / "state.json").exists()
    CheckpointWriter.settle(tmp_path)
    meta = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert meta["iteration"] == 3


def test_quick_exit_flushes_runs_atexit_and_joins_threads(tmp_path):
    flag = tmp_path / "thread_done"
    code = textwrap.dedent(
        f"""
        import atexit, sys, threading, time
        from cryoclass.cli import quick_exit
        atexit.register(lambda: print("atexit ran"))
        def late():
            time.sleep(0.3)
            open({str(flag)!r}, "w").write("done")
        threading.Thread(target=late).start()
        sys.stdout.write("unflushed output")
        quick_exit(3)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3
    assert "unflushed output" in r.stdout and "atexit ran" in r.stdout
    assert flag.read_text() == "done"
