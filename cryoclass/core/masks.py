"""Real-space masks: automatic solvent mask, soft edges, spheres, resampling and validation.

Masks are real ``(D, D, D)`` arrays in ``[0, 1]`` indexed ``[z, y, x]`` with the origin at
``D // 2`` (float32 on return). Functions follow the backend of their inputs. The Euclidean
distance transform and connected-component labelling use ``scipy.ndimage`` on the CPU and
``cupyx.scipy.ndimage`` on the GPU when it provides them (CuPy ≥ 13); otherwise the binary
volume is copied to the host for that step and the result copied back — masks are made once per
job, so the copy does not matter.

Example
-------
>>> import numpy as np
>>> from cryoclass.core.masks import auto_solvent_mask, spherical_mask
>>> ball = spherical_mask(48, radius_px=8)
>>> m = auto_solvent_mask(ball, pixel_size_A=2.0)
>>> float(m[24, 24, 24]), float(m[24, 24, 24 + 8 + 12])   # centre; 24 Å from the surface
(1.0, 0.0)
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..backend import get_array_module, to_numpy
from ..errors import InputFileError, ParameterError

__all__ = [
    "spherical_mask",
    "soft_edge",
    "distance_to_set",
    "auto_solvent_mask",
    "resample_mask",
    "check_mask",
]


def _ndimage(xp: Any, func: str) -> Any | None:
    """``func`` from scipy.ndimage (NumPy) or cupyx.scipy.ndimage (CuPy); None if unavailable."""
    if xp is np:
        import scipy.ndimage as ndi

        return getattr(ndi, func)
    try:  # pragma: no cover - GPU only
        return getattr(importlib.import_module("cupyx.scipy.ndimage"), func, None)
    except ImportError:  # pragma: no cover
        return None


def _cosine_falloff(xp: Any, d: Any, start: float, width: float) -> Any:
    """1 for ``d ≤ start``, raised cosine to 0 at ``start + width``, 0 beyond (float32)."""
    if width <= 0:
        return (d <= start).astype(xp.float32)
    t = xp.clip((d - start) / width, 0.0, 1.0)
    return (0.5 * (1.0 + xp.cos(np.pi * t))).astype(xp.float32)


def spherical_mask(
    D: int, radius_px: float, soft_px: float = 0.0, xp: Any = np, ndim: int = 3
) -> Any:
    """Sphere (or disc, ``ndim=2``) of ``radius_px`` about ``D // 2`` with a cosine soft edge.

    Returns float32 ``(D,)*ndim``: 1 for ``r ≤ radius_px``, falling to 0 at
    ``radius_px + soft_px``.
    """
    if not radius_px >= 0 or not soft_px >= 0:
        raise ParameterError("radius_px", f"radius {radius_px} and soft edge {soft_px} must be ≥ 0")
    c = xp.arange(D, dtype=xp.float64) - D // 2
    r2 = xp.zeros((D,) * ndim)
    for ax in range(ndim):
        shape = [1] * ndim
        shape[ax] = D
        r2 = r2 + (c**2).reshape(shape)
    return _cosine_falloff(xp, xp.sqrt(r2), radius_px, soft_px)


def distance_to_set(binary: Any) -> Any:
    """Euclidean distance (px, float64) from every voxel to the nearest ``True`` voxel.

    0 inside the set. Raises ``ValueError`` if the set is empty.
    """
    xp = get_array_module(binary)
    b = binary.astype(bool)
    if not bool(b.any()):
        raise ValueError("cannot take the distance to an empty set")
    edt = _ndimage(xp, "distance_transform_edt")
    if edt is None:  # pragma: no cover - old CuPy: do it on the host
        import scipy.ndimage as ndi

        return xp.asarray(ndi.distance_transform_edt(~to_numpy(b)))
    return edt(~b).astype(xp.float64, copy=False)


def soft_edge(binary: Any, width_px: float) -> Any:
    """Binary mask → soft mask: 1 on the set, raised cosine to 0 at ``width_px`` outside it."""
    if not width_px >= 0:
        raise ParameterError("width_px", f"must be ≥ 0, got {width_px}")
    xp = get_array_module(binary)
    return _cosine_falloff(xp, distance_to_set(binary), 0.0, float(width_px))


def _largest_component(binary: Any) -> Any:
    xp = get_array_module(binary)
    label = _ndimage(xp, "label")
    if label is None:  # pragma: no cover
        import scipy.ndimage as ndi

        label = ndi.label
        lab, n = label(to_numpy(binary))
        lab = xp.asarray(lab)
    else:
        lab, n = label(binary)
    if int(n) <= 1:
        return binary
    sizes = xp.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def auto_solvent_mask(
    vol: Any,
    pixel_size_A: float,
    threshold: float = 0.2,
    lowpass_A: float | None = 15.0,
    dilate_A: float = 10.0,
    soft_edge_A: float = 10.0,
    largest_component: bool = False,
) -> Any:
    """Solvent mask from a map, as CryoSPARC builds it for 3D classification.

    Low-pass the map to ``lowpass_A``, threshold at ``threshold · max``, optionally keep the
    largest connected component, then set the mask to 1 within ``dilate_A`` of that set and let
    it fall to 0 along a raised cosine over the next ``soft_edge_A`` Å.

    Parameters
    ----------
    vol : real array ``(D, D, D)``
        The (consensus) map.
    pixel_size_A : float
        Pixel size, Å.
    threshold : float
        Fraction of the low-passed map's maximum, in ``(0, 1]``.
    lowpass_A : float or None
        Low-pass resolution (cosine edge), Å; None to use the map as it is.
    dilate_A, soft_edge_A : float
        Dilation distance and soft-edge width, Å (distances measured with a Euclidean distance
        transform from voxel centres).
    largest_component : bool
        Keep only the largest face-connected component of the thresholded set.

    Returns
    -------
    mask : float32 ``(D, D, D)`` in ``[0, 1]``
    """
    from .filters import lowpass

    xp = get_array_module(vol)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"expected a cubic volume (D, D, D), got shape {vol.shape}")
    if not pixel_size_A > 0:
        raise ParameterError("pixel_size_A", f"must be positive, got {pixel_size_A}")
    if not 0 < threshold <= 1:
        raise ParameterError("threshold", f"must be in (0, 1], got {threshold}")
    if not (dilate_A >= 0 and soft_edge_A >= 0):
        raise ParameterError(
            "dilate_A", f"dilate {dilate_A} and soft edge {soft_edge_A} must be ≥ 0"
        )
    v = xp.asarray(vol, dtype=xp.float32)
    if lowpass_A is not None:
        v = lowpass(v, lowpass_A, pixel_size_A, kind="cosine")
    vmax = float(v.max())
    if not np.isfinite(vmax) or vmax <= 0:
        raise ParameterError(
            "vol", f"map maximum is {vmax}; cannot threshold a map with no positive density"
        )
    binary = v >= threshold * vmax
    if largest_component:
        binary = _largest_component(binary)
    d_A = distance_to_set(binary) * pixel_size_A
    return _cosine_falloff(xp, d_A, float(dilate_A), float(soft_edge_A))


def _linear_matrix(xp: Any, D: int, D_new: int) -> Any:
    """(D_new, D) linear-interpolation matrix mapping a centred axis of D to D_new samples
    over the same physical length (zero outside the old box)."""
    c = (xp.arange(D_new, dtype=xp.float64) - D_new // 2) * (D / D_new) + D // 2
    i0 = xp.floor(c)
    t = c - i0
    i0 = i0.astype(xp.int64)
    M = xp.zeros((D_new, D), dtype=xp.float64)
    rows = xp.arange(D_new)
    for off, w in ((0, 1.0 - t), (1, t)):
        j = i0 + off
        ok = (j >= 0) & (j < D)
        M[rows[ok], j[ok]] += w[ok]
    return M


def resample_mask(mask: Any, D_new: int, method: str = "linear") -> Any:
    """Resample a mask ``(D, D, D)`` to ``(D_new,)*3`` covering the same physical box.

    Parameters
    ----------
    mask : real array ``(D, D, D)``
    D_new : int
        New box (the pixel size becomes ``apix · D / D_new``).
    method : {"linear", "fourier"}
        Separable trilinear interpolation (no ringing; default) or Fourier crop/pad.

    Returns
    -------
    float32 ``(D_new, D_new, D_new)`` clipped to ``[0, 1]``.
    """
    xp = get_array_module(mask)
    if mask.ndim != 3 or len(set(mask.shape)) != 1:
        raise ValueError(f"expected a cubic mask (D, D, D), got shape {mask.shape}")
    if not (isinstance(D_new, int | np.integer) and D_new >= 1):
        raise ParameterError("D_new", f"must be a positive integer, got {D_new!r}")
    D = int(mask.shape[0])
    if method == "fourier":
        from ..conventions import resample_volume

        out = resample_volume(xp.asarray(mask, dtype=xp.float64), int(D_new))
    elif method == "linear":
        M = _linear_matrix(xp, D, int(D_new))
        out = xp.einsum("az,zyx->ayx", M, xp.asarray(mask, dtype=xp.float64))
        out = xp.einsum("by,ayx->abx", M, out)
        out = xp.einsum("cx,abx->abc", M, out)
    else:
        raise ParameterError("method", f"must be 'linear' or 'fourier', got {method!r}")
    return xp.clip(out, 0.0, 1.0).astype(xp.float32)


def check_mask(
    mask: Any,
    box: int,
    pixel_size_A: float,
    name: str = "mask",
    mask_pixel_size_A: float | None = None,
    rel_tol: float = 1e-3,
    value_tol: float = 1e-3,
) -> Any:
    """Validate a user mask against the particles' box and pixel size.

    Parameters
    ----------
    mask : real array
        The mask as read from its file.
    box, pixel_size_A : int, float
        The box (px) and pixel size (Å) the mask must have.
    name : str
        File name (or parameter name) shown in error messages.
    mask_pixel_size_A : float, optional
        The mask file's own pixel size (header), checked when given.
    rel_tol, value_tol : float
        Relative pixel-size tolerance; slack on the ``[0, 1]`` range.

    Returns
    -------
    float32 mask clipped to ``[0, 1]`` (same backend).

    Raises
    ------
    ParameterError
        ``box`` or ``pixel_size_A`` themselves are invalid.
    InputFileError
        Wrong shape or pixel size, NaN/inf values, values outside ``[0, 1]``, or an all-zero mask.
    """
    if not (isinstance(box, int | np.integer) and box >= 1):
        raise ParameterError("box", f"must be a positive integer, got {box!r}")
    if not pixel_size_A > 0:
        raise ParameterError("pixel_size_A", f"must be positive, got {pixel_size_A}")
    xp = get_array_module(mask)
    shape = tuple(int(s) for s in getattr(mask, "shape", ()))
    if shape != (box,) * 3:
        raise InputFileError(
            name, f"mask has shape {shape}, expected ({box}, {box}, {box}) to match the particles"
        )
    if (
        mask_pixel_size_A is not None
        and abs(mask_pixel_size_A - pixel_size_A) > rel_tol * pixel_size_A
    ):
        raise InputFileError(
            name,
            f"mask pixel size {mask_pixel_size_A:g} Å differs from the particles' "
            f"{pixel_size_A:g} Å",
        )
    m = xp.asarray(mask, dtype=xp.float32)
    if not bool(xp.isfinite(m).all()):
        raise InputFileError(name, "mask contains NaN or infinite values")
    lo, hi = float(m.min()), float(m.max())
    if lo < -value_tol or hi > 1 + value_tol:
        raise InputFileError(
            name,
            f"mask values span [{lo:g}, {hi:g}], outside [0, 1]; is this a map rather than a mask?",
        )
    if hi <= 0:
        raise InputFileError(name, "mask is zero everywhere")
    return xp.clip(m, 0.0, 1.0)
