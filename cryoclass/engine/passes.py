"""Passes over particles: the fused E-step + M-step accumulation, chunk by chunk.

A pass takes a set of particle indices, the current class grids and priors, and for each chunk
computes the K log-likelihoods (fused kernel), the posteriors (with class similarity / hard), and
scatters the responsibility-weighted particles into the class statistics — one read of the
particle data per pass.

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
from .problem import Problem
from .reconstruct import ClassStats

__all__ = ["PassResult", "em_pass", "consensus_pass", "stats_pass", "chunks", "hard_pass"]


def chunks(idx: Any, size: int) -> Iterator[Any]:
    for s in range(0, len(idx), size):
        yield idx[s : s + size]


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
) -> PassResult:
    """E-step on ``idx`` with the class ``grid``; when ``stats`` is given, also accumulate
    ``weight · r`` into it (M-step statistics). ``check()`` is called between chunks (raises to
    cancel)."""
    xp = get_array_module(grid)
    K = grid.shape[-1]
    n = len(idx)
    out_r = np.empty((n, K), np.float32)
    out_ll = np.empty((n, K), np.float64)
    out_ess = np.empty(n)
    out_hard = np.empty(n, np.int64)
    out_ev = np.empty(n)
    pos = 0
    for c in chunks(idx, chunk_size):
        if check is not None:
            check()
        ci = xp.asarray(c)
        A, X, C, half = prob.take(ci)
        al = alpha[ci]
        ll = loglik(grid, A, X, C, al, wsig, prob.geom)
        r, ess, hard, ev = responsibilities(ll, log_prior, beta, force_hard)
        if r_override is not None:
            r = xp.asarray(r_override(c, to_numpy(r)))
        if stats is not None:
            backproject_weighted(
                A, X, C, al, wsig, r * np.float32(weight), half, prob.geom, stats.acc
            )
            stats.mass = stats.mass + weight * to_numpy(r).astype(np.float64).sum(0)
        sl = slice(pos, pos + len(c))
        out_r[sl], out_ll[sl] = to_numpy(r), to_numpy(ll)
        out_ess[sl], out_hard[sl], out_ev[sl] = to_numpy(ess), to_numpy(hard), to_numpy(ev)
        pos += len(c)
        if progress is not None:
            progress(pos, n)
    return PassResult(np.asarray(idx), out_r, out_ll, out_ess, out_hard, out_ev)


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
    xp = get_array_module(stats.acc)
    K = stats.K
    for c, lab in zip(chunks(idx, chunk_size), chunks(labels, chunk_size)):
        if check is not None:
            check()
        ci = xp.asarray(c)
        A, X, C, half = prob.take(ci)
        r = np.zeros((len(c), K), np.float32)
        r[np.arange(len(c)), lab] = 1.0
        backproject_weighted(A, X, C, alpha[ci], wsig, xp.asarray(r), half, prob.geom, stats.acc)
        stats.mass = stats.mass + r.sum(0)


def consensus_pass(
    prob: Problem,
    wsig: Any,
    alpha: Any,
    chunk_size: int = 1024,
    check: Callable[[], None] | None = None,
) -> ClassStats:
    """Statistics of all particles in one class (the consensus reconstruction)."""
    xp = get_array_module(prob.X)
    stats = ClassStats.zeros(prob.geom, 1, xp)
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
    xp = get_array_module(prob.X)
    grid = volumes_to_grid(consensus[None], prob.geom)
    outs = [np.empty((prob.n, prob.geom.n_shells)) for _ in range(3)]
    for c in chunks(np.arange(prob.n), chunk_size):
        if check is not None:
            check()
        ci = xp.asarray(c)
        A, X, C, _ = prob.take(ci)
        for o, v in zip(outs, slice_stats(grid, A, X, C, prob.geom)):
            o[c] = to_numpy(v)
    return outs[0], outs[1], outs[2]
