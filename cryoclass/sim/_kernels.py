"""Numba kernels that splat isotropic Gaussian pseudo-atoms into images and volumes.

Both kernels use a separable Gaussian truncated to a square/cube of ``±truncate·σ`` around each
atom, so the 2D projection kernel is exactly the ``z``-sum of the 3D voxel kernel (up to the
``z``-truncation, a relative ``erfc(truncate/√2) ≈ 6e-5`` at ``truncate = 4``).

Coordinates are in **pixels relative to the box centre** (index ``D // 2``), ``(x, y, z)`` order.

Example
-------
>>> import numpy as np
>>> from cryoclass.sim._kernels import splat_volume
>>> vol = np.zeros((16, 16, 16), np.float32)
>>> splat_volume(np.zeros((1, 3)), np.ones(1), np.ones(1), vol, 4.0)
>>> round(float(vol[8, 8, 8]), 6)
1.0
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["splat_projections", "splat_volume"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, inline="always")
def _gauss_1d(buf: np.ndarray, centre: float, sigma: float, truncate: float, D: int) -> tuple:
    """Fill ``buf`` with ``exp(-(i - centre)²/2σ²)`` for ``i`` in the clipped window; return it."""
    r = truncate * sigma
    i0 = max(int(math.ceil(centre - r)), 0)
    i1 = min(int(math.floor(centre + r)), D - 1)
    inv = -0.5 / (sigma * sigma)
    for i in range(i0, i1 + 1):
        d = i - centre
        buf[i - i0] = math.exp(d * d * inv)
    return i0, i1


@numba.njit(parallel=True, cache=True)
def _splat_projections(
    coords: np.ndarray,
    weights: np.ndarray,
    sigmas: np.ndarray,
    atom_start: np.ndarray,
    state: np.ndarray,
    rot: np.ndarray,
    shifts: np.ndarray,
    out: np.ndarray,
    truncate: float,
) -> None:
    P = out.shape[0]
    D = out.shape[1]
    c = D // 2
    nbuf = 2 * int(math.ceil(truncate * sigmas.max())) + 3
    for i in numba.prange(P):
        gx = np.empty(nbuf)
        gy = np.empty(nbuf)
        img = out[i]
        img[:, :] = 0.0
        k = state[i]
        for a in range(atom_start[k], atom_start[k + 1]):
            px, py, pz = coords[a, 0], coords[a, 1], coords[a, 2]
            x = rot[i, 0, 0] * px + rot[i, 0, 1] * py + rot[i, 0, 2] * pz - shifts[i, 0] + c
            y = rot[i, 1, 0] * px + rot[i, 1, 1] * py + rot[i, 1, 2] * pz - shifts[i, 1] + c
            s = sigmas[a]
            x0, x1 = _gauss_1d(gx, x, s, truncate, D)
            y0, y1 = _gauss_1d(gy, y, s, truncate, D)
            if x0 > x1 or y0 > y1:
                continue
            amp = weights[a] * _SQRT_2PI * s
            for iy in range(y0, y1 + 1):
                wy = amp * gy[iy - y0]
                for ix in range(x0, x1 + 1):
                    img[iy, ix] += wy * gx[ix - x0]


@numba.njit(parallel=True, cache=True)
def _splat_volume(
    coords: np.ndarray, weights: np.ndarray, sigmas: np.ndarray, out: np.ndarray, truncate: float
) -> None:
    D = out.shape[0]
    c = D // 2
    nbuf = 2 * int(math.ceil(truncate * sigmas.max())) + 3
    for iz in numba.prange(D):
        gx = np.empty(nbuf)
        gy = np.empty(nbuf)
        for a in range(coords.shape[0]):
            s = sigmas[a]
            dz = iz - (coords[a, 2] + c)
            if abs(dz) > truncate * s:
                continue
            amp = weights[a] * math.exp(-0.5 * dz * dz / (s * s))
            x0, x1 = _gauss_1d(gx, coords[a, 0] + c, s, truncate, D)
            y0, y1 = _gauss_1d(gy, coords[a, 1] + c, s, truncate, D)
            for iy in range(y0, y1 + 1):
                wy = amp * gy[iy - y0]
                for ix in range(x0, x1 + 1):
                    out[iz, iy, ix] += wy * gx[ix - x0]


def _as_f64(a: np.ndarray, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    if shape_tail and a.shape[-len(shape_tail) :] != shape_tail:
        raise ValueError(f"expected trailing shape {shape_tail}, got {a.shape}")
    return a


def splat_projections(
    coords_px: np.ndarray,
    weights: np.ndarray,
    sigmas_px: np.ndarray,
    atom_start: np.ndarray,
    state: np.ndarray,
    rotations: np.ndarray,
    shifts_px: np.ndarray,
    out: np.ndarray,
    truncate: float = 4.0,
) -> None:
    """Analytic projections of Gaussian pseudo-atoms, written into ``out`` (overwritten).

    Particle ``i`` shows the atoms ``atom_start[state[i]] : atom_start[state[i] + 1]``; an atom at
    ``p`` lands at image point ``(A_i p)[:2] − t_i`` (pixels from the centre ``D // 2``; RELION's
    origin convention) with value ``w · √(2π) σ · exp(−|x − x_a|² / 2σ²)`` — the line integral of
    the 3D Gaussian in voxel units.

    Parameters
    ----------
    coords_px : (M, 3) float
        Atom positions ``(x, y, z)`` in pixels from the box centre, all states concatenated.
    weights, sigmas_px : (M,) float
        Atom weights (peak voxel value) and Gaussian widths in pixels.
    atom_start : (K + 1,) int
        Offsets of each state's atoms in ``coords_px``.
    state : (P,) int
        State index of each particle.
    rotations : (P, 3, 3) float
        RELION matrices ``A``.
    shifts_px : (P, 2) float
        RELION origins ``(x, y)`` in pixels: the particle centre sits at ``−t``.
    out : (P, D, D) float32 or float64
        Output images ``[y, x]``.
    truncate : float
        Half-width of the square window in units of σ.
    """
    _splat_projections(
        _as_f64(coords_px, (3,)),
        _as_f64(weights),
        _as_f64(sigmas_px),
        np.ascontiguousarray(atom_start, dtype=np.int64),
        np.ascontiguousarray(state, dtype=np.int64),
        _as_f64(rotations, (3, 3)),
        _as_f64(shifts_px, (2,)),
        out,
        float(truncate),
    )


def splat_volume(
    coords_px: np.ndarray,
    weights: np.ndarray,
    sigmas_px: np.ndarray,
    out: np.ndarray,
    truncate: float = 4.0,
) -> None:
    """Add ``Σ w·exp(−|r − p|² / 2σ²)`` at every voxel ``r`` of ``out`` ``(D, D, D)`` ``[z, y, x]``.

    ``coords_px`` ``(M, 3)`` are ``(x, y, z)`` pixels from the centre voxel ``D // 2``; each atom
    is truncated to a cube of half-width ``truncate·σ``.
    """
    _splat_volume(_as_f64(coords_px, (3,)), _as_f64(weights), _as_f64(sigmas_px), out, truncate)
