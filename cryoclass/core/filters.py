"""Isotropic Fourier filters for real images/volumes and for their ``rfft`` transforms.

Resolutions are in Å, pixel sizes in Å/px; the filter is a function of the spatial frequency
``|ξ| = |k| / (D · pixel_size_A)`` (1/Å). Kinds:

* ``"hard"``: 1 for ``|ξ| ≤ 1/res`` (low-pass), 0 beyond.
* ``"cosine"``: raised-cosine edge centred on ``1/res``, ``edge_shells`` wide (default 2 shells,
  like RELION's ``--filter_edge_width``), or spanning resolutions ``res ± edge_A/2`` when
  ``edge_A`` is given (1 at ``1/(res + edge_A/2)``, 0 at ``1/(res − edge_A/2)``).
* ``"butterworth"``: ``1 / sqrt(1 + (|ξ| res)^(2·order))`` — half power exactly at ``1/res``.

High-pass filters are the complements (``1 − low-pass`` for hard/cosine, ``(1/(|ξ| res))``
in the Butterworth formula). Real inputs use the package convention
``F = rfftn(ifftshift(x))``; ``ndim`` says how many trailing axes are spatial (3 by default, 2
for images or image stacks).

Example
-------
>>> import numpy as np
>>> from cryoclass.core.filters import lowpass
>>> v = np.random.default_rng(0).standard_normal((32, 32, 32))
>>> lowpass(v, resolution_A=10.0, pixel_size_A=2.0).shape
(32, 32, 32)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend as _fft
from ..backend import get_array_module
from ..errors import ParameterError

__all__ = [
    "frequency_radius",
    "filter_profile",
    "lowpass",
    "highpass",
    "lowpass_fourier",
    "highpass_fourier",
    "apply_radial_filter",
    "apply_radial_filter_fourier",
]

_KINDS = ("hard", "cosine", "butterworth")


def frequency_radius(D: int, pixel_size_A: float = 1.0, ndim: int = 3, xp: Any = np) -> Any:
    """``|ξ|`` in 1/Å on the ``rfft`` grid of a ``D``-box, shape ``(D,)*(ndim-1) + (D//2+1,)``."""
    full = xp.fft.fftfreq(D, d=pixel_size_A)
    half = xp.fft.rfftfreq(D, d=pixel_size_A)
    r2 = half**2
    for ax in range(ndim - 1):
        shape = [1] * ndim
        shape[ax] = D
        r2 = r2 + (full**2).reshape(shape)
    return xp.sqrt(r2)


def _check(resolution_A: float, pixel_size_A: float) -> None:
    if not pixel_size_A > 0:
        raise ParameterError("pixel_size_A", f"must be positive, got {pixel_size_A}")
    if not resolution_A > 0:
        raise ParameterError("resolution_A", f"must be positive, got {resolution_A}")


def _cosine_band(
    resolution_A: float, D: int, pixel_size_A: float, edge_shells: float, edge_A: float | None
) -> tuple[float, float]:
    """Frequencies (1/Å) where the cosine edge starts (value 1) and ends (value 0)."""
    if edge_A is not None:
        if not 0 <= edge_A < 2 * resolution_A:
            raise ParameterError(
                "edge_A",
                f"must be in [0, 2·resolution_A) = [0, {2 * resolution_A:g}), got {edge_A}",
            )
        return 1.0 / (resolution_A + edge_A / 2), 1.0 / (resolution_A - edge_A / 2)
    if not edge_shells >= 0:
        raise ParameterError("edge_shells", f"must be ≥ 0, got {edge_shells}")
    fc, half_w = 1.0 / resolution_A, 0.5 * edge_shells / (D * pixel_size_A)
    return fc - half_w, fc + half_w


def filter_profile(
    freq_invA: Any,
    resolution_A: float,
    *,
    D: int,
    pixel_size_A: float,
    kind: str = "cosine",
    highpass: bool = False,
    edge_shells: float = 2.0,
    edge_A: float | None = None,
    order: int = 8,
) -> Any:
    """Filter value at spatial frequencies ``freq_invA`` (1/Å, any shape, ≥ 0).

    Parameters
    ----------
    freq_invA : real array
        ``|ξ|`` in 1/Å.
    resolution_A : float
        Cutoff resolution in Å (cutoff frequency ``1 / resolution_A``).
    D, pixel_size_A : int, float
        Box and pixel size (Å), used to convert ``edge_shells`` to 1/Å.
    kind : {"hard", "cosine", "butterworth"}
    highpass : bool
        Complement: pass frequencies above the cutoff.
    edge_shells, edge_A : float
        Cosine edge width in shells, or (if given) in Å of resolution; see the module docstring.
    order : int
        Butterworth order (steepness), ≥ 1.

    Returns
    -------
    float64 array, same shape as ``freq_invA``, values in ``[0, 1]``.
    """
    xp = get_array_module(freq_invA)
    _check(resolution_A, pixel_size_A)
    f = xp.asarray(freq_invA, dtype=xp.float64)
    fc = 1.0 / resolution_A
    if kind == "hard":
        low = (f <= fc).astype(xp.float64)
    elif kind == "cosine":
        f0, f1 = _cosine_band(resolution_A, D, pixel_size_A, edge_shells, edge_A)
        if f1 <= f0:
            low = (f <= fc).astype(xp.float64)
        else:
            t = xp.clip((f - f0) / (f1 - f0), 0.0, 1.0)
            low = 0.5 * (1.0 + xp.cos(np.pi * t))
    elif kind == "butterworth":
        if not (isinstance(order, int | np.integer) and order >= 1):
            raise ParameterError("order", f"must be an integer ≥ 1, got {order!r}")
        x = f / fc
        if highpass:
            # 1/sqrt(1 + (fc/f)^2n) written without dividing by zero at DC
            x2n = x ** (2 * order)
            return xp.sqrt(x2n / (1.0 + x2n))
        return 1.0 / xp.sqrt(1.0 + x ** (2 * order))
    else:
        raise ParameterError("kind", f"must be one of {_KINDS}, got {kind!r}")
    return 1.0 - low if highpass else low


def _to_fourier(x: Any, ndim: int) -> tuple[Any, Any, tuple[int, ...]]:
    xp = get_array_module(x)
    axes = tuple(range(-ndim, 0))
    if x.ndim < ndim or len(set(x.shape[-ndim:])) != 1:
        raise ValueError(f"expected {ndim}-D square/cubic trailing axes, got shape {x.shape}")
    return xp, _fft.rfftn(xp.fft.ifftshift(x, axes=axes), axes=axes), axes


def _from_fourier(xp: Any, F: Any, x: Any, axes: tuple[int, ...]) -> Any:
    s = x.shape[-len(axes) :]
    out = xp.fft.fftshift(_fft.irfftn(F, s=s, axes=axes), axes=axes)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    return out.astype(dtype, copy=False)


def _fourier_box(F: Any, ndim: int) -> int:
    if F.ndim < ndim:
        raise ValueError(f"expected at least {ndim} axes, got shape {F.shape}")
    D = int(F.shape[-2])
    if F.shape[-1] != D // 2 + 1 or (ndim == 3 and F.shape[-3] != D):
        raise ValueError(f"not an rfft layout of a {ndim}-D box: shape {F.shape}")
    return D


def lowpass_fourier(
    F: Any, resolution_A: float, pixel_size_A: float, *, ndim: int = 3, **kw: Any
) -> Any:
    """Low-pass an ``rfft`` array ``(..., D, D, D//2+1)`` (``ndim=3``) or ``(..., D, D//2+1)``.

    ``kw``: ``kind``, ``edge_shells``, ``edge_A``, ``order`` as in :func:`filter_profile`.
    Returns a new array of the input dtype.
    """
    xp = get_array_module(F)
    D = _fourier_box(F, ndim)
    f = frequency_radius(D, pixel_size_A, ndim, xp)
    H = filter_profile(f, resolution_A, D=D, pixel_size_A=pixel_size_A, **kw)
    return (F * H).astype(F.dtype, copy=False)


def highpass_fourier(
    F: Any, resolution_A: float, pixel_size_A: float, *, ndim: int = 3, **kw: Any
) -> Any:
    """High-pass counterpart of :func:`lowpass_fourier` (removes frequencies below 1/res)."""
    return lowpass_fourier(F, resolution_A, pixel_size_A, ndim=ndim, highpass=True, **kw)


def lowpass(x: Any, resolution_A: float, pixel_size_A: float, *, ndim: int = 3, **kw: Any) -> Any:
    """Low-pass real arrays (volumes ``(..., D, D, D)`` or, with ``ndim=2``, images).

    Parameters
    ----------
    x : real array
        Trailing ``ndim`` axes are spatial, origin at ``D // 2``.
    resolution_A, pixel_size_A : float
        Cutoff resolution and pixel size, Å.
    ndim : {2, 3}
    **kw
        ``kind`` ("hard" | "cosine" | "butterworth"), ``edge_shells``, ``edge_A``, ``order``.

    Returns
    -------
    Filtered array, same shape; float dtype of ``x`` (float64 for integer input).
    """
    xp, F, axes = _to_fourier(x, ndim)
    return _from_fourier(
        xp, lowpass_fourier(F, resolution_A, pixel_size_A, ndim=ndim, **kw), x, axes
    )


def highpass(x: Any, resolution_A: float, pixel_size_A: float, *, ndim: int = 3, **kw: Any) -> Any:
    """High-pass real arrays; see :func:`lowpass`."""
    return lowpass(x, resolution_A, pixel_size_A, ndim=ndim, highpass=True, **kw)


def apply_radial_filter_fourier(
    F: Any, curve_by_shell: Any, *, ndim: int = 3, fill: float | None = None
) -> Any:
    """Multiply ``rfft`` arrays by a per-shell curve.

    Parameters
    ----------
    F : complex array ``(..., D, D, D//2+1)`` (or 2D layout with ``ndim=2``)
    curve_by_shell : real array ``(n,)``
        Value for integer shells ``0..n-1`` (shell = rounded ``|k|``, as in
        :func:`cryoclass.core.fsc.shell_index`).
    fill : float, optional
        Value for voxels beyond shell ``n-1`` (default: the curve's last value).
    """
    from .fsc import shell_index, shell_index_2d

    xp = get_array_module(F)
    D = _fourier_box(F, ndim)
    curve = xp.asarray(curve_by_shell, dtype=xp.float64).ravel()
    if curve.size == 0:
        raise ValueError("curve_by_shell is empty")
    idx = shell_index(D, xp) if ndim == 3 else shell_index_2d(D, xp)
    last = curve[-1:] if fill is None else xp.asarray([fill], dtype=xp.float64)
    table = xp.concatenate([curve, last])
    H = table[xp.minimum(idx, curve.size)]
    return (F * H).astype(F.dtype, copy=False)


def apply_radial_filter(
    vol: Any, curve_by_shell: Any, *, ndim: int = 3, fill: float | None = None
) -> Any:
    """Multiply the transform of real ``vol`` by a per-shell curve (e.g. an FSC weight).

    See :func:`apply_radial_filter_fourier`; returns a real array of ``vol``'s shape.
    """
    xp, F, axes = _to_fourier(vol, ndim)
    G = apply_radial_filter_fourier(F, curve_by_shell, ndim=ndim, fill=fill)
    return _from_fourier(xp, G, vol, axes)
