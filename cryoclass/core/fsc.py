"""Fourier shell correlation, resolution shells and radial spectra.

All functions take NumPy or CuPy arrays (the backend follows the inputs) and use the package's
Fourier convention: ``F = rfftn(ifftshift(vol))`` (unnormalised, Hermitian half-space, last axis
``kx = 0..D//2``, other axes in ``fftfreq`` order). Shell ``s`` holds the voxels whose integer
frequency radius ``|k|`` rounds to ``s``; its spatial frequency is ``s / (D · pixel_size_A)`` 1/Å.
Shells run from 0 (DC) to ``D // 2`` (Nyquist); corner voxels beyond Nyquist are left out.

Sums over shells count every half-space voxel with its Hermitian twin (weight 2 except on the
``kx = 0`` plane and, for even ``D``, the ``kx = D/2`` plane), so they equal full-space sums.

Example
-------
>>> import numpy as np
>>> from cryoclass.core.fsc import fsc, resolution_at
>>> rng = np.random.default_rng(0)
>>> v = rng.standard_normal((16, 16, 16))
>>> freq, curve = fsc(v, v, pixel_size_A=2.0)
>>> bool(np.allclose(curve, 1.0)), float(resolution_at(freq, curve))
(True, 4.0)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import backend as _fft
from ..backend import get_array_module, scatter_add, to_numpy
from ..errors import ParameterError

__all__ = [
    "shell_index",
    "shell_index_2d",
    "n_shells_for",
    "hermitian_weights",
    "shell_frequencies",
    "shell_sum",
    "shell_counts",
    "spectrum_by_shell",
    "fsc_fourier",
    "fsc",
    "fsc_batched",
    "resolution_at",
    "fsc_weight",
    "ssnr_from_fsc",
]


def n_shells_for(D: int) -> int:
    """Number of shells from DC to Nyquist for box ``D``: ``D // 2 + 1``."""
    return D // 2 + 1


def _int_freqs(D: int, xp: Any) -> tuple[Any, Any]:
    full = xp.fft.fftfreq(D, d=1.0 / D)
    half = xp.arange(D // 2 + 1, dtype=full.dtype)
    return full, half


def shell_index(D: int, xp: Any = np) -> Any:
    """Integer shell of every ``rfftn`` voxel of a ``(D, D, D)`` volume.

    Parameters
    ----------
    D : int
        Box size (odd or even).
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    idx : int64 array, shape ``(D, D, D//2 + 1)``
        ``round(sqrt(kz² + ky² + kx²))`` with integer frequencies ``k``; values above ``D // 2``
        are beyond Nyquist (the cube's corners). On NumPy one shared, read-only array per ``D``.
    """
    if xp is np:
        return _shell_index_np(int(D))
    return _shell_index(D, xp)


def _shell_index(D: int, xp: Any) -> Any:
    full, half = _int_freqs(D, xp)
    r2 = full[:, None, None] ** 2 + full[None, :, None] ** 2 + half[None, None, :] ** 2
    return xp.rint(xp.sqrt(r2)).astype(xp.int64)


@functools.lru_cache(maxsize=16)
def _shell_index_np(D: int) -> np.ndarray:
    """The NumPy one, made once per box (every FSC and M-step asks for it), read-only."""
    idx = _shell_index(D, np)
    idx.flags.writeable = False
    return idx


def shell_index_2d(D: int, xp: Any = np) -> Any:
    """Integer shell of every ``rfft2`` pixel of a ``(D, D)`` image, shape ``(D, D//2 + 1)``."""
    full, half = _int_freqs(D, xp)
    r2 = full[:, None] ** 2 + half[None, :] ** 2
    return xp.rint(xp.sqrt(r2)).astype(xp.int64)


def hermitian_weights(D: int, xp: Any = np) -> Any:
    """Multiplicity of each ``kx`` column of an ``rfft`` half-space, shape ``(D//2 + 1,)``.

    2 for columns whose Hermitian twin is not stored, 1 for ``kx = 0`` and (even ``D``)
    ``kx = D/2``. Broadcasts against the last axis of any ``rfft`` array.
    """
    w = xp.full(D // 2 + 1, 2.0)
    w[0] = 1.0
    if D % 2 == 0:
        w[-1] = 1.0
    return w


def shell_frequencies(D: int, pixel_size_A: float = 1.0, xp: Any = np) -> Any:
    """Spatial frequency (1/Å) of shells ``0..D//2``: ``s / (D · pixel_size_A)``."""
    if not pixel_size_A > 0:
        raise ParameterError("pixel_size_A", f"must be positive, got {pixel_size_A}")
    return xp.arange(n_shells_for(D), dtype=xp.float64) / (D * pixel_size_A)


def shell_sum(values: Any, shell_idx: Any, n_shells: int) -> Any:
    """Hermitian-weighted sum of real ``values`` over shells.

    Parameters
    ----------
    values : real array, shape ``(..., *shell_idx.shape)``
        Quantities on an ``rfft`` half-space grid (2D or 3D), with optional leading batch axes.
    shell_idx : int array
        From :func:`shell_index` / :func:`shell_index_2d`; its first axis length is ``D``.
    n_shells : int
        Shells kept (voxels with a larger index are ignored).

    Returns
    -------
    sums : float64 array, shape ``(..., n_shells)``
        Sums over the full (Hermitian-completed) transform.
    """
    xp = get_array_module(values, shell_idx)
    D = shell_idx.shape[0]
    grid_nd = shell_idx.ndim
    lead = values.shape[: values.ndim - grid_nd]
    if values.shape[values.ndim - grid_nd :] != shell_idx.shape:
        raise ValueError(f"values shape {values.shape} does not end with {shell_idx.shape}")
    w = hermitian_weights(D, xp)
    vals = (values.astype(xp.float64, copy=False) * w).reshape(-1, shell_idx.size)
    n_batch = vals.shape[0]
    from .slices import _use_xp

    if _use_xp("auto", xp):  # one scatter: boolean selection and bincount wait for the GPU
        sums = xp.zeros((n_shells + 1, n_batch), xp.float64)  # row n_shells: the ignored
        scatter_add(sums, xp.minimum(shell_idx.ravel(), n_shells), vals.T)
        return sums[:n_shells].T.reshape(lead + (n_shells,))
    idx = shell_idx.ravel()
    keep = idx < n_shells
    idx = idx[keep]
    vals = vals[:, keep]
    offsets = (xp.arange(n_batch, dtype=xp.int64) * n_shells)[:, None]
    flat_idx = (idx[None, :] + offsets).ravel()
    sums = xp.bincount(flat_idx, weights=vals.ravel(), minlength=n_batch * n_shells)
    return sums.reshape(lead + (n_shells,))


def shell_counts(shell_idx: Any, n_shells: int) -> Any:
    """Number of full-space voxels in each shell (Hermitian twins counted), float64."""
    xp = get_array_module(shell_idx)
    return shell_sum(xp.ones(shell_idx.shape), shell_idx, n_shells)


def spectrum_by_shell(F: Any, shell_idx: Any, n_shells: int) -> Any:
    """Radially averaged power ``⟨|F|²⟩`` per shell of ``rfft`` arrays.

    Parameters
    ----------
    F : complex array, shape ``(..., *shell_idx.shape)``
        Half-space transforms (2D or 3D) with optional leading batch axes.
    shell_idx, n_shells
        As in :func:`shell_sum`.

    Returns
    -------
    power : float64 array, shape ``(..., n_shells)``
        Mean of ``|F|²`` over all full-space voxels of each shell (0 for empty shells).
    """
    xp = get_array_module(F, shell_idx)
    p = (F.real.astype(xp.float64) ** 2) + (F.imag.astype(xp.float64) ** 2)
    sums = shell_sum(p, shell_idx, n_shells)
    counts = shell_counts(shell_idx, n_shells)
    return sums / xp.maximum(counts, 1.0)


def _fsc_shell_sums(F1: Any, F2: Any, shell_idx: Any, n_shells: int, impl: str) -> tuple:
    """Hermitian-weighted shell sums of ``Re(F₁ F₂*)``, ``|F₁|²``, ``|F₂|²``, each float64
    ``(..., n_shells)``: one Numba pass for NumPy volumes (``impl='auto'``), else array code."""
    from .slices import _use_xp

    xp = get_array_module(F1, F2)
    if shell_idx.ndim == 3 and not _use_xp(impl, xp):
        from ._fsc_numba import fsc_sums_kernel

        lead = F1.shape[:-3]
        a = np.ascontiguousarray(F1).reshape((-1,) + F1.shape[-3:])
        b = np.ascontiguousarray(F2).reshape((-1,) + F2.shape[-3:])
        out = np.empty((a.shape[0], 3, n_shells))
        sh = np.ascontiguousarray(shell_idx, dtype=np.int64)
        fsc_sums_kernel(a, b, sh, n_shells, out)
        return tuple(out[:, j].reshape(lead + (n_shells,)) for j in range(3))
    a = F1.astype(xp.complex128, copy=False)
    b = F2.astype(xp.complex128, copy=False)
    num = shell_sum((a * b.conj()).real, shell_idx, n_shells)
    p1 = shell_sum(a.real**2 + a.imag**2, shell_idx, n_shells)
    p2 = shell_sum(b.real**2 + b.imag**2, shell_idx, n_shells)
    return num, p1, p2


def fsc_fourier(
    F1: Any,
    F2: Any,
    shell_idx: Any | None = None,
    n_shells: int | None = None,
    impl: str = "auto",
) -> Any:
    """FSC between ``rfft`` transforms ``(..., D, D, D//2+1)`` (or 2D ``(..., D, D//2+1)``).

    Returns float64 ``(..., n_shells)``; ``n_shells`` defaults to ``D // 2 + 1``. Shells where
    either transform has no power get 0. ``impl``: ``'auto'`` (a Numba pass for NumPy
    volumes) or ``'xp'`` (the array code, as on the GPU).
    """
    xp = get_array_module(F1, F2)
    if F1.shape != F2.shape:
        raise ValueError(f"FSC needs equal shapes, got {F1.shape} and {F2.shape}")
    if shell_idx is None:
        D = F1.shape[-2]
        shell_idx = shell_index(D, xp) if F1.ndim >= 3 else shell_index_2d(D, xp)
        if F1.ndim >= 3 and F1.shape[-3] != D:
            raise ValueError(f"not an rfftn volume transform: shape {F1.shape}")
    if n_shells is None:
        n_shells = n_shells_for(shell_idx.shape[0])
    num, p1, p2 = _fsc_shell_sums(F1, F2, shell_idx, n_shells, impl)
    den = xp.sqrt(p1 * p2)
    ok = den > 0
    return xp.where(ok, num / xp.where(ok, den, 1.0), 0.0)


def _check_volumes(v1: Any, v2: Any, mask: Any, lead: int) -> int:
    if v1.shape != v2.shape:
        raise ValueError(f"FSC needs equal shapes, got {v1.shape} and {v2.shape}")
    if v1.ndim != 3 + lead or len(set(v1.shape[lead:])) != 1:
        want = "(K, D, D, D)" if lead else "(D, D, D)"
        raise ValueError(f"FSC expects cubic volumes {want}, got shape {v1.shape}")
    D = int(v1.shape[-1])
    if mask is not None and tuple(mask.shape) != (D, D, D):
        raise ValueError(f"mask shape {mask.shape} does not match volumes of box {D}")
    return D


def _fsc_real(v1: Any, v2: Any, mask: Any, pixel_size_A: float, lead: int) -> tuple[Any, Any]:
    xp = get_array_module(v1, v2, mask)
    D = _check_volumes(v1, v2, mask, lead)
    freq = shell_frequencies(D, pixel_size_A, xp)
    # both maps (masked) in one array, so one transform call does both: at the low-res init box
    # (20³, K = 3-12) two calls took 1.5-1.7× as long as one
    if mask is None:
        both = xp.stack([v1, v2])
    else:
        both = xp.empty((2, *v1.shape), dtype=np.result_type(v1.dtype, v2.dtype, mask.dtype))
        xp.multiply(v1, mask, out=both[0])
        xp.multiply(v2, mask, out=both[1])
    # no ifftshift: a shift multiplies both transforms by the same phase, which cancels in
    # F₁ F₂* and |F|² (the FSC is that of the centred maps to rounding)
    F = _fft.rfftn(both, axes=(-3, -2, -1))
    return freq, fsc_fourier(F[0], F[1], shell_index(D, xp), n_shells_for(D))


def fsc(
    vol1: Any, vol2: Any, mask: Any | None = None, pixel_size_A: float = 1.0
) -> tuple[Any, Any]:
    """Fourier shell correlation of two real volumes.

    Parameters
    ----------
    vol1, vol2 : real arrays, shape ``(D, D, D)``
        Half-maps (odd or even ``D``).
    mask : real array ``(D, D, D)``, optional
        Multiplied onto both maps in real space before the transform.
    pixel_size_A : float
        Pixel size in Å.

    Returns
    -------
    freq_invA : float64 array ``(D//2 + 1,)``
        Shell frequencies in 1/Å (shell 0 = DC, last = Nyquist).
    fsc : float64 array ``(D//2 + 1,)``
    """
    return _fsc_real(vol1, vol2, mask, pixel_size_A, lead=0)


def fsc_batched(
    vols1: Any, vols2: Any, mask: Any | None = None, pixel_size_A: float = 1.0
) -> tuple[Any, Any]:
    """FSC per class: volumes ``(K, D, D, D)`` → ``(freq_invA (n_shells,), fsc (K, n_shells))``.

    ``mask`` ``(D, D, D)`` is shared by all classes. See :func:`fsc`.
    """
    return _fsc_real(vols1, vols2, mask, pixel_size_A, lead=1)


def resolution_at(freq: Any, fsc_curve: Any, threshold: float = 0.143) -> float:
    """Resolution (Å) where an FSC curve first falls below ``threshold``.

    Parameters
    ----------
    freq : array ``(n_shells,)``
        Increasing shell frequencies in 1/Å (``freq[0]`` may be 0).
    fsc_curve : array ``(n_shells,)``
        FSC values; NaN shells are ignored.
    threshold : float
        0.143 (gold standard) or 0.5, for instance.

    Returns
    -------
    float
        ``1 / ξ*`` where ``ξ*`` is the linearly interpolated frequency of the first downward
        crossing. If the curve never drops below the threshold, the resolution of the last
        (Nyquist) shell. ``inf`` if it is below the threshold already at zero frequency, NaN if
        there is no valid value at all.
    """
    f = np.asarray(to_numpy(freq), dtype=np.float64).ravel()
    c = np.asarray(to_numpy(fsc_curve), dtype=np.float64).ravel()
    if f.shape != c.shape:
        raise ValueError(f"freq {f.shape} and fsc {c.shape} differ in length")
    ok = np.isfinite(c) & np.isfinite(f)
    f, c = f[ok], c[ok]
    if f.size == 0:
        return float("nan")
    below = np.nonzero(c < threshold)[0]
    if below.size == 0:
        return float(1.0 / f[-1]) if f[-1] > 0 else float("inf")
    i = int(below[0])
    if i == 0:
        f_cross = f[0]
    else:
        t = (c[i - 1] - threshold) / (c[i - 1] - c[i])
        f_cross = f[i - 1] + t * (f[i] - f[i - 1])
    return float(1.0 / f_cross) if f_cross > 0 else float("inf")


def fsc_weight(fsc_curve: Any) -> Any:
    """Full-map FSC weight ``sqrt(2 FSC / (1 + FSC))`` (Rosenthal & Henderson), FSC clipped to
    ``[0, 1]``; returns values in ``[0, 1]`` (0 where FSC ≤ 0 or NaN)."""
    xp = get_array_module(fsc_curve)
    c = xp.clip(xp.nan_to_num(xp.asarray(fsc_curve, dtype=xp.float64), nan=0.0), 0.0, 1.0)
    return xp.sqrt(2.0 * c / (1.0 + c))


def ssnr_from_fsc(fsc_curve: Any, full_map: bool = False, max_fsc: float = 0.999) -> Any:
    """Spectral signal-to-noise ratio from a half-map FSC.

    ``SSNR = FSC / (1 − FSC)`` for one half-map; with ``full_map=True`` the SSNR of the sum of
    both halves, ``2 FSC / (1 − FSC)`` (= FSC'/(1 − FSC') with FSC' = 2FSC/(1+FSC)). FSC is
    clipped to ``[0, max_fsc]`` (NaN → 0), so the result is finite and ≥ 0.
    """
    xp = get_array_module(fsc_curve)
    c = xp.clip(xp.nan_to_num(xp.asarray(fsc_curve, dtype=xp.float64), nan=0.0), 0.0, max_fsc)
    s = c / (1.0 - c)
    return 2.0 * s if full_map else s
