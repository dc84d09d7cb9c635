"""A stand-in job that emits a realistic event stream from synthetic data (no engine needed).

:class:`DemoJob` has the public interface of :class:`cryoclass.Classification` (``subscribe``,
``start``, ``run``, ``cancel``, ``done``, ``result``, ``box_c``, ``pixel_size_c_A``) and emits the
same :mod:`cryoclass.events`, with blob volumes that separate into classes over the iterations.
It drives the dashboard in tests and demos without data or CPU time.

Example
-------
>>> from cryoclass_widgets.demo import DemoJob, DemoParticles
>>> from cryoclass import ClassificationParams
>>> job = DemoJob(DemoParticles(300, box=32), ClassificationParams(n_classes=3, filter_res_A=8),
...               delay_s=0.0)
>>> seen = []
>>> job.subscribe(lambda e: seen.append(type(e).__name__))
>>> result = job.run()
>>> seen[0], seen[-1], result.volumes.shape[0]
('JobStarted', 'JobFinished', 3)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoclass import events as ev
from cryoclass.conventions import classification_box

__all__ = ["DemoParticles", "DemoJob", "DemoResult", "demo_job_factory"]


class DemoParticles:
    """Metadata-only particle set: ``len()``, ``box`` (px) and ``pixel_size_A``."""

    def __init__(self, n: int = 600, box: int = 48, pixel_size_A: float = 2.0) -> None:
        self.n, self.box, self.pixel_size_A = int(n), int(box), float(pixel_size_A)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"DemoParticles({self.n}, box={self.box}, pixel_size_A={self.pixel_size_A})"


def _blobs(D: int, centres: Sequence[tuple[float, float, float]], sigma: float) -> np.ndarray:
    g = (np.arange(D) - D // 2) / D
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    v = np.zeros((D, D, D), np.float32)
    for cz, cy, cx in centres:
        v += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2)).astype(
            np.float32
        )
    return v


class DemoResult:
    """What :class:`DemoJob` returns: the attributes of ``ClassificationResult`` the dashboard
    uses, and ``write``/``write_classes`` that write small real files (and record the calls)."""

    def __init__(
        self,
        assignments: pd.DataFrame,
        volumes: np.ndarray,
        consensus: np.ndarray,
        iterations: pd.DataFrame,
        pixel_size_A: float,
    ) -> None:
        self.assignments, self.volumes, self.consensus = assignments, volumes, consensus
        self.iterations, self.pixel_size_A = iterations, pixel_size_A
        self.solvent_mask = (consensus > 0.2 * consensus.max()).astype(np.float32)
        self.focus_mask = np.ones_like(consensus)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def write(self, outdir: str | Path) -> list[Path]:
        """Write every class (particles and volumes)."""
        self.calls.append(("write", (str(outdir),)))
        return self.write_classes(outdir, list(range(self.volumes.shape[0])))

    def write_classes(
        self,
        outdir: str | Path,
        classes: Sequence[int],
        formats: Sequence[str] = ("star", "cs"),
        min_probability: float = 0.0,
    ) -> list[Path]:
        """Write the selected classes' particle lists (one ``.star``/``.cs`` stand-in per format)
        and their volumes (``.mrc``)."""
        import mrcfile

        call = (str(outdir), list(classes), tuple(formats))
        self.calls.append(("write_classes", call + ((min_probability,) if min_probability else ())))
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        a = self.assignments
        keep = a["class"].isin(list(classes))
        if min_probability > 0:  # the rule of ClassificationResult.write_classes' selected files
            keep &= a[[f"posterior_{k}" for k in classes]].sum(axis=1) >= min_probability
        sel = a[keep]
        files = []
        for fmt in formats:
            p = out / f"particles_selected.{fmt}"
            sel[["uid", "class"]].to_csv(p, sep=" ", index=False)
            files.append(p)
        for k in classes:
            p = out / f"class_{k:02d}.mrc"
            with mrcfile.new(p, overwrite=True) as m:
                m.set_data(self.volumes[k].astype(np.float32))
                m.voxel_size = self.pixel_size_A
            files.append(p)
        return files


class DemoJob:
    """Synthetic classification job with the public interface of ``cryoclass.Classification``.

    Parameters
    ----------
    particles : object with ``len()``, ``box`` and ``pixel_size_A``
    params : cryoclass.ClassificationParams
    delay_s : float
        Sleep per iteration (0 = as fast as possible).
    n_oem, n_fem : int
        Iterations of each phase.
    fail_at : int, optional
        Global iteration at which to emit ``JobFailed`` (tests of the error path).
    """

    def __init__(
        self,
        particles: Any,
        params: Any,
        *,
        solvent_mask: Any = None,
        focus_mask: Any = None,
        init_volumes: Any = None,
        outdir: Any = None,
        delay_s: float = 0.3,
        n_oem: int = 5,
        n_fem: int = 6,
        fail_at: int | None = None,
    ) -> None:
        self.particles, self.params = particles, params
        self.solvent_mask, self.focus_mask = solvent_mask, focus_mask
        self.delay_s, self.n_oem, self.n_fem, self.fail_at = delay_s, n_oem, n_fem, fail_at
        self.box_c, self.pixel_size_c_A = classification_box(
            particles.box, particles.pixel_size_A, params.filter_res_A
        )
        self.result: DemoResult | None = None
        self._subs: list[Callable[[ev.Event], None]] = []
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._t0 = 0.0
        self.cancel_calls = 0

    # ------------------------------------------------------------------ public API
    def subscribe(self, callback: Callable[[ev.Event], None]) -> None:
        """Call ``callback(event)`` (from the job's thread) for every event."""
        self._subs.append(callback)

    def start(self) -> threading.Thread:
        """Run in a background daemon thread; returns the thread."""
        t = threading.Thread(target=self.run, name="cryoclass-demo-job", daemon=True)
        t.start()
        return t

    def cancel(self) -> None:
        """Ask the job to stop (cooperative, idempotent)."""
        self.cancel_calls += 1
        self._cancel.set()

    def done(self) -> bool:
        """True once the job finished, was cancelled or failed."""
        return self._done.is_set()

    # ------------------------------------------------------------------ the run
    def _emit(self, event_cls: type, *args: Any, **kw: Any) -> None:
        e = event_cls(*args, time_s=time.monotonic() - self._t0, **kw)
        for cb in self._subs:
            cb(e)

    def _sleep(self, phase: str, s: float) -> bool:
        """Sleep ``s`` seconds; False (after emitting JobCancelledEvent) when cancelled."""
        if self._cancel.wait(s) or self._cancel.is_set():
            self._emit(ev.JobCancelledEvent, phase)
            return False
        return True

    def run(self) -> DemoResult | None:
        """Run in the calling thread; returns the result (None when cancelled or failed)."""
        self._t0 = time.monotonic()
        try:
            return self._run()
        finally:
            self._done.set()

    def _run(self) -> DemoResult | None:  # noqa: C901 - a script of events
        p, K, Dc = self.params, self.params.n_classes, self.box_c
        N = len(self.particles)
        rng = np.random.default_rng(p.seed)
        self._emit(
            ev.JobStarted,
            N,
            K,
            self.particles.box,
            self.particles.pixel_size_A,
            Dc,
            self.pixel_size_c_A,
            p,
        )
        for phase in ("preprocess", "consensus", "init"):
            self._emit(ev.PhaseStarted, phase, 0)
            for d in range(1, 3):
                self._emit(ev.Progress, phase, d * N // 2, N, "particles")
                if not self._sleep(phase, self.delay_s / 4):
                    return None
        body = [(0.0, 0.0, 0.0), (0.0, 0.0, 0.18), (0.0, 0.15, -0.1)]
        extra = [
            (0.12 * np.cos(a), 0.12 * np.sin(a), -0.12)
            for a in np.linspace(0, 6.28, K, endpoint=False)
        ]
        truth_vols = np.stack([_blobs(Dc, body + [extra[k]], 0.07) for k in range(K)])
        consensus = truth_vols.mean(0)
        truth = rng.integers(0, K, N)
        prev_hard = None
        n_total = self.n_oem + self.n_fem
        records: list[dict[str, Any]] = []
        freq = np.arange(1, Dc // 2 + 1) / (Dc * self.pixel_size_c_A)
        for phase, n_it in (("oem", self.n_oem), ("fem", self.n_fem)):
            self._emit(ev.PhaseStarted, phase, n_it)
            for it in range(n_it):
                g = len(records)
                if self.fail_at is not None and g == self.fail_at:
                    self._emit(ev.JobFailed, f"demo failure at iteration {g}")
                    return None
                sharp = 0.5 + 4.0 * g / max(n_total - 1, 1)
                logits = rng.normal(0, 1, (N, K)) + sharp * np.eye(K)[truth]
                r = np.exp(logits - logits.max(1, keepdims=True))
                r /= r.sum(1, keepdims=True)
                hard = r.argmax(1)
                ess = 1.0 / (r**2).sum(1)
                mix = min(g / max(n_total - 2, 1), 1.0)
                vols = (
                    (1 - mix) * consensus[None]
                    + mix * truth_vols
                    + rng.normal(0, 0.05 * (1 - 0.8 * mix), truth_vols.shape)
                ).astype(np.float32)
                fsc = 1.0 / (
                    1.0
                    + np.exp(
                        (freq[None] - (0.04 + 0.05 * mix) - 0.01 * np.arange(K)[:, None]) / 0.01
                    )
                )
                fsc_res = np.array(
                    [
                        1 / freq[np.argmax(f < 0.143)]
                        if (f < 0.143).any()
                        else 2 * self.pixel_size_c_A
                        for f in fsc
                    ]
                )
                flow = None
                if phase == "fem" and it > 0 and prev_hard is not None:
                    flow = np.zeros((K, K), np.int64)
                    np.add.at(flow, (prev_hard, hard), 1)
                pct = 100.0 * (hard != prev_hard).mean() if prev_hard is not None else np.nan
                rms = 0.2 * np.exp(-g / 3)
                remaining = (n_total - g - 1) * self.delay_s
                rec = dict(
                    phase=phase,
                    iteration=it,
                    class_mass=r.sum(0),
                    hard_counts=np.bincount(hard, minlength=K),
                    pct_switched=pct,
                    rms_change=rms,
                )
                records.append(rec)
                self._emit(
                    ev.IterationFinished,
                    phase,
                    it,
                    g,
                    1.0 if phase == "fem" else 0.4,
                    max(0.5 * (1 - g / 10), 0.0),
                    rec["class_mass"],
                    rec["hard_counts"],
                    float(pct if phase == "fem" else np.nan),
                    rms,
                    float(ess.mean()),
                    float(-1000 + 10 * g),
                    fsc_res,
                    self.delay_s,
                    remaining,
                    vols,
                    consensus=consensus,
                    ess=ess if phase == "fem" else None,
                    hard_class=hard if phase == "fem" else None,
                    flow_matrix=flow,
                    fsc=fsc,
                    fsc_freq_invA=freq,
                )
                prev_hard = hard
                if not self._sleep(phase, self.delay_s):
                    return None
        self._emit(ev.PhaseStarted, "finish", 0)
        assignments = pd.DataFrame({"uid": np.arange(N, dtype=np.uint64), "class": hard})
        for k in range(K):
            assignments[f"posterior_{k}"] = r[:, k]
        assignments["ess"], assignments["scale"] = ess, 1.0
        self.result = DemoResult(
            assignments, vols, consensus, pd.DataFrame(records), self.pixel_size_c_A
        )
        self._emit(ev.JobFinished, self.result, True, "converged (demo)")
        return self.result


def demo_job_factory(**kw: Any) -> Callable[..., DemoJob]:
    """A ``job_factory`` for :class:`~cryoclass_widgets.Dashboard` making :class:`DemoJob`\\ s
    with the given keyword arguments (``delay_s``, ``n_oem``, ``n_fem``, ``fail_at``)."""

    def factory(particles: Any, params: Any, **inputs: Any) -> DemoJob:
        return DemoJob(particles, params, **inputs, **kw)

    return factory
