"""Array backend selection: NumPy on the CPU, CuPy on an NVIDIA GPU.

The backend is chosen **per call from the input arrays** (as sigpy does), never by a global switch,
so a notebook can mix CPU and GPU jobs. This is the only module that imports ``cupy``; it imports
safely on machines without CuPy or without a GPU.

Example
-------
>>> import numpy as np
>>> from cryoclass.backend import get_array_module
>>> get_array_module(np.zeros(3)) is np
True
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "get_array_module",
    "cupy_available",
    "to_device",
    "to_numpy",
    "get_device_module",
    "scatter_add",
    "fft_workers",
    "rfftn",
    "irfftn",
    "rfft2",
    "irfft2",
    "irfftn_crop",
]

try:  # pragma: no cover - exercised only where CuPy is installed
    import cupy as _cupy

    try:
        _cupy.cuda.runtime.getDeviceCount()
        _CUPY_OK = True
    except Exception:  # noqa: BLE001 - no driver / no device
        _CUPY_OK = False
except Exception:  # noqa: BLE001 - not installed or broken install
    _cupy = None
    _CUPY_OK = False


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return _CUPY_OK


def _is_cupy(a: Any) -> bool:
    return _cupy is not None and isinstance(a, _cupy.ndarray)


def get_array_module(*arrays: Any) -> ModuleType:
    """Return ``numpy`` or ``cupy`` according to the arrays given.

    Non-array arguments (scalars, None) are ignored. Mixing NumPy and CuPy arrays raises
    ``TypeError`` rather than silently copying between host and device.
    """
    kinds = {_is_cupy(a) for a in arrays if hasattr(a, "shape")}
    if kinds == {True}:
        return _cupy  # type: ignore[return-value]
    if kinds == {True, False}:
        raise TypeError("mixed NumPy and CuPy arrays in one call; move them to one device first")
    return np


def get_device_module(device: str) -> ModuleType:
    """The array module for ``device`` ('cpu' or 'gpu'); clear error when no GPU is usable."""
    if device == "cpu":
        return np
    if device == "gpu":
        if not _CUPY_OK:
            from .errors import ParameterError

            raise ParameterError(
                "device", "'gpu' requested but CuPy with a working GPU is not available"
            )
        return _cupy  # type: ignore[return-value]
    from .errors import ParameterError

    raise ParameterError("device", f"must be 'cpu' or 'gpu', got {device!r}")


def to_device(a: Any, xp: ModuleType) -> Any:
    """Copy/convert ``a`` to the array module ``xp`` (no copy when already there)."""
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


def to_numpy(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array (copying from the GPU when needed)."""
    if _is_cupy(a):
        return a.get()
    return np.asarray(a)


def scatter_add(a: Any, indices: Any, values: Any) -> None:
    """``a[indices] += values`` with repeated indices accumulated (``add.at``: NumPy's, or
    CuPy's, atomic on the GPU). ``indices`` is one integer array indexing ``a``'s first axis
    (``a`` flat, or rows of ``a`` with ``values`` one row per index); ``a`` is modified in
    place. Complex ``a`` must be flat (the GPU's atomics are per real component)."""
    if _is_cupy(a):  # pragma: no cover - GPU only
        if a.dtype.kind == "c":
            ar = a.view(a.real.dtype)
            _cupy.add.at(ar, 2 * indices, values.real.astype(ar.dtype))
            _cupy.add.at(ar, 2 * indices + 1, values.imag.astype(ar.dtype))
        else:
            _cupy.add.at(a, indices, values.astype(a.dtype, copy=False))
        return
    np.add.at(a, indices, values.astype(a.dtype, copy=False))


# --------------------------------------------------------------------------- FFTs
def fft_workers() -> int:
    """Threads for CPU FFTs: Numba's thread count (``NUMBA_NUM_THREADS``), so one setting limits
    the whole job."""
    try:
        import numba

        return max(1, int(numba.get_num_threads()))
    except Exception:  # noqa: BLE001 - numba missing or not initialisable
        return max(1, os.cpu_count() or 1)


def _fft_call(name: str, a: Any, **kw: Any) -> Any:
    if _is_cupy(a):  # pragma: no cover - GPU only
        return getattr(_cupy.fft, name)(a, **kw)
    import scipy.fft

    # SciPy keeps single precision and runs on several threads; NumPy's FFT uses one
    return getattr(scipy.fft, name)(a, workers=fft_workers(), **kw)


def rfftn(a: Any, axes: Any = None) -> Any:
    """``rfftn`` on NumPy (SciPy, multithreaded, single precision kept) or CuPy arrays."""
    return _fft_call("rfftn", a, axes=axes)


def irfftn(a: Any, s: Any = None, axes: Any = None) -> Any:
    """``irfftn`` on NumPy (SciPy, multithreaded) or CuPy arrays."""
    return _fft_call("irfftn", a, s=s, axes=axes)


def rfft2(a: Any) -> Any:
    """``rfft2`` over the last two axes (see :func:`rfftn`)."""
    return _fft_call("rfft2", a)


def irfft2(a: Any, s: Any = None) -> Any:
    """``irfft2`` over the last two axes (see :func:`irfftn`)."""
    return _fft_call("irfft2", a, s=s)


def rfftn_centred(box: Any, P: int) -> Any:
    """``rfftn`` over the last three axes of ``box`` (``(..., D, D, D)`` real) zero-padded to
    ``P³`` with the box at ``[s:s+D]³``, ``s = P//2 − D//2`` (the padded volumes of the slice
    grids). One axis at a time, skipping lines that are all zero: the last axis is transformed
    only on the D² lines that hold the box, the first only on the D columns of it, then the
    middle one on everything (≈ 60 % of the full transform's work, and no P³ real array). The
    same lines go through the same transforms, in the order SciPy's ``rfftn`` takes the axes
    (last, then the others in order), so the result is the same (bit for bit with SciPy
    1.17; ``tests/test_engine_solve.py``)."""
    D = box.shape[-1]
    s = P // 2 - D // 2
    lead = box.shape[:-3]
    if _is_cupy(box):  # pragma: no cover - GPU only
        full = _cupy.zeros((*lead, P, P, P), dtype=box.dtype)
        full[..., s : s + D, s : s + D, s : s + D] = box
        return rfftn(full, axes=(-3, -2, -1))
    import scipy.fft

    w = fft_workers()
    lines = np.zeros((*lead, D, D, P), dtype=box.dtype)  # x padded
    lines[..., s : s + D] = box
    a = scipy.fft.rfft(lines, axis=-1, workers=w)
    del lines
    b = np.zeros((*lead, P, D, P // 2 + 1), dtype=a.dtype)  # z padded
    b[..., s : s + D, :, :] = a
    del a
    b = scipy.fft.fft(b, axis=-3, workers=w, overwrite_x=True)
    c = np.zeros((*lead, P, P, P // 2 + 1), dtype=b.dtype)  # y padded
    c[..., :, s : s + D, :] = b
    del b
    return scipy.fft.fft(c, axis=-2, workers=w, overwrite_x=True)


def irfftn_crop(a: Any, P: int, D: int, overwrite: bool = False) -> Any:
    """``irfftn(a, s=(P, P, P))`` over the last three axes, keeping only the output block
    ``[s:s+D]³`` with ``s = P//2 − D//2``: one axis at a time, cropping after each, so the
    second and third passes transform only the rows that survive (≈ 58 % of the full work for
    D = P/2, the padded solve). Equal to the full transform then crop. ``overwrite``: ``a`` is
    scratch, the first pass may transform it in place (no second padded-grid array: at P = 96,
    K = 3 that 10.8 MB allocation and its first touch were 40 % of the call)."""
    s = P // 2 - D // 2
    if _is_cupy(a):  # pragma: no cover - GPU only
        return _cupy.fft.irfftn(a, s=(P, P, P), axes=(-3, -2, -1))[
            ..., s : s + D, s : s + D, s : s + D
        ]
    import scipy.fft

    w = fft_workers()
    b = scipy.fft.ifft(a, axis=-3, workers=w, overwrite_x=overwrite)[..., s : s + D, :, :]
    b = scipy.fft.ifft(b, axis=-2, workers=w)[..., s : s + D, :]
    return scipy.fft.irfft(b, n=P, axis=-1, workers=w)[..., s : s + D]
