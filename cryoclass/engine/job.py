"""The classification job: a stepwise engine with an event stream.

``Classification(particles, params)`` validates everything up front, then advances by
:meth:`~Classification.step` (one phase step or one EM iteration), reports :meth:`done`, and
:meth:`run`\\ s to the end — in the calling thread, or in a background thread with
:meth:`start` and a cooperative :meth:`cancel`. Subscribers receive the events of
:mod:`cryoclass.events`; with ``outdir`` the job checkpoints every iteration and writes all
outputs at the end, and ``resume=True`` continues a killed or cancelled run.

Example
-------
>>> import cryoclass
>>> ds = cryoclass.sim.simulate(n_particles=300, box=48, pixel_size_A=3.0, seed=0)  # doctest: +SKIP
>>> params = cryoclass.ClassificationParams(n_classes=3, filter_res_A=9.0)        # doctest: +SKIP
>>> result = cryoclass.Classification(ds.particles, params).run()                 # doctest: +SKIP
>>> result.class_table()                                                          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import get_device_module, to_numpy
from ..conventions import classification_box
from ..core.masks import check_mask, resample_mask
from ..core.symmetry import symmetry_operators
from ..errors import CryoclassError, InputFileError, JobCancelled, ParameterError
from ..events import (
    JobCancelledEvent,
    JobFailed,
    JobFinished,
    JobStarted,
    OutputsWritten,
    PhaseStarted,
    Progress,
)
from ..params import ClassificationParams
from .driver import Driver
from .problem import Problem, build_problem
from .result import ClassificationResult
from .state import CheckpointWriter, EMState, load_checkpoint

__all__ = ["Classification", "classify"]

Callback = Callable[[Any], None]
#: Files a classification writes at the top of OUTDIR (see :mod:`cryoclass.engine.result`).
_OUTPUT_NAME = re.compile(
    r"(particles\.(star|cs|mrcs)|selected\.(star|cs)|class_\d+\.(star|cs|mrc)|volumes\.zip"
    r"|consensus\.mrc|mask_(solvent|focus)\.mrc|iterations\.csv|params\.yaml)"
)


def _load_volume(v: Any, name: str) -> tuple[np.ndarray, float, str]:
    """A volume given as a path or as ``(array, pixel_size_A)``."""
    if isinstance(v, (str, os.PathLike)):
        from ..io.mrc import read_mrc

        arr, apix = read_mrc(v)
        return arr, apix, str(v)
    if isinstance(v, tuple) and len(v) == 2:
        return np.asarray(v[0], np.float32), float(v[1]), name
    raise ParameterError(name, "give a .mrc path or an (array, pixel_size_A) tuple")


class Classification:
    """3D classification without alignment of ``particles`` into ``params.n_classes`` classes.

    Parameters
    ----------
    particles : Particles
        Poses and CTF known (from :func:`cryoclass.read_particles` or the simulator).
    params : ClassificationParams, optional
        Defaults, updated by keyword overrides (``Classification(p, n_classes=4, filter_res_A=8)``).
    solvent_mask, focus_mask : path or (array, pixel_size_A), optional
        At the particles' box and pixel size. No solvent mask → auto from the consensus; no focus
        mask → all ones.
    init_volumes : list of paths or (array, pixel_size_A), optional
        For ``init_mode='input'``; their count must equal ``n_classes``.
    outdir : path, optional
        Where checkpoints and outputs go. An existing finished OUTDIR is refused unless
        ``overwrite``; ``resume`` continues from its checkpoint.
    command : str
        Command line recorded in ``params.yaml``.
    provenance : dict, optional
        Recorded in ``params.yaml`` (set by :func:`cryoclass.followup.reclassify`).
    project_dir : path, optional
        The RELION project directory: ``run_model.star`` gives the class maps' paths relative to
        it (default: the current directory, where RELION is started).
    client : dask.distributed.Client, optional
        Shard the particles over this cluster's workers (see :mod:`cryoclass.distributed`):
        each preprocesses its shard and computes E-steps and partial statistics; this process
        reduces them. Same result as one process up to float summation order.
    """

    def __init__(
        self,
        particles: Any,
        params: ClassificationParams | None = None,
        *,
        solvent_mask: Any = None,
        focus_mask: Any = None,
        init_volumes: Any = None,
        outdir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        command: str = "",
        provenance: dict[str, Any] | None = None,
        project_dir: str | os.PathLike | None = None,
        client: Any = None,
        **overrides: Any,
    ):
        if params is None:
            params = ClassificationParams(**overrides)
        elif overrides:
            params = params.replace(**overrides)
        self.params = p = params
        self.particles = particles
        n = len(particles)
        if p.n_classes > n:
            raise ParameterError("n_classes", f"{p.n_classes} classes for only {n} particles")
        self.xp = get_device_module(p.device)
        self.box = int(particles.box)
        self.pixel_size_A = float(particles.pixel_size_A)
        self.box_c, self.pixel_size_c_A = classification_box(
            self.box, self.pixel_size_A, p.filter_res_A
        )
        self._inputs = self._check_inputs(solvent_mask, focus_mask, init_volumes)
        self.outdir = Path(outdir) if outdir is not None else None
        self.command = command
        self.provenance = provenance
        self.project_dir = os.fspath(project_dir) if project_dir is not None else None
        self.client = client
        self._resume = resume
        if self.outdir is not None:
            CheckpointWriter.settle(self.outdir)
            self._refuse_overwriting_inputs([solvent_mask, focus_mask, *(init_volumes or [])])
            self._check_outdir(overwrite, resume)
        self._callbacks: list[Callback] = []
        self._cancel = threading.Event()
        self._gen: Any = None
        self._checkpoints = CheckpointWriter()  # written in the background (see its docstring)
        self._done = False
        self._thread: threading.Thread | None = None
        self.result: ClassificationResult | None = None
        self.error: BaseException | None = None
        self.state: EMState | None = None
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, solvent: Any, focus: Any, init_volumes: Any) -> dict[str, Any]:
        p, Dc = self.params, self.box_c
        inputs: dict[str, Any] = {"density_scale": (Dc / self.box) ** 3}
        for key, v in (("solvent_mask", solvent), ("focus_mask", focus)):
            if v is None:
                inputs[key] = None
                continue
            arr, apix, path = _load_volume(v, key)
            m = check_mask(arr, self.box, self.pixel_size_A, name=path, mask_pixel_size_A=apix)
            inputs[key + "_full"] = np.asarray(m, np.float32)
            inputs[key] = self.xp.asarray(np.clip(to_numpy(resample_mask(m, Dc)), 0, 1))
        if p.init_mode == "input":
            if not init_volumes:
                raise ParameterError("init_volumes", "init_mode 'input' needs initial volumes")
            if len(init_volumes) != p.n_classes:
                raise ParameterError(
                    "init_volumes",
                    f"{len(init_volumes)} volumes given for n_classes = "
                    f"{p.n_classes}; the counts must be equal",
                )
            inputs["init_volumes"] = [
                _load_volume(v, f"init_volumes[{i}]") for i, v in enumerate(init_volumes)
            ]
        elif init_volumes:
            raise ParameterError("init_volumes", "given, but init_mode is not 'input'")
        ops = symmetry_operators(p.symmetry)
        inputs["sym_ops"] = ops if len(ops) > 1 else None
        return inputs

    def _fingerprint(self) -> str:
        meta = self.particles.meta
        d = self.params.to_dict()
        for k in ("cache_dir", "memory_limit_GB"):  # where the data live, not what is computed
            d.pop(k, None)
        h = hashlib.sha256(json.dumps(d, sort_keys=True).encode())
        h.update(np.ascontiguousarray(meta["uid"].to_numpy()).tobytes())
        return h.hexdigest()[:16]

    def _check_outdir(self, overwrite: bool, resume: bool) -> None:
        d = self.outdir
        assert d is not None
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / ".cryoclass_write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise InputFileError(d, f"output directory is not writable ({e.strerror})") from None
        finished = (d / "params.yaml").exists()
        has_ckpt = (d / "checkpoint" / "state.json").exists()
        if resume:
            if not has_ckpt and not finished:
                raise InputFileError(d, "nothing to resume: no checkpoint in this directory")
            return
        if (finished or has_ckpt) and not overwrite:
            raise InputFileError(
                d,
                "already holds a classification; use resume to continue it "
                "or overwrite to replace it",
            )

    def _refuse_overwriting_inputs(self, extra: list[Any]) -> None:
        """Inputs are never modified: refuse an OUTDIR where an output would replace one."""
        d = Path(self.outdir or ".").resolve()
        files = [str(getattr(self.particles, "source_path", "") or "")]
        files += np.unique(self.particles.meta["image_path"].astype(str)).tolist()
        files += [os.fspath(v) for v in extra if isinstance(v, (str, os.PathLike))]
        for name in files:
            f = Path(name).resolve() if name else None
            if f is None or not f.is_relative_to(d):
                continue
            rel = f.relative_to(d).parts
            if rel[0] in ("diagnostics", "checkpoint") or _OUTPUT_NAME.fullmatch(rel[0]):
                raise InputFileError(
                    self.outdir,
                    f"its outputs would replace the input file {f.name}; "
                    "choose another output directory",
                )

    # ------------------------------------------------------------------ events
    def subscribe(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` for every event (from the job's thread)."""
        self._callbacks.append(callback)
        return callback

    def unsubscribe(self, callback: Callback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def _emit(self, event: Any) -> None:
        for cb in list(self._callbacks):
            cb(event)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("cancelled")

    def cancel(self) -> None:
        """Ask the job to stop at the next chunk boundary (idempotent, any thread)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # ------------------------------------------------------------------ stepping
    def _algorithm(self) -> Any:
        p = self.params
        now = lambda: time.perf_counter() - self._t0  # noqa: E731
        self._emit(
            JobStarted(
                n_particles=len(self.particles),
                n_classes=p.n_classes,
                box=self.box,
                pixel_size_A=self.pixel_size_A,
                box_c=self.box_c,
                pixel_size_c_A=self.pixel_size_c_A,
                params=p,
                compiling_kernels=self._kernels_to_compile(),
                time_s=now(),
            )
        )
        state, fingerprint = EMState(), self._fingerprint()
        if self._resume and self.outdir is not None:
            loaded = load_checkpoint(self.outdir, self.xp)
            if loaded is not None:
                if loaded[1] != fingerprint:
                    raise InputFileError(
                        self.outdir,
                        "the checkpoint was made with other parameters or particles; cannot resume",
                    )
                state = loaded[0]
        self.state = state
        self._emit(PhaseStarted(phase="preprocess", time_s=now()))

        def progress(done: int, total: int) -> None:
            self._check_cancel()
            self._emit(Progress(phase="preprocess", done=done, total=total, time_s=now()))

        prob = self._make_problem(progress)
        self.problem = prob
        yield
        outdir = self.outdir

        def save(st: EMState) -> None:
            if outdir is None:
                return
            self._checkpoints.submit(outdir, st, fingerprint)
            if p.output_every_fem and st.phase == "fem" and st.iteration > 0 and st.r is not None:
                d = outdir / f"fem_iter_{st.iteration:03d}"
                files = self._make_result(prob, st, reorder=False).write(d, per_class=False)
                self._emit(
                    OutputsWritten(
                        outdir=str(d), files=tuple(map(str, files)), final=False, time_s=now()
                    )
                )

        driver = Driver(
            prob, p, self.xp, state, self._emit, self._check_cancel, save, self._inputs, self._t0
        )
        try:
            yield from driver.run()
        finally:
            if prob.store.remote:  # free the shards on the Dask workers
                prob.store.executor.close()
            self._checkpoints.wait()  # the last checkpoint is on disk before anything else
        self._finish(prob, state, now)

    def _kernels_to_compile(self) -> bool:
        """Whether this CPU job compiles Numba kernels first (none cached for this CPU)."""
        if self.params.device != "cpu" or self.client is not None:
            return False  # the GPU runs CuPy kernels; Dask workers compile on their own
        from ..core.jit import uncompiled_kernels

        return bool(uncompiled_kernels())

    def _cache_dir(self) -> str:
        """``cache_dir``, or OUTDIR/particle_cache when the particles exceed
        ``memory_limit_GB`` and only an output directory is given."""
        p = self.params
        if p.cache_dir or p.memory_limit_GB <= 0 or self.outdir is None:
            return p.cache_dir
        from ..core.slices import SliceGeometry

        r_max = min(self.box * self.pixel_size_A / p.filter_res_A, self.box_c / 2)
        M = SliceGeometry(self.box_c, p.pad, r_max=r_max).M
        need_GB = len(self.particles) * M * 12 / 1e9
        return str(self.outdir / "particle_cache") if need_GB > p.memory_limit_GB else ""

    def _make_problem(self, progress: Callable[[int, int], None]) -> Problem:
        p = self.params
        cache = self._cache_dir()
        if self.client is not None:
            from ..distributed import build_sharded_problem

            return build_sharded_problem(
                self.client, self.particles, p.filter_res_A, p.pad, p.chunk_size, p.device,
                cache, progress,
            )  # fmt: skip
        return build_problem(
            self.particles, p.filter_res_A, p.pad, p.chunk_size, self.xp, progress=progress,
            cache_dir=cache or None, memory_limit_GB=p.memory_limit_GB,
        )  # fmt: skip

    def _finish(self, prob: Problem, st: EMState, now: Callable[[], float]) -> None:
        self._emit(PhaseStarted(phase="finish", time_s=now()))
        self.result = self._make_result(prob, st, self.params.reorder_by_size)
        if self.outdir is not None:
            files = self.result.write(self.outdir)
            self._emit(
                OutputsWritten(
                    outdir=str(self.outdir), files=tuple(map(str, files)), final=True, time_s=now()
                )
            )
        self._emit(
            JobFinished(result=self.result, converged=st.converged, reason=st.reason, time_s=now())
        )

    def _make_result(self, prob: Problem, st: EMState, reorder: bool) -> ClassificationResult:
        """A result from the current state (classes reordered by size when ``reorder``)."""
        p = self.params
        order = np.arange(p.n_classes)
        if reorder:
            order = np.argsort(-st.r.sum(0), kind="stable")
        dens = self._inputs["density_scale"]
        records = st.records
        if reorder:  # relabel per-class record fields consistently
            records = [_reorder_record(r, order) for r in records]
        return ClassificationResult(
            params=p,
            particles=self.particles,
            posteriors=st.r[:, order],
            ess=st.ess,
            scale=np.asarray(st.alpha, np.float32),
            volumes=st.volumes[order] * dens,
            consensus=st.consensus * dens,
            solvent_mask=st.solvent_mask,
            focus_mask=st.focus_mask,
            fsc=st.fsc[order],
            consensus_fsc=st.consensus_fsc,
            fsc_freq_invA=prob.shell_frequencies_invA(),
            pixel_size_A=self.pixel_size_c_A,
            box_c=self.box_c,
            records=records,
            converged=st.converged,
            reason=st.reason,
            log=list(st.log),
            command=self.command,
            provenance=self.provenance,
            project_dir=self.project_dir,
        )

    def step(self) -> bool:
        """Advance by one phase step or EM iteration. Returns True while there is more to do."""
        if self._done:
            return False
        if self._gen is None:
            self._gen = self._algorithm()
        try:
            self._check_cancel()
            next(self._gen)
            return True
        except StopIteration:
            self._done = True
        except JobCancelled:
            self._done = True
            self._checkpoints.wait()  # cancelled between steps: let the last write finish
            phase = self.state.phase if self.state is not None else "preprocess"
            self._emit(JobCancelledEvent(phase=phase, time_s=time.perf_counter() - self._t0))
        except BaseException as e:
            self._done = True
            self.error = e
            try:
                self._checkpoints.wait()
            except BaseException:  # noqa: BLE001 - the first error is the one reported
                pass
            self._emit(JobFailed(error=str(e), time_s=time.perf_counter() - self._t0))
            raise
        return False

    def done(self) -> bool:
        return self._done

    def run(self, callbacks: Iterable[Callback] = ()) -> ClassificationResult | None:
        """Run to the end in the calling thread; returns the result (None if cancelled)."""
        for cb in callbacks:
            self.subscribe(cb)
        while self.step():
            pass
        return self.result

    def start(self, callbacks: Iterable[Callback] = ()) -> threading.Thread:
        """Run in a background (daemon) thread; errors are kept in ``self.error`` and reported as
        a :class:`~cryoclass.events.JobFailed` event."""
        if self._thread is not None:
            raise CryoclassError("this job was already started")
        for cb in callbacks:
            self.subscribe(cb)

        def target() -> None:
            try:
                while self.step():
                    pass
            except BaseException:  # noqa: BLE001 - reported via JobFailed and self.error
                pass

        self._thread = threading.Thread(target=target, name="cryoclass-job", daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background run; True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return self._done


def _reorder_record(r: dict[str, Any], order: np.ndarray) -> dict[str, Any]:
    out = dict(r)
    for prefix in ("mass_", "count_", "fsc_res_A_"):
        for new, old in enumerate(order):
            out[f"{prefix}{new}"] = r.get(f"{prefix}{old}")
    if r.get("flow"):
        m = np.asarray(r["flow"])[np.ix_(order, order)]
        out["flow"] = m.tolist()
    return out


def classify(particles: Any, **kwargs: Any) -> ClassificationResult | None:
    """One call: ``classify(particles, n_classes=3, filter_res_A=8)`` → result."""
    return Classification(particles, **kwargs).run()
