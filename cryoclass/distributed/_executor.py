"""Dask executor: particles sharded over workers, partial sufficient statistics reduced in order.

The driver keeps the per-particle bookkeeping (poses, half-sets, scales, posteriors) and the class
statistics; each worker holds the preprocessed rows of one contiguous shard of particles (built on
the worker from the shard's :class:`~cryoclass.io.particles.Particles`, optionally through the
on-disk particle cache) as a Dask result pinned to that worker. Every pass sends the class grid,
priors, noise weights and the shard's scales, runs the ordinary single-process pass
(:mod:`cryoclass.engine.passes`) on the shard into a zeroed accumulator and returns it; the driver
adds the shards' accumulators **in shard order**, so a run is deterministic for a given number of
shards and equals the single-process run up to float32 summation order.

Example
-------
>>> from cryoclass.distributed._executor import shard_bounds
>>> shard_bounds(10, 3).tolist()
[0, 3, 6, 10]
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import get_device_module, to_device, to_numpy
from ..engine.problem import Problem, build_problem
from ..engine.store import ParticleStore

__all__ = ["DaskExecutor", "ShardedStore", "shard_bounds", "build_sharded_problem"]


def shard_bounds(n: int, n_shards: int) -> np.ndarray:
    """Boundaries ``(n_shards + 1,)`` of contiguous, nearly equal shards of ``n`` particles."""
    return (np.arange(n_shards + 1) * n) // max(n_shards, 1)


class ShardedStore(ParticleStore):
    """Stand-in store of a problem whose rows live on Dask workers (``remote = True``): the
    passes hand such a problem to ``executor``. ``cols`` selects disc columns (low-res views)."""

    remote = True

    def __init__(self, executor: DaskExecutor, n: int, M: int, cols: np.ndarray | None = None):
        self.executor, self.n, self.M, self.cols = executor, n, M, cols
        self.xp = executor.xp

    def take(self, idx: Any) -> tuple[Any, Any]:
        raise RuntimeError("the particle rows of a distributed problem live on the Dask workers")

    def rows(self, start: int, stop: int) -> tuple[Any, Any]:
        return self.take(np.arange(start, stop))

    def columns(self, cols: np.ndarray) -> ParticleStore:
        c = np.asarray(cols, np.int64)
        return ShardedStore(self.executor, self.n, c.size, c if self.cols is None else self.cols[c])


# --------------------------------------------------------------------------- worker side
def _shard_particles(particles: Any, lo: int, hi: int) -> Any:
    """The particles ``lo:hi`` in a compact, picklable form (in-memory images are copied; stacks
    on disk travel as file names and indices)."""
    from ..io.particles import Particles
    from ..io.source import ArrayImageSource, stack_infos

    sub = particles.subset(np.arange(lo, hi))
    images = sub.images
    if not stack_infos(images):
        images = ArrayImageSource(images.read(np.arange(hi - lo)))
    return Particles(sub.meta, images, sub.source_path, sub.source_format)


def _build_shard(
    particles: Any,
    filter_res_A: float,
    pad: int,
    chunk_size: int,
    device: str,
    cache_dir: str,
) -> Problem:
    xp = get_device_module(device)
    return build_problem(particles, filter_res_A, pad, chunk_size, xp, cache_dir=cache_dir or None)


def _view(local: Problem, view: dict[str, Any]) -> Problem:
    """The worker's problem seen through the driver's view (low-resolution column subset)."""
    if view["cols"] is None:
        return local
    return dataclasses.replace(
        local,
        geom=view["geom"],
        store=local.store.columns(view["cols"]),
        box_c=view["box_c"],
        pixel_size_c_A=view["pixel_size_c_A"],
        filter_res_A=view["filter_res_A"],
    )


def _em_task(local: Problem, view: dict[str, Any], payload: dict[str, Any], li: np.ndarray,
             alpha: np.ndarray, with_stats: bool) -> dict[str, Any]:  # fmt: skip
    from ..engine.passes import em_pass
    from ..engine.reconstruct import ClassStats

    prob = _view(local, view)
    xp = prob.xp
    grid = to_device(payload["grid"], xp)
    stats = ClassStats.zeros(prob.geom, grid.shape[-1], xp) if with_stats else None
    res = em_pass(
        prob, li, grid, payload["log_prior"], to_device(payload["wsig"], xp),
        to_device(alpha, xp), beta=payload["beta"], force_hard=payload["force_hard"],
        stats=stats, weight=payload["weight"], chunk_size=payload["chunk_size"],
    )  # fmt: skip
    out: dict[str, Any] = {"res": res}
    if stats is not None:
        out["acc"], out["mass"] = to_numpy(stats.acc), np.asarray(stats.mass)
    return out


def _hard_task(local: Problem, view: dict[str, Any], payload: dict[str, Any], li: np.ndarray,
               labels: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    from ..engine.passes import hard_pass
    from ..engine.reconstruct import ClassStats

    prob = _view(local, view)
    xp = prob.xp
    stats = ClassStats.zeros(prob.geom, payload["K"], xp)
    hard_pass(prob, li, labels, stats, to_device(payload["wsig"], xp), to_device(alpha, xp),
              payload["chunk_size"])  # fmt: skip
    return to_numpy(stats.acc), np.asarray(stats.mass)


def _stats_task(local: Problem, view: dict[str, Any], consensus: np.ndarray,
                chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    from ..engine.passes import stats_pass

    prob = _view(local, view)
    return stats_pass(prob, to_device(consensus, prob.xp), chunk_size)


def _power_task(local: Problem, view: dict[str, Any], chunk_size: int) -> np.ndarray:
    from ..engine.passes import power_pass

    return power_pass(_view(local, view), chunk_size)


# --------------------------------------------------------------------------- driver side
class DaskExecutor:
    """Shards of particles on the workers of ``client`` and the passes over them.

    Parameters
    ----------
    client : dask.distributed.Client
    n_shards : int, optional
        Default: one shard per worker (workers sorted by address; shard ``s`` pinned to worker
        ``s mod n_workers``). The result depends on the number of shards only through float
        summation order.
    """

    def __init__(self, client: Any, device: str = "cpu", n_shards: int | None = None):
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise RuntimeError("the Dask cluster has no workers")
        self.client, self.workers = client, workers
        self.n_shards = int(n_shards or len(workers))
        self.device = device
        self.xp = get_device_module(device)
        self.shards: list[Any] = []
        self.bounds = np.zeros(1, np.int64)
        self._tag = uuid.uuid4().hex[:8]

    def _worker(self, s: int) -> list[str]:
        return [self.workers[s % len(self.workers)]]

    def build(
        self,
        particles: Any,
        filter_res_A: float,
        pad: int,
        chunk_size: int,
        cache_dir: str = "",
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Preprocess the shards on their workers (through the cache when ``cache_dir``)."""
        from dask.distributed import as_completed

        N = len(particles)
        self.bounds = shard_bounds(N, self.n_shards)
        futs = []
        for s in range(self.n_shards):
            lo, hi = int(self.bounds[s]), int(self.bounds[s + 1])
            futs.append(
                self.client.submit(
                    _build_shard,
                    _shard_particles(particles, lo, hi),
                    filter_res_A,
                    pad,
                    chunk_size,
                    self.device,
                    cache_dir,
                    workers=self._worker(s),
                    allow_other_workers=False,
                    pure=False,
                    key=f"cryoclass-shard-{self._tag}-{s}",
                )  # fmt: skip
            )
        done = 0
        for f in as_completed(futs):
            f.result()  # raise the worker's error here
            s = futs.index(f)
            done += int(self.bounds[s + 1] - self.bounds[s])
            if progress is not None:
                progress(done, N)
        self.shards = futs

    def close(self) -> None:
        """Release the shards' memory on the workers."""
        for f in self.shards:
            f.release()
        self.shards = []

    # ------------------------------------------------------------------ helpers
    def _submit(self, s: int, task: Callable[..., Any], *args: Any) -> Any:
        """Run ``task(shard s, *args)`` on the worker that holds shard ``s`` (never elsewhere)."""
        return self.client.submit(
            task, self.shards[s], *args, workers=self._worker(s), allow_other_workers=False,
            pure=False,
        )  # fmt: skip

    def _view(self, prob: Problem) -> dict[str, Any]:
        return {
            "cols": getattr(prob.store, "cols", None),
            "geom": prob.geom,
            "box_c": prob.box_c,
            "pixel_size_c_A": prob.pixel_size_c_A,
            "filter_res_A": prob.filter_res_A,
        }

    def _scatter(self, obj: Any, broadcast: bool = True, hash: bool = False) -> Any:
        """One future for ``obj`` on every worker (a dict is sent as one object: scattering a
        dict directly would use its keys as Dask keys, shared between passes)."""
        return self.client.scatter([obj], broadcast=broadcast, hash=hash)[0]

    def _split(self, idx: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(shard, positions in idx)`` for every shard that owns some of ``idx``."""
        idx = np.asarray(idx, np.int64)
        shard_of = np.searchsorted(self.bounds, idx, side="right") - 1
        out = []
        for s in range(self.n_shards):
            pos = np.flatnonzero(shard_of == s)
            if pos.size:
                out.append((s, pos))
        return out

    def _gather(
        self,
        futs: list[Any],
        check: Callable[[], None] | None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """Results in submission (shard) order; ``check`` and ``progress`` between arrivals."""
        from dask.distributed import as_completed

        results: list[Any] = [None] * len(futs)
        where = {f.key: i for i, f in enumerate(futs)}
        try:
            for f in as_completed(futs):
                results[where[f.key]] = f.result()
                if progress is not None:
                    progress(where[f.key])
                if check is not None:
                    check()
        except BaseException:
            for f in futs:
                f.cancel()
            raise
        return results

    # ------------------------------------------------------------------ passes
    def em_pass(
        self, prob: Problem, idx: np.ndarray, grid: Any, log_prior: Any, wsig: Any, alpha: Any,
        *, beta: float, force_hard: bool, stats: Any, weight: float = 1.0,
        chunk_size: int = 1024, check: Callable[[], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Any:  # fmt: skip
        from ..engine.passes import PassResult

        if check is not None:
            check()
        idx = np.asarray(idx, np.int64)
        al = to_numpy(alpha)
        payload = self._scatter(
            {
                "grid": to_numpy(grid), "log_prior": np.asarray(to_numpy(log_prior)),
                "wsig": to_numpy(wsig), "beta": beta, "force_hard": force_hard,
                "weight": weight, "chunk_size": chunk_size,
            },
            broadcast=True, hash=False,
        )  # fmt: skip
        parts = self._split(idx)
        view = self._view(prob)
        futs = [
            self._submit(
                s,
                _em_task,
                view,
                payload,
                idx[pos] - self.bounds[s],
                al[self.bounds[s] : self.bounds[s + 1]],
                stats is not None,
            )  # fmt: skip
            for s, pos in parts
        ]
        done = [0]

        def prog(i: int) -> None:
            done[0] += parts[i][1].size
            if progress is not None:
                progress(done[0], idx.size)

        outs = self._gather(futs, check, prog)
        K = grid.shape[-1]
        n = idx.size
        r, ll = np.empty((n, K), np.float32), np.empty((n, K), np.float64)
        ess, hard, ev = np.empty(n), np.empty(n, np.int64), np.empty(n)
        for (_, pos), o in zip(parts, outs):
            res = o["res"]
            r[pos], ll[pos], ess[pos], hard[pos], ev[pos] = (
                res.r, res.ll, res.ess, res.hard, res.log_evidence,
            )  # fmt: skip
        if stats is not None:
            for o in outs:  # fixed (shard) order: deterministic
                stats.acc += self.xp.asarray(o["acc"])
                stats.mass = stats.mass + o["mass"]
        return PassResult(idx, r, ll, ess, hard, ev)

    def hard_pass(
        self, prob: Problem, idx: np.ndarray, labels: np.ndarray, stats: Any, wsig: Any,
        alpha: Any, chunk_size: int = 1024, check: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        if check is not None:
            check()
        idx, labels = np.asarray(idx, np.int64), np.asarray(labels, np.int64)
        al = to_numpy(alpha)
        payload = self._scatter(
            {"wsig": to_numpy(wsig), "K": stats.K, "chunk_size": chunk_size},
            broadcast=True, hash=False,
        )  # fmt: skip
        view = self._view(prob)
        futs = [
            self._submit(
                s,
                _hard_task,
                view,
                payload,
                idx[pos] - self.bounds[s],
                labels[pos],
                al[self.bounds[s] : self.bounds[s + 1]],
            )  # fmt: skip
            for s, pos in self._split(idx)
        ]
        for acc, mass in self._gather(futs, check):
            stats.acc += self.xp.asarray(acc)
            stats.mass = stats.mass + mass

    def stats_pass(
        self, prob: Problem, consensus: Any, chunk_size: int = 1024,
        check: Callable[[], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        vol = self._scatter(to_numpy(consensus), broadcast=True, hash=False)
        view = self._view(prob)
        futs = [self._submit(s, _stats_task, view, vol, chunk_size) for s in range(self.n_shards)]
        outs = self._gather(futs, check)
        a, b, c = (np.concatenate([o[j] for o in outs]) for j in range(3))
        return a, b, c

    def power_pass(
        self, prob: Problem, chunk_size: int = 1024, check: Callable[[], None] | None = None
    ) -> np.ndarray:
        view = self._view(prob)
        futs = [self._submit(s, _power_task, view, chunk_size) for s in range(self.n_shards)]
        total = np.zeros(prob.geom.n_shells)
        for p in self._gather(futs, check):
            total = total + p
        return total


def build_sharded_problem(
    client: Any,
    particles: Any,
    filter_res_A: float,
    pad: int = 2,
    chunk_size: int = 1024,
    device: str = "cpu",
    cache_dir: str = "",
    progress: Callable[[int, int], None] | None = None,
    n_shards: int | None = None,
) -> Problem:
    """A :class:`~cryoclass.engine.problem.Problem` whose particle rows are sharded over the
    workers of ``client``; the engine's passes run on the shards (see module docstring)."""
    from ..conventions import classification_box
    from ..core.slices import SliceGeometry

    ex = DaskExecutor(client, device, n_shards)
    ex.build(particles, filter_res_A, pad, chunk_size, cache_dir, progress)
    D, apix = int(particles.box), float(particles.pixel_size_A)
    Dc, apix_c = classification_box(D, apix, filter_res_A)
    geom = SliceGeometry(Dc, pad, r_max=min(D * apix / filter_res_A, Dc / 2))
    xp = ex.xp
    meta = particles.meta
    return Problem(
        geom=geom,
        store=ShardedStore(ex, len(particles), geom.M),
        A=to_device(particles.rotations.astype(np.float32), xp),
        half=to_device(meta["half_set"].to_numpy(np.int64) % 2, xp),
        scale_input=to_device(meta["scale"].to_numpy(np.float32), xp),
        box=D,
        pixel_size_A=apix,
        box_c=Dc,
        pixel_size_c_A=apix_c,
        filter_res_A=float(filter_res_A),
    )
