"""Passes over particles: the fused E-step + M-step accumulation, chunk by chunk.

A pass takes a set of particle indices, the current class grids and priors, and for each chunk
computes the K log-likelihoods (fused kernel), the posteriors (with class similarity / hard), and
scatters the responsibility-weighted particles into the class statistics — one read of the
particle data per pass. In-memory CPU E-step passes visit the particles in viewing-direction
order (:func:`view_order`: consecutive slices then hit the same cached voxels of the class
grids); per-particle outputs come back in the caller's order.

Device residency: on the GPU (``xp = cupy``) the particle rows, class grid, responsibilities and
per-particle outputs stay on the device for the whole pass; per-particle outputs are copied to the
host once, at the end of the pass. A problem whose store is remote (Dask shards, see
:mod:`cryoclass.distributed`) is handed to its executor, which runs the same functions on the
workers and reduces the partial statistics in a fixed order.

Example
-------
>>> from cryoclass.engine.passes import chunks
>>> [len(c) for c in chunks(list(range(10)), 4)]
[4, 4, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_array_module, to_numpy
from ..core.slices import backproject_weighted, loglik, slice_stats, volumes_to_grid
from .em import responsibilities
from .problem import Problem, row_selector, view_order
from .reconstruct import ClassStats
from .store import ArrayStore

__all__ = [
    "PassResult",
    "em_pass",
    "consensus_pass",
    "stats_pass",
    "chunks",
    "hard_pass",
    "power_pass",
]


def _remote(prob: Problem) -> Any:
    """The executor of a problem whose rows live elsewhere (None for local problems)."""
    return prob.store.executor if prob.store.remote else None


def chunks(idx: Any, size: int) -> Iterator[Any]:
    for s in range(0, len(idx), size):
        yield idx[s : s + size]


def _processing_order(prob: Problem, idx: np.ndarray) -> np.ndarray | None:
    """Positions into ``idx`` in the order a pass should process them (see :func:`view_order`),
    or None to keep ``idx``'s order: on-disk, remote and GPU stores read rows in index order
    (the disk cache streams sorted rows; the GPU's caches were not measured). An in-memory
    store that keeps its rows in viewing-direction order is read in that stored order (a pass
    over all particles then reads contiguous views; a subset, the same order's subsequence).
    Used by the soft passes (E-step + back-projection, the consensus statistics);
    :func:`hard_pass` reads in stored order."""
    if len(idx) < 2 or prob.xp is not np or not isinstance(prob.store, ArrayStore):
        return None
    if prob.store.order is not None:
        return _in_stored_order(prob, np.asarray(idx))
    return view_order(prob.A[np.asarray(idx)])


def _in_stored_order(prob: Problem, idx: np.ndarray) -> np.ndarray:
    """Positions into ``idx`` that sort it by where the store keeps the rows (an in-memory store
    keeps them in viewing-direction order, :func:`~cryoclass.engine.problem.build_problem`), or
    ``arange`` where rows are kept in particle order: a pass over all particles then reads
    contiguous rows (views), and any subset reads them with the viewing-direction locality."""
    st = prob.store
    if not isinstance(st, ArrayStore) or st.order is None or len(idx) < 2:
        return np.arange(len(idx))
    return np.argsort(st.position(idx), kind="stable")


def _in_processing_order(prob: Problem, idx: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(idx in processing order, the positions used)``: see :func:`_processing_order`."""
    idx = np.asarray(idx)
    order = _processing_order(prob, idx)
    return (idx if order is None else idx[order]), order


@dataclass
class PassResult:
    """Per-particle outputs of an E-step pass over ``idx`` (NumPy arrays)."""

    idx: np.ndarray
    r: np.ndarray  # (n, K) float32
    ll: np.ndarray  # (n, K) float64
    ess: np.ndarray
    hard: np.ndarray
    log_evidence: np.ndarray


def em_pass(
    prob: Problem,
    idx: np.ndarray,
    grid: Any,
    log_prior: np.ndarray,
    wsig: Any,
    alpha: Any,
    *,
    beta: float,
    force_hard: bool,
    stats: ClassStats | None,
    weight: float = 1.0,
    chunk_size: int = 1024,
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    r_override: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ll_known: np.ndarray | None = None,
) -> PassResult:
    """E-step on ``idx`` with the class ``grid``; when ``stats`` is given, also accumulate
    ``weight · r`` into it (M-step statistics). ``check()`` is called between chunks (raises to
    cancel). ``ll_known``: the ``(len(idx), K)`` log-likelihoods of ``idx`` (in its order)
    under this ``grid``, ``alpha`` and ``wsig``, from an earlier pass: used instead of
    recomputing them (the same numbers; a distributed problem recomputes them)."""
    ex = _remote(prob)
    if ex is not None:
        if r_override is not None:
            raise NotImplementedError("r_override is not supported with a distributed problem")
        return ex.em_pass(
            prob, idx, grid, log_prior, wsig, alpha, beta=beta, force_hard=force_hard,
            stats=stats, weight=weight, chunk_size=chunk_size, check=check, progress=progress,
        )  # fmt: skip
    xp = get_array_module(grid)
    K = grid.shape[-1]
    n = len(idx)
    out_r = xp.empty((n, K), np.float32)
    out_ll = xp.empty((n, K), np.float64)
    out_ess = xp.empty(n, np.float64)
    out_hard = xp.empty(n, np.int64)
    out_ev = xp.empty(n, np.float64)
    mass: Any = None if stats is None else xp.asarray(stats.mass, dtype=np.float64)
    lp = xp.asarray(log_prior, dtype=np.float64)
    pos = 0
    todo, order = _in_processing_order(prob, idx)
    for c in chunks(todo, chunk_size):
        if check is not None:
            check()
        ci = row_selector(c, xp)
        A, X, C, half = prob.take(ci)
        al = alpha[ci]
        # this chunk's positions in the caller's order
        rows: Any = slice(pos, pos + len(c)) if order is None else order[pos : pos + len(c)]
        sl: Any = rows if order is None else xp.asarray(rows)
        if ll_known is None:
            ll = loglik(grid, A, X, C, al, wsig, prob.geom)
        else:
            ll = xp.asarray(ll_known[rows])
        r, ess, hard, ev = responsibilities(ll, lp, beta, force_hard)
        if r_override is not None:
            r = xp.asarray(r_override(c, to_numpy(r)))
        if stats is not None:
            backproject_weighted(
                A, X, C, al, wsig, r * np.float32(weight), half, prob.geom, stats.acc
            )
            mass = mass + weight * r.astype(np.float64).sum(0)
        out_r[sl], out_ll[sl], out_ess[sl], out_hard[sl], out_ev[sl] = r, ll, ess, hard, ev
        pos += len(c)
        if progress is not None:
            progress(pos, n)
    if stats is not None:
        stats.mass = to_numpy(mass)
    return PassResult(
        np.asarray(idx),
        to_numpy(out_r),
        to_numpy(out_ll),
        to_numpy(out_ess),
        to_numpy(out_hard),
        to_numpy(out_ev),
    )


def hard_pass(
    prob: Problem,
    idx: np.ndarray,
    labels: np.ndarray,
    stats: ClassStats,
    wsig: Any,
    alpha: Any,
    chunk_size: int = 1024,
    check: Callable[[], None] | None = None,
) -> None:
    """Accumulate particles ``idx`` with one-hot responsibilities ``labels`` (class per particle)
    into ``stats`` (used by initialisation, the consensus and class re-seeding)."""
    ex = _remote(prob)
    if ex is not None:
        ex.hard_pass(prob, idx, labels, stats, wsig, alpha, chunk_size, check)
        return
    xp = get_array_module(stats.acc)
    K = stats.K
    labels = np.asarray(labels, np.int64)
    # in the order the rows are stored (file order unless the store keeps its own): reading
    # rows in place beats re-sorting them (one class per particle touches a third, K = 3, of
    # the grid bytes of a soft pass; gathered into viewing-direction order the consensus took
    # 286 vs 263 ms at 48³, N = 20 000, and the PCA init's one-hot passes 55 vs 44 ms at 20³)
    idx = np.asarray(idx)
    o = _in_stored_order(prob, idx)
    idx, labels = idx[o], labels[o]
    for c, lab in zip(chunks(idx, chunk_size), chunks(labels, chunk_size)):
        if check is not None:
            check()
        ci = row_selector(c, xp)
        A, X, C, half = prob.take(ci)
        r = xp.zeros((len(c), K), np.float32)
        r[xp.arange(len(c)), xp.asarray(lab)] = 1.0
        backproject_weighted(A, X, C, alpha[ci], wsig, r, half, prob.geom, stats.acc)
        stats.mass = stats.mass + np.bincount(lab, minlength=K).astype(np.float64)


def consensus_pass(
    prob: Problem,
    wsig: Any,
    alpha: Any,
    chunk_size: int = 1024,
    check: Callable[[], None] | None = None,
) -> ClassStats:
    """Statistics of all particles in one class (the consensus reconstruction)."""
    stats = ClassStats.zeros(prob.geom, 1, prob.xp)
    idx = np.arange(prob.n)
    hard_pass(prob, idx, np.zeros(prob.n, np.int64), stats, wsig, alpha, chunk_size, check)
    return stats


def stats_pass(
    prob: Problem,
    consensus: Any,
    chunk_size: int = 1024,
    check: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-particle, per-shell sums against the consensus volume (see
    :func:`cryoclass.core.slices.slice_stats`), for the noise model and per-particle scale."""
    ex = _remote(prob)
    if ex is not None:
        return ex.stats_pass(prob, consensus, chunk_size, check)
    grid = volumes_to_grid(consensus[None], prob.geom)
    outs = [np.empty((prob.n, prob.geom.n_shells)) for _ in range(3)]
    todo, _ = _in_processing_order(prob, np.arange(prob.n))
    for c in chunks(todo, chunk_size):
        if check is not None:
            check()
        A, X, C, _ = prob.take(c)
        for o, v in zip(outs, slice_stats(grid, A, X, C, prob.geom)):
            o[c] = to_numpy(v)
    return outs[0], outs[1], outs[2]


def power_pass(
    prob: Problem, chunk_size: int = 1024, check: Callable[[], None] | None = None
) -> np.ndarray:
    """Σ over particles of the Hermitian-weighted data power ``w·|X|²`` per shell, ``(S,)``
    float64 (the initial noise model)."""
    ex = _remote(prob)
    if ex is not None:
        return np.asarray(ex.power_pass(prob, chunk_size, check))
    xp, g = prob.xp, prob.geom
    S = g.n_shells
    w = xp.asarray(g.weight)[None, :]
    sh = xp.asarray(g.shell)
    power = xp.zeros(S, np.float64)
    todo = np.arange(prob.n)[_in_stored_order(prob, np.arange(prob.n))]  # stored rows, in order
    for c in chunks(todo, chunk_size):
        if check is not None:
            check()
        _, X, _, _ = prob.take(c)
        pw = ((X.real**2 + X.imag**2) * w).sum(0)
        power += xp.bincount(sh, weights=pw, minlength=S)
    return to_numpy(power)
