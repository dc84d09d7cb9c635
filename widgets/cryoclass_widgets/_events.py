"""Thread → widget marshalling: one updater thread owns every widget update of a run.

The job calls :meth:`EventPump.put` from its own thread; that only enqueues (it never blocks the
engine on the browser). One updater thread folds the queued events into a
:class:`~cryoclass_widgets.state.RunState` and calls the dashboard's ``render(state, parts)`` at
most every ``interval_s`` seconds with the union of the changed parts (slow parts such as volumes
at most every ``slow_parts[part]`` seconds). Widget callbacks that must not race the updater
(e.g. the viewer's class selector) go through :meth:`EventPump.call`.

Example
-------
>>> from cryoclass.events import PhaseStarted
>>> from cryoclass_widgets.state import RunState
>>> seen = []
>>> pump = EventPump(RunState(), lambda state, parts: seen.append(sorted(parts)))
>>> pump.put(PhaseStarted(phase="oem", total_iterations=3))
>>> pump.drain()          # synchronous (tests); pump.start() runs the updater thread
>>> seen
[['progress']]
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .state import TERMINAL_EVENTS, RunState

__all__ = ["EventPump"]

Render = Callable[[RunState, set[str]], None]


class EventPump:
    """Queue of job events drained by a single updater thread.

    Parameters
    ----------
    state : RunState
        The model the events are folded into.
    render : callable
        ``render(state, parts)``; called only from the updater thread (or from :meth:`drain`).
    interval_s : float
        Minimum time between two renders while events stream in.
    slow_parts : dict, optional
        Parts rendered less often, ``{part: min_interval_s}`` (default ``{'volumes': 1.0}``).
    on_error : callable, optional
        ``on_error(text)`` receives the traceback of an exception raised by ``render`` or by a
        queued call; the updater thread keeps going.
    job_alive : callable, optional
        Returns False once the job's thread is gone; the updater then stops even if the job never
        emitted a terminal event.
    """

    def __init__(
        self,
        state: RunState,
        render: Render,
        *,
        interval_s: float = 0.25,
        slow_parts: dict[str, float] | None = None,
        on_error: Callable[[str], None] | None = None,
        job_alive: Callable[[], bool] | None = None,
    ) -> None:
        self.state = state
        self._render = render
        self.interval_s = interval_s
        self.slow_parts = {"volumes": 1.0} if slow_parts is None else dict(slow_parts)
        self._on_error = on_error
        self._job_alive = job_alive
        self._q: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._dirty: set[str] = set()
        self._last_render = 0.0
        self._last_slow: dict[str, float] = {}
        self._terminal = False
        self.n_renders = 0

    # ------------------------------------------------------------------ producer side
    def put(self, event: Any) -> None:
        """Enqueue an event (thread-safe, never blocks); used as the job's subscriber."""
        self._q.put(("event", event))

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the updater thread if it is running, else right here."""
        if self.running:
            self._q.put(("call", fn))
        else:
            self._safe(fn)

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """True while the updater thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> threading.Thread:
        """Start the updater thread (daemon); it ends after the job's terminal event."""
        self._thread = threading.Thread(
            target=self._loop, name="cryoclass-dashboard-updater", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the updater thread to render what is pending and exit; wait for it."""
        if self._thread is None:
            return
        self._q.put(("stop", None))
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the updater thread to end (after the job's terminal event)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> None:
        """Process every queued item and render now, in the calling thread (tests, no thread)."""
        while True:
            try:
                kind, item = self._q.get_nowait()
            except queue.Empty:
                break
            self._handle(kind, item)
        self._flush(force=True)

    # ------------------------------------------------------------------ internals
    def _handle(self, kind: str, item: Any) -> bool:
        if kind == "event":
            self._dirty |= self.state.apply(item)
            if isinstance(item, TERMINAL_EVENTS):
                self._terminal = True
        elif kind == "call":
            self._safe(item)
        elif kind == "stop":
            return False
        return True

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_render < self.interval_s):
            return
        parts = set(self._dirty)
        if not force:
            for p, dt in self.slow_parts.items():
                if p in parts and now - self._last_slow.get(p, 0.0) < dt:
                    parts.discard(p)
        for p in parts & set(self.slow_parts):
            self._last_slow[p] = now
        if not parts:
            return
        self._dirty -= parts
        self._last_render = now
        self.n_renders += 1
        self._safe(lambda: self._render(self.state, parts))

    def _safe(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a widget glitch must not stop the updater
            if self._on_error is not None:
                self._on_error(traceback.format_exc())
            else:
                traceback.print_exc()

    def _loop(self) -> None:
        while True:
            try:
                kind, item = self._q.get(timeout=0.05)
            except queue.Empty:
                pass
            else:
                if not self._handle(kind, item):
                    break
                # drain whatever else is already queued before rendering once
                keep = True
                while keep:
                    try:
                        kind, item = self._q.get_nowait()
                    except queue.Empty:
                        break
                    keep = self._handle(kind, item)
                if not keep:
                    break
            if self._terminal:
                break
            self._flush()
            if self._job_alive is not None and not self._job_alive():
                # the job's thread ended without a terminal event: take what is queued and stop
                self.drain()
                return
        self.drain()
