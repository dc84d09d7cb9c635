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
#: Over-relaxation ω of the kept candidate's refinement: after two plain EM steps the volumes move
#: ω times the EM step, ``V ← V + ω (EM(V) − V)`` (Salakhutdinov & Roweis, ICML 2003), back to
#: plain EM for good as soon as the mean log-evidence drops by more than 10⁻³ nats per particle
#: (the regulariser moves too, so it is not a strict EM bound: it may dip by ~10⁻⁴). At low SNR
#: this EM creeps (0.3 % of the particles still switch per iteration after 16 steps). ARI, 4
#: benchmark settings × seeds 0 / 1, 16 steps with ω = 1.5 vs 32 plain: N = 5 000 SNR 0.05
#: 0.896 / 0.897 (equal), SNR 0.01 0.503 / 0.503 vs 0.503 / 0.504; N = 20 000 SNR 0.05
#: 0.888 / 0.889 (equal), SNR 0.01 0.509 / 0.508 (equal). 16 plain steps: 0.501 / 0.503 at
#: N = 5 000 SNR 0.01. ω = 2 did as well there but oscillated on a small test set.
_REFINE_RELAX = 1.5
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
    relax: float = 1.0,
    max_particles: int = _LOWRES_EM_MAX_PARTICLES,
    stop_switch_pct: float = 0.0,
    score: bool = True,
) -> list[tuple[Any, float]]:
    """A few full EM iterations at the low-res box for each candidate (K volumes each); returns
    per candidate the volumes and their score, the mean per-particle log-evidence
    ``log Σ_k π_k p(X_i | V_k)`` under the final volumes. Local problems run all candidates
    jointly (:func:`_grouped_pass`; the same arithmetic as one by one). One candidate only:
    ``relax``, the over-relaxation ω of the volume updates (see ``_REFINE_RELAX``), and
    ``stop_switch_pct``: stop early, after at least ``_REFINE_MIN_ITERS`` iterations, once fewer
    than this % of the particles change their most likely class between two E-steps.
    ``score=False``: no final E-step, the score is NaN."""
    G, K = len(candidates), candidates[0].shape[0]
    if G > 1 and lp.store.remote:  # the distributed executor runs plain passes only
        args = (wsig_l, alpha, mask_l, tau2_l, n_iters, chunk_size, check)
        return [_lowres_em(lp, [c], *args, max_particles=max_particles)[0] for c in candidates]
    if lp.n > max_particles:  # scoring needs statistics, not every particle
        rng = np.random.default_rng(_LOWRES_EM_SUBSET_SEED)
        sub = np.sort(rng.choice(lp.n, max_particles, replace=False))
        if not lp.store.remote:  # rows copied once: the passes then read them in order
            lp, alpha = subset_problem(lp, sub), alpha[lp.xp.asarray(sub)]
            sub = np.arange(lp.n)
        idx = sub
    else:
        idx = np.arange(lp.n)

    def one_pass(vols: Any, log_prior: np.ndarray, stats: ClassStats | None) -> tuple:
        """(log-evidence (n, G), most likely class (n,) or None for several candidates)"""
        grid = volumes_to_grid(vols, lp.geom)
        if G > 1:
            ev = _grouped_pass(lp, idx, grid, log_prior, wsig_l, alpha, stats, chunk_size, check)
            return ev, None
        res = em_pass(
            lp, idx, grid, log_prior[0], wsig_l, alpha, beta=0.0, force_hard=False,
            stats=stats, chunk_size=chunk_size, check=check,
        )  # fmt: skip
        return to_numpy(res.log_evidence)[:, None], to_numpy(res.hard)

    xp = lp.xp
    vols = xp.concatenate(candidates) if G > 1 else candidates[0]
    log_prior = np.full((G, K), -np.log(K))
    tau = np.repeat(tau2_l[:1], G * K, axis=0)
    omega, ev_prev = (relax if G == 1 else 1.0), -np.inf
    hard_prev = None
    for it in range(n_iters):
        stats = ClassStats.zeros(lp.geom, G * K, xp)
        ev, hard = one_pass(vols, log_prior, stats)
        ev_mean = float(np.mean(ev))
        switched_pct = (
            100.0 * float(np.mean(hard != hard_prev)) if hard_prev is not None else np.inf
        )
        hard_prev = hard
        if ev_mean < ev_prev - 1e-3:  # an over-relaxed step overshot: plain EM from here on
            omega = 1.0
        ev_prev = ev_mean
        rec = reconstruct(stats, lp.geom, mask_l, tau2_prev=tau)
        if omega != 1.0 and it >= 2:
            vols = vols + np.float32(omega) * (rec.volumes - vols)
        else:
            vols = rec.volumes
        tau = rec.tau2
        mass = np.maximum(np.asarray(stats.mass, np.float64), 1e-12).reshape(G, K)
        log_prior = np.log(mass / mass.sum(1, keepdims=True))
        if it + 1 >= _REFINE_MIN_ITERS and switched_pct < stop_switch_pct:
            break  # converged: this E-step's classes are (nearly) the previous one's
    if not score:
        return [(vols[g * K : (g + 1) * K], float("nan")) for g in range(G)]
    ev, _ = one_pass(vols, log_prior, None)
    return [(vols[g * K : (g + 1) * K], float(np.mean(ev[:, g]))) for g in range(G)]


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
        v = _lowres_em(
            lp, [v], wsig_l, alpha, mask_l, tau2_l, p.init_refine_iters, chunk_size, check,
            relax=_REFINE_RELAX, stop_switch_pct=_REFINE_STOP_SWITCH_PCT, score=False,
        )[0][0]  # fmt: skip
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
