"""Numba CPU twins of the M-step solve (see :mod:`cryoclass.engine.reconstruct`).

The array code builds, per half-set, the Hermitian-folded numerator and weight grids, their
shell means, the regularised solution ``num / (wgt + reg)`` (or each class's contrast against
the pooled mean) and scatters it into the padded FFT layout — five passes over memory and as
many temporaries. These kernels do the same in one pass each, straight from the interleaved
accumulator ``acc (2, Z, Y, X, K, 3)``.
``hsel`` selects the half-set (0 or 1) or both summed (2). Grid conventions as in
:class:`cryoclass.core.slices.SliceGeometry`: centre index ``off`` on z and y, ``x ≥ 0``; the
``x = 0`` plane is folded with its mirror ``(2·off − z, 2·off − y)``.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(inline="always", nogil=True)
def _acc3(acc, hsel, z, y, x, k, j):  # pragma: no cover - jit
    if hsel == 2:
        return acc[0, z, y, x, k, j] + acc[1, z, y, x, k, j]
    return acc[hsel, z, y, x, k, j]


@nb.njit(parallel=True, cache=True, nogil=True)
def shell_weight_sums_kernel(acc, hsel, grid_shell, n_shells, off, out):  # pragma: no cover
    """``out[k, s] = Σ`` folded weight of class ``k`` over the grid voxels of shell ``s``
    (float64 ``(K, S)``; divide by the voxel counts for the mean)."""
    Z, Y, X = grid_shell.shape
    K = acc.shape[4]
    part = np.zeros((Z, K, n_shells), np.float64)
    for z in nb.prange(Z):
        zm = 2 * off - z
        for y in range(Y):
            ym = 2 * off - y
            for x in range(X):
                s = grid_shell[z, y, x]
                if s >= n_shells:
                    continue
                for k in range(K):
                    w = _acc3(acc, hsel, z, y, x, k, 2)
                    if x == 0 and 0 <= zm < Z and 0 <= ym < Y:
                        w += _acc3(acc, hsel, zm, ym, 0, k, 2)
                    part[z, k, s] += w
    for z in range(Z):
        for k in range(K):
            for s in range(n_shells):
                out[k, s] += part[z, k, s]


@nb.njit(parallel=True, cache=True, nogil=True)
def solve_kernel(acc, hsel, reg, grid_shell, contrast, R, off, P, out):  # pragma: no cover
    """Regularised solution ``num / (wgt + reg)`` into the padded rfftn layout, pre-multiplied
    by ``(−1)^(kz+ky+kx)`` so that ``irfftn`` returns the volume already ``fftshift``-ed. With
    ``contrast``: each class's contrast ``(num_k − wgt_k·c) / (wgt_k + reg_k)`` against the
    pooled mean ``c = Σ_j num_j / Σ_j wgt_j`` of all classes at the voxel.

    ``reg (K, S)`` float32 per-shell regulariser (``inf``: drop the shell); voxels at shell ≥ S
    are zero. Every element of ``out (K, P, P, P//2+1)`` complex64 is written (``P = 2R``: the
    loops cover all of it), so it need not be zeroed: at P = 96, K = 3 zeroing it first took
    ~1 ms of each solve, five solves per M-step.
    """
    K = acc.shape[4]
    S = reg.shape[1]
    Z, Y = grid_shell.shape[0], grid_shell.shape[1]
    for zz in nb.prange(2 * R):
        z = off - R + zz
        kz = zz - R
        iz = kz % P
        zm = 2 * off - z
        nr = np.empty(K, np.float32)
        ni = np.empty(K, np.float32)
        w = np.empty(K, np.float32)
        for yy in range(2 * R):
            y = off - R + yy
            ky = yy - R
            iy = ky % P
            ym = 2 * off - y
            for x in range(R + 1):
                s = grid_shell[z, y, x]
                if s >= S:
                    for k in range(K):
                        out[k, iz, iy, x] = 0
                    continue
                sign = np.float32(1.0 - 2.0 * ((kz + ky + x) & 1))
                mirror = x == 0 and 0 <= zm < Z and 0 <= ym < Y
                for k in range(K):  # the Hermitian-folded statistics of every class
                    nr[k] = _acc3(acc, hsel, z, y, x, k, 0)
                    ni[k] = _acc3(acc, hsel, z, y, x, k, 1)
                    w[k] = _acc3(acc, hsel, z, y, x, k, 2)
                    if mirror:
                        nr[k] += _acc3(acc, hsel, zm, ym, 0, k, 0)
                        ni[k] -= _acc3(acc, hsel, zm, ym, 0, k, 1)
                        w[k] += _acc3(acc, hsel, zm, ym, 0, k, 2)
                cr = np.float32(0.0)
                ci = np.float32(0.0)
                if contrast:
                    sr = np.float32(0.0)
                    si = np.float32(0.0)
                    sw = np.float32(0.0)
                    for k in range(K):
                        sr += nr[k]
                        si += ni[k]
                        sw += w[k]
                    if sw > 0:
                        cr = sr / sw
                        ci = si / sw
                for k in range(K):
                    r = reg[k, s]
                    if not np.isfinite(r):
                        out[k, iz, iy, x] = 0
                        continue
                    ar = nr[k]
                    ai = ni[k]
                    if contrast:
                        ar -= w[k] * cr
                        ai -= w[k] * ci
                    d = sign / (w[k] + r)
                    out[k, iz, iy, x] = complex(ar * d, ai * d)


@nb.njit(parallel=True, cache=True, nogil=True)
def fourier_to_grid_kernel(F, R, off, P, grid):  # pragma: no cover - jit
    """Copy frequencies ``-R..R-1`` (z, y) and ``0..R`` (x) of ``F (K, P, P, P//2+1)`` — the
    rfftn of a padded volume *not* ``ifftshift``-ed — into ``grid (Z, Y, X, K)``, multiplying by
    ``(−1)^(kz+ky+kx)``, which is what the ``ifftshift`` would have done (even ``P``)."""
    K = F.shape[0]
    for zz in nb.prange(2 * R):
        kz = zz - R
        iz = kz % P
        for yy in range(2 * R):
            ky = yy - R
            iy = ky % P
            for x in range(R + 1):
                sign = np.float32(1.0 - 2.0 * ((kz + ky + x) & 1))
                for k in range(K):
                    grid[off + kz, off + ky, x, k] = F[k, iz, iy, x] * sign
