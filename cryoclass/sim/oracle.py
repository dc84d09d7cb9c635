"""The oracle classifier: the physical limit of classification accuracy on simulated data.

It knows the true volumes, poses, CTF and noise level, and assigns every particle to the class of
highest likelihood (equal priors unless given) at the same classification box and filter
resolution as the classifier it is compared with. No method can beat its accuracy on average.

Example
-------
>>> from cryoclass import sim
>>> ds = sim.simulate(n_particles=60, box=32, pixel_size_A=6.0, snr=0.5, seed=0)  # doctest: +SKIP
>>> labels = sim.oracle_labels(ds, filter_res_A=15.0)                            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..conventions import resample_volume
from ..core.slices import loglik, volumes_to_grid
from ..engine.em import responsibilities
from ..engine.passes import chunks
from ..engine.problem import Problem, build_problem

__all__ = ["oracle_labels", "oracle_loglik", "truth_grid"]


def truth_grid(volumes: np.ndarray, prob: Problem) -> Any:
    """True volumes ``(K, D, D, D)`` (image units) → class grids at the classification box.

    The problem keeps the particles' Fourier coefficients unscaled, so the matching real volume at
    box ``Dc`` is the density-preserving resample times ``(D / Dc)³``.
    """
    D, Dc = prob.box, prob.box_c
    vols = np.stack([resample_volume(v.astype(np.float32), Dc) for v in volumes])
    return volumes_to_grid((vols * (D / Dc) ** 3).astype(np.float32), prob.geom)


def oracle_loglik(
    ds: Any, filter_res_A: float, prob: Problem | None = None, chunk_size: int = 1024
) -> np.ndarray:
    """(N, K) log-likelihoods of every particle under every true volume, with the true white
    noise power ``D² σ_n²`` per Fourier coefficient."""
    if prob is None:
        prob = build_problem(ds.particles, filter_res_A)
    grid = truth_grid(ds.volumes, prob)
    sigma2 = (prob.box**2) * max(float(ds.noise_sigma), 1e-12) ** 2
    wsig = (prob.geom.weight / sigma2).astype(np.float32)
    out = np.empty((prob.n, grid.shape[-1]))
    ones = np.ones(prob.n, np.float32)
    for c in chunks(np.arange(prob.n), chunk_size):
        A, X, C, _ = prob.take(c)
        out[c] = loglik(grid, A, X, C, ones[c], wsig, prob.geom)
    return out


def oracle_labels(
    ds: Any, filter_res_A: float, priors: np.ndarray | None = None, prob: Problem | None = None
) -> np.ndarray:
    """Maximum-a-posteriori class of each particle under the true model."""
    ll = oracle_loglik(ds, filter_res_A, prob)
    K = ll.shape[1]
    lp = np.log(np.full(K, 1.0 / K) if priors is None else np.asarray(priors))
    return np.asarray(responsibilities(ll, lp)[2])
