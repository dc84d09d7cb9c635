"""The CLI's progress output: tqdm bars on a terminal only, the per-iteration lines always, so
a log redirected to a file (a cluster job's) holds no carriage-return redraws."""

from __future__ import annotations

import io

import numpy as np
import pytest

from cryoclass import events as ev
from cryoclass.cli import ProgressPrinter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _iteration() -> ev.IterationFinished:
    K = 2
    return ev.IterationFinished(
        phase="fem", iteration=0, global_iteration=3, eta=1.0, beta=0.0,
        class_mass=np.array([60.0, 40.0]), hard_counts=np.array([61, 39]), pct_switched=1.5,
        rms_change=0.01, mean_ess=1.2, log_likelihood=-10.0, fsc_res_A=np.full(K, 10.0),
        elapsed_s=1.0, eta_remaining_s=2.0, volumes=np.zeros((K, 4, 4, 4), np.float32),
    )  # fmt: skip


def _drive(printer: ProgressPrinter) -> None:
    printer(ev.PhaseStarted(phase="fem"))
    for done in (0, 50, 100):
        printer(ev.Progress(phase="fem", done=done, total=100))
    printer(_iteration())


@pytest.mark.parametrize(
    ("stream", "bar", "drawn"),
    [
        (io.StringIO, None, False),  # a file or pipe: no bar by default
        (_Terminal, None, True),  # a terminal: bars
        (_Terminal, False, False),  # --quiet
        (io.StringIO, True, True),  # asked for explicitly
    ],
)
def test_bars_only_where_asked_or_on_a_terminal(stream, bar, drawn):
    out = stream()
    _drive(ProgressPrinter(stream=out, bar=bar))
    text = out.getvalue()
    assert ("ptcl" in text) is drawn
    assert ("\r" in text) is drawn
    # the iteration line is there either way, once, with its switch rate and time left
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.startswith(" FEM")]
    assert len(lines) == 1
    assert "switched 1.50%" in lines[0] and "≤2 s left" in lines[0]
    # a log where bars were left out for want of a terminal gets a line per phase instead
    assert ("       fem …" in text.splitlines()) is (bar is None and not drawn)


def test_a_closed_or_plain_stream_counts_as_no_terminal():
    closed = io.StringIO()
    closed.close()
    assert ProgressPrinter(stream=closed).bar_enabled is False

    class Plain:
        def write(self, s: str) -> int:
            return len(s)

    assert ProgressPrinter(stream=Plain()).bar_enabled is False
