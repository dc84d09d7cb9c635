"""Numba kernel of particle preprocessing (see :mod:`cryoclass.engine.problem`).

The array code evaluates, per chunk of particles, ``ifftshift`` → ``rfft2`` → crop → disc →
recentring phase → CTF as six passes over ``(n, M)`` float64/complex128 temporaries, on one
thread. Here the FFT is taken of the images as they are (no ``ifftshift`` copy: for the disc
pixels its effect is the per-frequency factor ``pre = exp(2πi (kx + ky) ⌊D/2⌋ / D)``), and one
parallel pass over particles gathers the disc pixels straight from the full transform, applies
``pre`` and the recentring phase (separable: ``exp(−2πi ξx tx) · exp(−2πi ξy ty)``, evaluated
once per integer frequency ``kx`` and ``ky`` of the particle, not per pixel), evaluates RELION's
CTF (the astigmatism term expanded as ``cos 2(θ − φ) = cos 2θ cos 2φ + sin 2θ sin 2φ``, so only
``sin γ`` is evaluated per pixel), and writes both into the output rows. Everything is float64
until the final float32/complex64 store.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True, nogil=True)
def disc_ctf_kernel(
    F,  # (n, D, D//2+1) complex64 rfft2 of the (un-shifted) images
    rows,  # (M,) int64 row of each disc pixel in the full transform
    cols,  # (M,) int64 column of each disc pixel
    pre_re,  # (M,) float64: Re/Im of the ifftshift factor
    pre_im,
    fx,  # (M,) float64 frequencies (1/Å)
    fy,
    kx,  # (M,) int64 integer frequencies (cycles per box), kx ≥ 0
    ky,
    inv_box_A,  # 1 / (D · apix): frequency (1/Å) of integer frequency 1
    c2t,  # (M,) float64 cos 2θ, sin 2θ of the frequency angle θ
    s2t,
    par,  # (n, 8) float64 CTF constants (engine.problem._ctf_parameters)
    shifts,  # (n, 2) float64 shift_x_A, shift_y_A
    out_rows,  # (n,) int64 output row of each particle
    X_out,  # (N, M) complex64
    C_out,  # (N, M) float32
    finite,  # (n,) bool: every disc pixel and CTF value of the particle finite
):  # pragma: no cover - jit
    n = F.shape[0]
    M = rows.size
    two_pi = 2.0 * np.pi
    kxm = 0
    kym = 0
    for j in range(M):
        kxm = max(kxm, kx[j])
        kym = max(kym, abs(ky[j]))
    for i in nb.prange(n):
        dmean = par[i, 0]
        dhalf = par[i, 1]
        c2a = par[i, 2]
        s2a = par[i, 3]
        k1 = par[i, 4]
        k2 = par[i, 5]
        k35 = par[i, 6]
        bq = par[i, 7]
        sx = shifts[i, 0]
        sy = shifts[i, 1]
        r = out_rows[i]
        ex = np.empty(kxm + 1, np.complex128)  # exp(−2πi ξx tx) for kx = 0..kxm
        for q in range(kxm + 1):
            a = -two_pi * q * inv_box_A * sx
            ex[q] = complex(np.cos(a), np.sin(a))
        ey = np.empty(2 * kym + 1, np.complex128)  # exp(−2πi ξy ty) for ky = −kym..kym
        for q in range(2 * kym + 1):
            a = -two_pi * (q - kym) * inv_box_A * sy
            ey[q] = complex(np.cos(a), np.sin(a))
        ok = True
        for j in range(M):
            v = F[i, rows[j], cols[j]]
            vr = v.real * pre_re[j] - v.imag * pre_im[j]
            vi = v.real * pre_im[j] + v.imag * pre_re[j]
            if not (np.isfinite(vr) and np.isfinite(vi)):
                ok = False
            e = ex[kx[j]] * ey[ky[j] + kym]
            c = e.real
            s = e.imag
            X_out[r, j] = complex(vr * c - vi * s, vr * s + vi * c)
            u2 = fx[j] * fx[j] + fy[j] * fy[j]
            dfocus = dmean + dhalf * (c2t[j] * c2a + s2t[j] * s2a)
            gamma = k1 * dfocus * u2 - k2 * u2 * u2 + k35
            ctf = np.sin(gamma)
            if bq != 0.0:
                ctf *= np.exp(-bq * u2)
            if not np.isfinite(ctf):
                ok = False
            C_out[r, j] = ctf
        finite[i] = ok
