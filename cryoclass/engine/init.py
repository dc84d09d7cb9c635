"""Initial class volumes: 'simple' (random-subset reconstructions), 'pca' (PCA + k-means of many
random-subset reconstructions) — both at the initial resolution's small box, with restarts
scored by a short low-resolution EM — and 'input' (given volumes at the classification box).

Example
-------
>>> from cryoclass.engine.init import subset_labels
>>> lab, idx = subset_labels(n=10, n_sets=2, per_set=3, seed=0)
>>> sorted(set(lab.tolist())), len(idx)
([0, 1], 6)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_array_module, to_device, to_numpy
from ..conventions import resample_volume
from ..core.filters import lowpass
from ..core.masks import resample_mask
from ..core.slices import backproject_weighted, loglik, volumes_to_grid
from ..errors import InputFileError
from .em import responsibilities
from .passes import _in_processing_order, chunks, em_pass, hard_pass
from .problem import Problem, lowres_problem, row_selector, subset_problem
from .reconstruct import ClassStats, reconstruct
from .store import ArrayStore

__all__ = ["subset_labels", "initial_volumes", "init_input"]

#: The low-resolution EM that scores initial candidates uses at most this many particles (the
#: same random subset for every candidate), so initialisation does not grow with N. 10 000
#: instead of 20 000: N = 20 000 init 6.7 -> 4.5 s; ARI at SNR 0.05 unchanged (0.8885, 2 seeds),
#: at SNR 0.01 0.5027 / 0.5045 vs 0.5049 / 0.5052 (seeds 0 / 1: −0.002 / −0.001).
_LOWRES_EM_MAX_PARTICLES = 10000
_LOWRES_EM_SUBSET_SEED = 20261122
#: The candidates are *scored* on a smaller subset still (the kept one is refined on the larger
#: one): 5 000 instead of 10 000 particles, ARI at N = 20 000 (seeds 0 / 1) SNR 0.05 0.8956 /
#: 0.8958 (equal), SNR 0.01 0.5162 / 0.5155 vs 0.5164 / 0.5157; init (3 interleaved runs
#: each) 5.32-5.98 -> 4.79-5.18 s.
#: Refining on 5 000 as well cost 0.0013 at SNR 0.01 and is not done.
_SCORE_MAX_PARTICLES = 5000
#: The kept candidate's refinement is EM accelerated by SQUAREM (Varadhan & Roland, Scand. J.
#: Stat. 2008, scheme S3): from V₀, two EM steps V₁ = EM(V₀), V₂ = EM(V₁); with r = V₁ − V₀,
#: v = V₂ − 2V₁ + V₀ and a = −‖r‖/‖v‖ (clipped to [−_SQUAREM_MAX_STEP, −1]) the extrapolated
#: V' = V₀ − 2a·r + a²·v, then one EM step from V' as the next V₀. a = −1 is V₂ (plain EM). At low
#: SNR this EM creeps (the assignments are soft; 0.3 % of the particles still switch per step
#: after 16 plain steps) along a few slow directions, which is what SQUAREM extrapolates. An
#: extrapolation whose mean log-evidence falls more than ``_SQUAREM_TOL`` nats per particle
#: below V₁'s is dropped for the plain V₂ (the regulariser moves too, so EM itself is not a
#: strict bound). Replaced a fixed over-relaxation V ← V + 1.5·(EM(V) − V): ARI / oracle over the
#: 4 N = 5 000 benchmark sets × seeds 0-3, mean 0.9653 -> 0.9658, min 0.9506 -> 0.9531, with
#: 17-20 EM steps at SNR 0.01 (was 24, the cap) and 7 at SNR 0.05 (was 6-7; seed 0 of each set).
_SQUAREM_MAX_STEP = 8.0
_SQUAREM_TOL = 1e-3
#: The refinement stops early once fewer than this % of its particles change their most likely
#: class between two E-steps (after at least ``_REFINE_MIN_ITERS``): at SNR 0.05 that is after
#: 6-7 iterations (then 0.00 %), at SNR 0.01 the assignments still creep by 0.06-0.3 % per
#: iteration after 20, and ``init_refine_iters`` caps it (N = 5 000, 2 datasets × 2 seeds).
_REFINE_STOP_SWITCH_PCT = 0.1
_REFINE_MIN_ITERS = 4


def subset_labels(n: int, n_sets: int, per_set: int, seed: Any) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random subsets: returns ``(labels, indices)`` (sorted by particle index)."""
    perm = np.random.default_rng(seed).permutation(n)[: n_sets * per_set]
    labels = np.repeat(np.arange(n_sets), per_set)
    order = np.argsort(perm)
    return labels[order], perm[order]


def _subset_volumes(
    prob: Problem,
    n_sets: int,
    per_set: int,
    seed: Any,
    wsig: Any,
    alpha: Any,
    mask: Any,
    tau2: np.ndarray,
    chunk_size: int,
    check: Callable[[], None] | None,
) -> Any:
    xp = prob.xp
    labels, idx = subset_labels(prob.n, n_sets, per_set, seed)
    stats = ClassStats.zeros(prob.geom, n_sets, xp)
    hard_pass(prob, idx, labels, stats, wsig, alpha, chunk_size, check)
    rec = reconstruct(stats, prob.geom, mask, tau2_prev=np.repeat(tau2[:1], n_sets, axis=0))
    return rec.volumes


def _per_set(prob: Problem, K: int, requested: int) -> int:
    return max(1, min(requested, prob.n // K))


def _lowres(prob: Problem, res_A: float, wsig: Any, mask: Any, tau2: np.ndarray) -> tuple:
    """The problem, weights, mask and τ² restricted to the initial resolution (small box)."""
    lp, cols = lowres_problem(prob, res_A)
    xp = prob.xp
    mask_l = xp.asarray(np.clip(to_numpy(resample_mask(mask, lp.box_c)), 0.0, 1.0))
    return lp, wsig[xp.asarray(cols)], mask_l, tau2[:, : lp.geom.n_shells]


def _to_full(vols: Any, lp: Problem, prob: Problem, res_A: float, mask: Any) -> Any:
    """Low-res volumes (box ``lp.box_c``) → the classification box, cosine low-passed at
    ``res_A`` and masked. Internal volumes keep Fourier coefficients, so a density-preserving
    resample is rescaled by ``(D_low / D_c)³``."""
    xp = get_array_module(vols)
    f = (lp.box_c / prob.box_c) ** 3
    up = xp.stack([resample_volume(v, prob.box_c) for v in vols]) * np.float32(f)
    res = max(res_A, 2.0 * prob.pixel_size_c_A)
    return (lowpass(up, res, prob.pixel_size_c_A, kind="cosine") * mask[None]).astype(np.float32)


def _simple_lowres(
    lp: Problem,
    K: int,
    per_set: int,
    seed: Any,
    wsig_l: Any,
    alpha: Any,
    mask_l: Any,
    tau2_l: np.ndarray,
    chunk_size: int,
    check: Callable[[], None] | None,
) -> Any:
    """K reconstructions from disjoint random subsets (at the low-res box of ``lp``)."""
    return (
        _subset_volumes(
            lp, K, _per_set(lp, K, per_set), seed, wsig_l, alpha, mask_l, tau2_l, chunk_size, check
        )
        * mask_l[None]
    )


def _pca_space(
    lp: Problem,
    per_set: int,
    n_recon: int,
    n_components: int,
    seed: Any,
    wsig_l: Any,
    alpha: Any,
    mask_l: Any,
    tau2_l: np.ndarray,
    chunk_size: int,
    check: Callable[[], None] | None,
    group: int = 25,
) -> tuple[Any, np.ndarray]:
    """``n_recon`` random-subset reconstructions (at the low-res box of ``lp``) and their
    coordinates on the top ``n_components`` principal components."""
    xp = lp.xp
    # subsets must be big enough for their composition to carry the heterogeneity signal:
    # at most N/8 particles each, disjoint within a group of at most N/per reconstructions
    per = max(1, min(per_set, lp.n // 8))
    vols: list[Any] = []
    g = 0
    while len(vols) < n_recon:
        m = min(group, n_recon - len(vols), max(1, lp.n // per))
        v = _subset_volumes(
            lp,
            m,
            per,
            [*np.atleast_1d(seed), 2, g],
            wsig_l,
            alpha,
            mask_l,
            tau2_l,
            chunk_size,
            check,
        )
        vols.extend(v * mask_l[None])
        g += 1
    V = xp.stack(vols)
    flat = to_numpy(V.reshape(len(vols), -1)).astype(np.float64)
    flat -= flat.mean(0)
    evals, evecs = np.linalg.eigh(flat @ flat.T)  # Gram matrix: n_recon × n_recon
    top = np.argsort(evals)[::-1][:n_components]
    return V, evecs[:, top] * np.sqrt(np.maximum(evals[top], 0.0))


def _kmeans_volumes(V: Any, coords: np.ndarray, K: int, seed: Any) -> Any:
    """k-means of the reconstructions in PC space → the mean volume of each of K groups."""
    from scipy.cluster.vq import kmeans2

    xp = get_array_module(V)
    if np.any(np.ptp(coords, axis=0) > 0):
        rng = np.random.default_rng([*np.atleast_1d(seed), 3])
        _, lab = kmeans2(coords, K, seed=rng, minit="++")
    else:  # identical reconstructions (no signal): k-means++ would divide 0 by 0
        lab = np.arange(len(V)) % K
    out = []
    for k in range(K):
        members = np.nonzero(lab == k)[0]
        if members.size == 0:  # empty cluster: fall back to one reconstruction
            members = np.array([k % len(V)])
        out.append(V[xp.asarray(members)].mean(0))
    return xp.stack(out)


def _grouped_pass(
    lp: Problem,
    idx: np.ndarray,
    grid: Any,
    log_prior: np.ndarray,
    wsig_l: Any,
    alpha: Any,
    stats: ClassStats | None,
    chunk_size: int,
    check: Callable[[], None] | None,
) -> np.ndarray:
    """E-step (and, with ``stats``, M-step statistics) of G independent K-class mixtures in one
    pass: ``grid`` holds their G·K classes, ``log_prior`` is (G, K); responsibilities are
    normalised within each group. One kernel call scores every candidate, so the per-pixel
    geometry is computed once for all of them. Returns the log-evidence (n, G)."""
    xp = lp.xp
    G, K = log_prior.shape
    out = np.empty((len(idx), G))
    pos = 0
    mass = np.zeros(G * K)
    todo, order = _in_processing_order(lp, idx)  # viewing-direction order (passes.view_order)
    for c in chunks(todo, chunk_size):
        if check is not None:
            check()
        ci = row_selector(c, xp)
        A, X, C, half = lp.take(ci)
        al = alpha[ci]
        ll = loglik(grid, A, X, C, al, wsig_l, lp.geom)
        rs = []
        rows = slice(pos, pos + len(c)) if order is None else order[pos : pos + len(c)]
        for g in range(G):
            r, _, _, ev = responsibilities(ll[:, g * K : (g + 1) * K], log_prior[g])
            rs.append(r)
            out[rows, g] = to_numpy(ev)
        if stats is not None:
            r = xp.concatenate(rs, axis=1)
            backproject_weighted(A, X, C, al, wsig_l, r, half, lp.geom, stats.acc)
            mass += to_numpy(r.astype(np.float64).sum(0))
        pos += len(c)
    if stats is not None:
        stats.mass = mass
    return out


def _em_rows(lp: Problem, alpha: Any, max_particles: int) -> tuple[Problem, Any, np.ndarray]:
    """``(problem, alpha, idx)`` of the particles a low-res EM runs on: all of them, or at most
    ``max_particles`` (a fixed random subset; local rows copied once, so the passes read them in
    order)."""
    if lp.n <= max_particles:
        return lp, alpha, np.arange(lp.n)
    rng = np.random.default_rng(_LOWRES_EM_SUBSET_SEED)
    sub = np.sort(rng.choice(lp.n, max_particles, replace=False))
    if lp.store.remote:
        return lp, alpha, sub
    return subset_problem(lp, sub), alpha[lp.xp.asarray(sub)], np.arange(max_particles)


def _lowres_m_step(
    lp: Problem, stats: ClassStats, mask_l: Any, tau: np.ndarray, G: int
) -> tuple[Any, np.ndarray, np.ndarray]:
    """M-step of G K-class mixtures at the low-res box: ``(volumes (G·K, ...), τ², log prior
    (G, K))``, each mixture's prior from its own class masses."""
    rec = reconstruct(stats, lp.geom, mask_l, tau2_prev=tau)
    mass = np.maximum(np.asarray(stats.mass, np.float64), 1e-12).reshape(G, -1)
    return rec.volumes, rec.tau2, np.log(mass / mass.sum(1, keepdims=True))


def _lowres_em(
    lp: Problem,
    candidates: list[Any],
    wsig_l: Any,
    alpha: Any,
    mask_l: Any,
    tau2_l: np.ndarray,
    n_iters: int,
    chunk_size: int,
    check: Callable[[], None] | None,
    max_particles: int = _LOWRES_EM_MAX_PARTICLES,
) -> list[tuple[Any, float]]:
    """A few full EM iterations at the low-res box for each candidate (K volumes each); returns
    per candidate the volumes and their score, the mean per-particle log-evidence
    ``log Σ_k π_k p(X_i | V_k)`` under the final volumes. Local problems run all candidates
    jointly (:func:`_grouped_pass`; the same arithmetic as one by one)."""
    G, K = len(candidates), candidates[0].shape[0]
    if G > 1 and lp.store.remote:  # the distributed executor runs plain passes only
        args = (wsig_l, alpha, mask_l, tau2_l, n_iters, chunk_size, check)
        return [_lowres_em(lp, [c], *args, max_particles=max_particles)[0] for c in candidates]
    lp, alpha, idx = _em_rows(lp, alpha, max_particles)  # scoring needs statistics, not all

    def one_pass(vols: Any, log_prior: np.ndarray, stats: ClassStats | None) -> np.ndarray:
        """The log-evidence (n, G)."""
        grid = volumes_to_grid(vols, lp.geom)
        if G > 1:
            return _grouped_pass(lp, idx, grid, log_prior, wsig_l, alpha, stats, chunk_size, check)
        res = em_pass(
            lp, idx, grid, log_prior[0], wsig_l, alpha, beta=0.0, force_hard=False,
            stats=stats, chunk_size=chunk_size, check=check,
        )  # fmt: skip
        return to_numpy(res.log_evidence)[:, None]

    xp = lp.xp
    vols = xp.concatenate(candidates) if G > 1 else candidates[0]
    log_prior = np.full((G, K), -np.log(K))
    tau = np.repeat(tau2_l[:1], G * K, axis=0)
    for _ in range(n_iters):
        stats = ClassStats.zeros(lp.geom, G * K, xp)
        one_pass(vols, log_prior, stats)
        vols, tau, log_prior = _lowres_m_step(lp, stats, mask_l, tau, G)
    ev = one_pass(vols, log_prior, None)
    return [(vols[g * K : (g + 1) * K], float(np.mean(ev[:, g]))) for g in range(G)]


@dataclass
class _EMPoint:
    """What one EM step from volumes ``V`` gives: ``EM(V)`` (``volumes``), the τ² and log prior
    to go on with, and the mean log-evidence and most likely classes *at* ``V``."""

    volumes: Any
    tau2: np.ndarray
    log_prior: np.ndarray
    evidence: float
    hard: np.ndarray


def _refine(
    lp: Problem,
    vols: Any,
    wsig_l: Any,
    alpha: Any,
    mask_l: Any,
    tau2_l: np.ndarray,
    max_steps: int,
    chunk_size: int,
    check: Callable[[], None] | None,
    max_particles: int = _LOWRES_EM_MAX_PARTICLES,
    stop_switch_pct: float = _REFINE_STOP_SWITCH_PCT,
) -> tuple[Any, int]:
    """The kept candidate's refinement at the low-res box: EM accelerated by SQUAREM (see
    ``_SQUAREM_MAX_STEP``), at most ``max_steps`` EM steps, stopped once fewer than
    ``stop_switch_pct`` % of the particles change their most likely class between two E-steps
    (after at least ``_REFINE_MIN_ITERS``). Returns the volumes and the EM steps taken."""
    lp, alpha, idx = _em_rows(lp, alpha, max_particles)
    xp, K = lp.xp, vols.shape[0]
    steps = 0
    hard_prev: np.ndarray | None = None

    def em(v: Any, log_prior: np.ndarray, tau: np.ndarray) -> _EMPoint:
        nonlocal steps
        stats = ClassStats.zeros(lp.geom, K, xp)
        res = em_pass(
            lp, idx, volumes_to_grid(v, lp.geom), log_prior, wsig_l, alpha, beta=0.0,
            force_hard=False, stats=stats, chunk_size=chunk_size, check=check,
        )  # fmt: skip
        vols_new, tau_new, log_prior_new = _lowres_m_step(lp, stats, mask_l, tau, 1)
        steps += 1
        ev = float(np.mean(to_numpy(res.log_evidence)))
        return _EMPoint(vols_new, tau_new, log_prior_new[0], ev, to_numpy(res.hard))

    def settled(pt: _EMPoint) -> bool:
        """Take ``pt``'s classes as the latest; whether the refinement is done."""
        nonlocal hard_prev
        switched = np.inf if hard_prev is None else 100.0 * float(np.mean(pt.hard != hard_prev))
        hard_prev = pt.hard
        converged = steps >= _REFINE_MIN_ITERS and switched < stop_switch_pct
        return converged or steps >= max_steps

    if max_steps < 1:
        return vols, 0
    p0 = em(vols, np.full(K, -np.log(K)), np.repeat(tau2_l[:1], K, axis=0))
    v0 = vols
    while True:
        if settled(p0):
            return p0.volumes, steps
        p1 = em(p0.volumes, p0.log_prior, p0.tau2)
        if settled(p1):
            return p1.volumes, steps
        r = p0.volumes - v0
        d = p1.volumes - p0.volumes - r
        a = -float(np.sqrt(float((r * r).sum()) / max(float((d * d).sum()), 1e-30)))
        a = min(max(a, -_SQUAREM_MAX_STEP), -1.0)
        v_x = (v0 - 2 * a * r + a * a * d).astype(np.float32)
        p_x = em(v_x, p1.log_prior, p1.tau2)
        if p_x.evidence < p1.evidence - _SQUAREM_TOL:  # overshot: the next cycle from V₂
            if steps >= max_steps:
                return p1.volumes, steps
            nxt = p1
        else:  # the next cycle from EM(V')
            if settled(p_x):
                return p_x.volumes, steps
            nxt = p_x
        v0 = nxt.volumes
        p0 = em(v0, nxt.log_prior, nxt.tau2)


def initial_volumes(
    prob: Problem,
    mode: str,
    K: int,
    params: Any,
    wsig: Any,
    alpha: Any,
    mask: Any,
    tau2: np.ndarray,
    chunk_size: int = 1024,
    check: Callable[[], None] | None = None,
) -> tuple[Any, list[float]]:
    """Initial class volumes at the classification box ('simple' or 'pca').

    Everything happens at the small box of ``params.init_res_A``: ``params.init_restarts``
    candidate initialisations (each from its own random subsets), each refined by
    ``params.init_lowres_iters`` cheap low-resolution EM iterations; the candidate with the
    highest mean log-evidence wins (EM local optima — e.g. two states merged and a third class
    starving — score visibly lower). Returns the volumes and every candidate's score.
    """
    p = params
    lp, wsig_l, mask_l, tau2_l = _lowres(prob, p.init_res_A, wsig, mask, tau2)
    if isinstance(lp.store, ArrayStore):  # its own low-res rows in memory (not a column view
        # of on-disk full rows, where a chunk reads full rows): chunks of as many bytes as the
        # full box's, i.e. fewer, larger kernel calls (N = 5 000: one chunk instead of five; an
        # E+M pass at the 20 px box 18.0 -> 15.7 ms, ~35 passes). Same per-particle arithmetic.
        chunk_size = max(chunk_size, chunk_size * prob.geom.M // max(lp.geom.M, 1))
    candidates = []
    step_args = (wsig_l, alpha, mask_l, tau2_l, chunk_size, check)  # every low-res step's tail
    for r in range(max(1, p.init_restarts)):
        seed = [p.seed, 1, r]
        if mode == "pca":  # each candidate: its own random subsets, PCA and k-means
            # 24 reconstructions (was 50, before that 100): ARI / oracle over the 4 N = 5 000
            # benchmark sets × seeds 0-3, mean 0.9628 vs 0.9626 (min 0.936 vs 0.936); N = 20 000
            # seeds 0 / 1 equal (0.995 / 0.995, 0.995 / 0.995 vs 0.997 / 0.991); 450-particle
            # sets (2 datasets × 2 SNR × 6 seeds) never merged states; init 2.1-2.7 -> 1.4-1.7 s
            # at N = 5 000. 24: whole passes of 8 disjoint subsets at N = 5 000.
            n_recon = max(p.pca_n_reconstructions, 5 * K)
            V, coords = _pca_space(
                lp, p.init_particles_per_class, n_recon, p.pca_n_components, seed, *step_args
            )
            candidates.append(_kmeans_volumes(V, coords, K, seed))
        else:
            candidates.append(_simple_lowres(lp, K, p.init_particles_per_class, seed, *step_args))
    if p.init_lowres_iters > 0:
        scored = _lowres_em(
            lp, candidates, wsig_l, alpha, mask_l, tau2_l, p.init_lowres_iters, chunk_size, check,
            max_particles=_SCORE_MAX_PARTICLES,
        )  # fmt: skip
    else:
        scored = [(v, 0.0) for v in candidates]
    scores = [sc for _, sc in scored]
    v = scored[int(np.argmax(scores))][0]  # the first of equal best
    if p.init_refine_iters > 0:  # carry on with the kept candidate only (cheap, low-res box)
        v, _ = _refine(lp, v, wsig_l, alpha, mask_l, tau2_l, p.init_refine_iters, chunk_size, check)
    return _to_full(v, lp, prob, p.init_res_A, mask), scores


def init_input(
    volumes: list[tuple[np.ndarray, float, str]],
    prob: Problem,
    consensus: Any,
    mask: Any,
) -> Any:
    """Given volumes ``[(array, pixel_size_A, path), ...]`` → the classification box, scaled to
    the consensus by least squares inside the mask."""
    xp = get_array_module(consensus)
    D, apix = prob.box, prob.pixel_size_A
    out = []
    for vol, vapix, path in volumes:
        if vol.ndim != 3 or len(set(vol.shape)) != 1:
            raise InputFileError(path, f"initial volume must be a cubic 3D map, got {vol.shape}")
        if not np.all(np.isfinite(vol)):
            raise InputFileError(path, "initial volume contains NaN or inf")
        size_A, want_A = vol.shape[0] * vapix, D * apix
        if abs(size_A - want_A) > 0.01 * want_A:
            raise InputFileError(
                path,
                f"box {vol.shape[0]} px × {vapix:g} Å = {size_A:.1f} Å does not match the "
                f"particles' {D} px × {apix:g} Å = {want_A:.1f} Å",
            )
        v = to_device(resample_volume(vol.astype(np.float32), prob.box_c), xp)
        num = float(xp.sum(v * consensus * mask))
        den = float(xp.sum(v * v * mask))
        s = num / den if den > 0 else 1.0
        out.append(v * np.float32(s) * mask)
    return xp.stack(out).astype(np.float32)
