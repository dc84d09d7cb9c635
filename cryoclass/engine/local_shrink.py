"""Local (real-space) Wiener shrinkage of the class differences from the consensus.

After the M-step each class is ``V_k = C + Δ_k``. A global, FSC-based filter keeps whatever is
reproducible *on average over a shell*, so the noise of Δ_k survives everywhere the class
differs somewhere — and for classes that differ only in a small region (a ligand), that noise
all over the box is what blurs the class comparison. Here the signal and noise of Δ are
estimated *locally*, in a Gaussian neighbourhood of every voxel, from the two half-set
reconstructions: signal covariance ``S(x) = ⟨Δ¹ Δ²ᵀ⟩`` (symmetrised), noise covariance
``N(x) = ⟨(Δ¹ − Δ²)(Δ¹ − Δ²)ᵀ⟩ / 4`` of the full-data difference. The K classes are treated
jointly (K ≤ ``MAX_JOINT_K``): ``Δ̂ = L U f(Λ) Uᵀ L⁻¹ Δ`` with ``N = L Lᵀ`` and
``L⁻¹ S L⁻ᵀ = U Λ Uᵀ``, ``f(λ) = (λ⁺ / (1 + λ⁺))^p``. Jointly matters: where two classes are
the same (both closed) and differ from a third (open), the K×K signal covariance has rank one,
and the filter removes the two classes' independent noise *against each other* — a per-class
filter would keep it because each class differs from the consensus there. Beyond
``MAX_JOINT_K`` the classes are filtered one by one (diagonal S and N).

The exponent ``p = 2`` shrinks harder than the MSE-optimal Wiener factor (p = 1): a spurious
difference costs classification more than a slightly weakened real one. Measured on the
simulator's 3-state set (N = 5 000, SNR 0.01; EM started from the true volumes): ARI 0.481
without local shrinkage, 0.506 with p = 1, 0.513 with p = 2 (σ = 12 Å). The default σ is
10 Å since the differences are class contrasts against the pooled mean (see
:class:`cryoclass.engine.reconstruct.ConsensusPrior`; σ 8 / 10 / 12 / 14 Å measured there).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import backend as _fft
from ..backend import get_array_module
from ..core.slices import _use_xp

__all__ = ["MAX_JOINT_K", "gaussian_smooth", "shrink_differences"]

#: Above this many classes the differences are shrunk class by class (K×K per voxel is O(K³)).
MAX_JOINT_K = 8
#: Exponent p of the Wiener factor (see module docstring).
SHRINK_POWER = 2.0


@functools.lru_cache(maxsize=8)
def _gaussian_transfer(D: int, sigma_px: float) -> np.ndarray:
    """The Gaussian's transfer function on the ``rfftn`` grid of a ``D³`` box (float32; built
    once per box and σ: every M-step smooths twice with the same one, and building it took about
    half of each call at 48³)."""
    f = np.fft.fftfreq(D).astype(np.float32)
    fr = np.fft.rfftfreq(D).astype(np.float32)
    r2 = f[:, None, None] ** 2 + f[None, :, None] ** 2 + fr[None, None, :] ** 2
    g = np.exp(np.float32(-2.0 * np.pi**2 * sigma_px**2) * r2).astype(np.float32)
    g.flags.writeable = False
    return g


def gaussian_smooth(v: Any, sigma_px: float) -> Any:
    """Gaussian blur (standard deviation ``sigma_px`` voxels, periodic) of real volumes
    ``(..., D, D, D)``, by FFT."""
    xp = get_array_module(v)
    g = xp.asarray(_gaussian_transfer(int(v.shape[-1]), float(sigma_px)))
    F = _fft.rfftn(v, axes=(-3, -2, -1))
    return _fft.irfftn(F * g, s=v.shape[-3:], axes=(-3, -2, -1)).astype(np.float32)


def shrink_differences(
    delta: Any,
    half_deltas: list[Any],
    mask: Any,
    sigma_px: float,
    power: float = SHRINK_POWER,
) -> Any:
    """The class differences ``delta`` (K, D, D, D) shrunk voxel by voxel by their local
    signal-to-noise, estimated from the two half-set differences ``half_deltas`` (two
    (K, D, D, D): signal from their product, noise from their difference; module docstring).
    Voxels with ``mask = 0`` keep ``delta`` as given."""
    xp = get_array_module(delta)
    K = delta.shape[0]
    d1, d2 = half_deltas
    dn = 0.5 * (d1 - d2)
    sel = xp.asarray(mask).ravel() > 0
    dsel = delta.reshape(K, -1)[:, sel].T.astype(np.float64)  # (V, K)
    if K > MAX_JOINT_K:
        S = gaussian_smooth(d1 * d2, sigma_px).reshape(K, -1)[:, sel].T
        N = gaussian_smooth(dn * dn, sigma_px).reshape(K, -1)[:, sel].T
        lam = xp.maximum(S, 0) / xp.maximum(N, 1e-30)
        return _assemble(delta, sel, dsel * (lam / (1.0 + lam)) ** power)
    pairs = [(i, j) for i in range(K) for j in range(i, K)]
    Sp = gaussian_smooth(
        xp.stack([0.5 * (d1[i] * d2[j] + d2[i] * d1[j]) for i, j in pairs]), sigma_px
    ).reshape(len(pairs), -1)[:, sel]
    Np = gaussian_smooth(xp.stack([dn[i] * dn[j] for i, j in pairs]), sigma_px).reshape(
        len(pairs), -1
    )[:, sel]
    if not _use_xp("auto", xp):  # one Numba pass per voxel (same arithmetic, see below)
        from ..core._shrink_numba import joint_shrink_kernel

        out = np.empty_like(dsel)
        pi = np.array([i for i, _ in pairs], np.int64)
        pj = np.array([j for _, j in pairs], np.int64)
        joint_shrink_kernel(
            np.ascontiguousarray(Sp, np.float64),
            np.ascontiguousarray(Np, np.float64),
            pi, pj, np.ascontiguousarray(dsel), float(power), out,
        )  # fmt: skip
        return _assemble(delta, sel, out)
    V = int(Sp.shape[1])
    S = xp.zeros((V, K, K), np.float64)
    N = xp.zeros((V, K, K), np.float64)
    for n, (i, j) in enumerate(pairs):
        S[:, i, j] = Sp[n]
        S[:, j, i] = Sp[n]
        N[:, i, j] = Np[n]
        N[:, j, i] = Np[n]
    ridge = 1e-6 * xp.trace(N, axis1=1, axis2=2) / K + 1e-30
    N += ridge[:, None, None] * xp.eye(K)[None]
    L = xp.linalg.cholesky(N)
    Li = xp.linalg.inv(L)
    lam, U = xp.linalg.eigh(Li @ S @ xp.swapaxes(Li, 1, 2))
    lam = xp.maximum(lam, 0.0)
    f = (lam / (1.0 + lam)) ** power
    W = L @ U @ (f[:, :, None] * (xp.swapaxes(U, 1, 2) @ Li))
    return _assemble(delta, sel, (W @ dsel[:, :, None])[:, :, 0])


def _assemble(delta: Any, sel: Any, out: Any) -> Any:
    """``delta`` with the shrunk values ``out`` (V, K) at the voxels ``sel``."""
    K = delta.shape[0]
    full = delta.reshape(K, -1).copy()
    full[:, sel] = out.T.astype(full.dtype)
    return full.reshape(delta.shape).astype(np.float32)
