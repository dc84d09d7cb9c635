"""Point-group symmetry in RELION's axis conventions.

``symmetry_operators`` returns the rotation matrices (acting on column vectors ``(x, y, z)``)
of C\\ *n*, D\\ *n*, T, O and I, generated from the same axes as RELION's ``symmetries.cpp``:

* ``Cn``: *n*-fold about z.
* ``Dn``: *n*-fold about z, 2-fold about x.
* ``T``: 3-fold about z, 2-fold about ``(0, √(2/3), √(1/3))``.
* ``O``: 3-fold about ``(1, 1, 1)/√3``, 4-fold about z.
* ``I`` (= RELION ``I2``, its default): 2-fold about z, 5-fold about
  ``(1, 0, φ)/√(1+φ²)`` (RELION's 3-fold about ``(0, 1/φ, φ)/√3`` follows); ``I1``, ``I3``,
  ``I4`` likewise.

The sets are checked against ``relion_refine --print_symmetry_ops`` in
``tests/test_core_symmetry.py``.

Which symmetriser to use
------------------------
* :func:`symmetrize_fourier` — for the engine: apply it with ``reduce="sum"`` to the Fourier
  back-projection accumulators (numerator **and** weight, on the padded grid) before the Wiener
  division, as RELION's ``BackProjector::symmetrise`` does. Each particle then counts once per
  operator, which is what the regularisation expects.
* :func:`symmetrize_volume` — for real-space maps (input/initial volumes, displays, tests):
  the average of rotated copies, trilinear, zero outside the box.

Both are pure ``xp`` code (NumPy or CuPy, from the input).

Example
-------
>>> import numpy as np
>>> from cryoclass.core.symmetry import symmetry_operators
>>> ops = symmetry_operators("D7")
>>> ops.shape, bool(np.allclose(ops[0], np.eye(3)))
((14, 3, 3), True)
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..backend import get_array_module
from ..errors import ParameterError

__all__ = [
    "parse_symmetry",
    "symmetry_operators",
    "symmetrize_volume",
    "symmetrize_fourier",
]

_PHI = (1.0 + np.sqrt(5.0)) / 2.0
_N5 = np.sqrt(1.0 + _PHI**2)
_S5 = np.sqrt(5.0)

# Icosahedral settings of RELION's symmetries.cpp, as (order, axis) generators. RELION also
# lists a 3-fold axis; the 2-fold and 5-fold below already generate all 60 rotations (and
# RELION's 3-fold is among them), and taking them in closed form keeps the set exact.
_Gens = list[tuple[int, tuple[float, float, float]]]
_I_GENERATORS: dict[str, _Gens] = {
    "I2": [(2, (0, 0, 1)), (5, (1 / _N5, 0, _PHI / _N5))],
    "I1": [(2, (1, 0, 0)), (5, (_PHI / _N5, 0, -1 / _N5))],
    "I3": [(2, (-1 / _N5, 0, _PHI / _N5)), (5, (0, 0, 1))],
    "I4": [(2, (1 / _N5, 0, _PHI / _N5)), (5, (2 / _S5, 0, 1 / _S5))],
}


def parse_symmetry(symbol: str) -> tuple[str, int]:
    """Parse a point-group symbol: ``'C1'``, ``'C7'``, ``'D3'``, ``'T'``, ``'O'``, ``'I'``.

    Returns ``(group_letter, n)`` (``n = 0`` for T, O, I). Raises ``ValueError`` on anything else.
    """
    s = str(symbol).strip().upper()
    m = re.fullmatch(r"([CD])(\d+)", s)
    if m and int(m.group(2)) >= 1:
        return m.group(1), int(m.group(2))
    if s in ("T", "O", "I"):
        return s, 0
    raise ValueError(f"unknown symmetry {symbol!r}: use C<n>, D<n>, T, O or I")


def _axis_rotation(order: int, axis: tuple[float, float, float]) -> np.ndarray:
    """Rotation by 360°/order about ``axis`` (Rodrigues), float64 (3, 3)."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    a = 2.0 * np.pi / order
    K = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(a) * K + (1.0 - np.cos(a)) * (K @ K)


def _close_group(generators: list[np.ndarray], max_order: int = 120) -> np.ndarray:
    """All products of the generators (identity first, then in order of discovery)."""
    elems = [np.eye(3)]

    def known(m: np.ndarray) -> bool:
        return any(np.abs(m - e).max() < 1e-6 for e in elems)

    for g in generators:
        if not known(g):
            elems.append(g)
    grew = True
    while grew:
        grew = False
        for a in list(elems):
            for b in list(elems):
                m = a @ b
                if not known(m):
                    elems.append(m)
                    grew = True
                    if len(elems) > max_order:
                        raise RuntimeError("generators do not close into a finite point group")
    out = np.stack(elems)
    snapped = np.round(out)
    return np.where(np.abs(out - snapped) < 1e-12, snapped, out)


def _generators(symbol: str) -> _Gens:
    s = str(symbol).strip().upper()
    if s in _I_GENERATORS:
        return _I_GENERATORS[s]
    try:
        letter, n = parse_symmetry(s)
    except ValueError as err:
        raise ParameterError(
            "symmetry", str(err).replace(", T, O or I", ", T, O, I or I1-I4")
        ) from err
    if letter == "C":
        return [(n, (0.0, 0.0, 1.0))] if n > 1 else []
    if letter == "D":
        z_axis: _Gens = [(n, (0.0, 0.0, 1.0))] if n > 1 else []
        return z_axis + [(2, (1.0, 0.0, 0.0))]
    if letter == "T":
        return [(3, (0.0, 0.0, 1.0)), (2, (0.0, float(np.sqrt(2 / 3)), float(np.sqrt(1 / 3))))]
    if letter == "O":
        return [(3, (1.0, 1.0, 1.0)), (4, (0.0, 0.0, 1.0))]
    return _I_GENERATORS["I2"]


def symmetry_operators(symbol: str) -> np.ndarray:
    """Rotation matrices of a point group in RELION's axis conventions.

    Parameters
    ----------
    symbol : str
        ``C<n>``, ``D<n>``, ``T``, ``O``, ``I`` (= ``I2``), or ``I1``/``I3``/``I4``.

    Returns
    -------
    ops : float64 ``(n_ops, 3, 3)``
        Proper rotations acting on column vectors ``(x, y, z)``; ``ops[0]`` is the identity.
        ``n_ops`` = n (Cn), 2n (Dn), 12 (T), 24 (O), 60 (I).

    Raises
    ------
    ParameterError
        Unknown symbol.
    """
    gens = [_axis_rotation(order, axis) for order, axis in _generators(symbol)]
    return _close_group(gens)


def _trilinear_gather(flat_grid: Any, coords: list[Any], axes: list[tuple[int, int, int]]) -> Any:
    """Trilinear interpolation on a flattened grid ``(B, n)`` at float coordinates.

    ``coords[a]`` is the coordinate along axis ``a`` (z, y, x) in integer units; ``axes[a] =
    (lo, hi, size)``: a corner ``i`` is used when ``lo ≤ i ≤ hi`` and is stored at index
    ``i mod size`` of that axis (so ``fftfreq`` order works). Corners outside contribute 0.
    Returns ``(B, n_points)`` with the dtype of ``flat_grid`` promoted by the weights.
    """
    xp = get_array_module(flat_grid)
    strides = [axes[1][2] * axes[2][2], axes[2][2], 1]
    base = [xp.floor(c) for c in coords]
    frac = [c - b for c, b in zip(coords, base)]
    ibase = [b.astype(xp.int64) for b in base]
    out = None
    for corner in range(8):
        w, flat, ok = 1.0, 0, True
        for a in range(3):
            bit = (corner >> (2 - a)) & 1
            i = ibase[a] + bit
            lo, hi, size = axes[a]
            w = w * (frac[a] if bit else 1.0 - frac[a])
            flat = flat + (i % size) * strides[a]
            ok = ok & (i >= lo) & (i <= hi)
        vals = flat_grid[:, xp.where(ok, flat, 0)] * xp.where(ok, w, 0.0)
        out = vals if out is None else out + vals
    return out


def _check_ops(ops: Any) -> np.ndarray:
    R = np.asarray(ops, dtype=np.float64)
    if R.ndim == 2:
        R = R[None]
    if R.ndim != 3 or R.shape[1:] != (3, 3) or R.shape[0] == 0:
        raise ParameterError(
            "ops", f"expected rotation matrices (n_ops, 3, 3), got shape {R.shape}"
        )
    return R


def _reduce(acc: Any, n_ops: int, reduce: str) -> Any:
    if reduce == "mean":
        return acc / n_ops
    if reduce == "sum":
        return acc
    raise ParameterError("reduce", f"must be 'mean' or 'sum', got {reduce!r}")


def symmetrize_volume(vol: Any, ops: Any, reduce: str = "mean") -> Any:
    """Average (or sum) of rotated copies of real volumes, in real space.

    Parameters
    ----------
    vol : real array ``(..., D, D, D)``
        Volumes indexed ``[z, y, x]``, rotation centre at voxel ``D // 2``.
    ops : ``(n_ops, 3, 3)``
        Rotation matrices (e.g. :func:`symmetry_operators`); host (NumPy) array.
    reduce : {"mean", "sum"}

    Returns
    -------
    Array of ``vol``'s shape: ``(1/n) Σ_R v(Rᵀ r)`` with trilinear interpolation and zero
    outside the box (float64 for float64 input, else float32).
    """
    xp = get_array_module(vol)
    R = _check_ops(ops)
    D = int(vol.shape[-1])
    if vol.ndim < 3 or vol.shape[-3:] != (D, D, D):
        raise ValueError(f"expected cubic volumes (..., D, D, D), got shape {vol.shape}")
    ftype = xp.float64 if vol.dtype == np.float64 else xp.float32
    flat = xp.asarray(vol, dtype=ftype).reshape(-1, D**3)
    c = xp.arange(D, dtype=ftype) - D // 2
    z, y, x = (a.ravel() for a in xp.meshgrid(c, c, c, indexing="ij"))
    axes = [(0, D - 1, D)] * 3
    acc = xp.zeros_like(flat)
    for Rm in R:
        # source point s = Rᵀ r, r = (x, y, z): s_j = Σ_i R[i, j] r_i
        s = [
            float(Rm[0, j]) * x + float(Rm[1, j]) * y + float(Rm[2, j]) * z + D // 2
            for j in range(3)
        ]
        acc += _trilinear_gather(flat, [s[2], s[1], s[0]], axes)
    return _reduce(acc, len(R), reduce).reshape(vol.shape)


def symmetrize_fourier(
    grid: Any, ops: Any, reduce: str = "mean", max_radius: float | None = None
) -> Any:
    """Symmetrise Hermitian half-space Fourier grids (``rfftn`` layout) by trilinear gathering.

    For each output voxel ``k`` and operator ``R`` the value ``F(Rᵀ k)`` is interpolated; when
    the rotated ``kx < 0`` the Hermitian twin ``conj F(−Rᵀ k)`` is used. This is the Fourier
    image of :func:`symmetrize_volume` (rotations commute with the Fourier transform).

    Parameters
    ----------
    grid : complex or real array ``(..., D, D, D//2+1)``
        ``rfftn`` layout (``kz``, ``ky`` in ``fftfreq`` order, ``kx = 0..D//2``): a volume
        transform, a back-projection numerator or (real) weight. Pad the volume (×2) first
        for accurate interpolation.
    ops : ``(n_ops, 3, 3)``
        Rotation matrices (host array).
    reduce : {"mean", "sum"}
        "sum" for back-projection accumulators (engine), "mean" for volume transforms.
    max_radius : float, optional
        Only voxels with ``|k| ≤ max_radius`` (integer-frequency units of this grid) are
        computed; the others are set to 0. The engine passes the radius its data occupies
        (e.g. the padded crop radius), which roughly halves the work; RELION does the same.

    Returns
    -------
    Array of ``grid``'s shape (complex128/float64 for 64-bit input, else complex64/float32).
    Frequencies that are not representable in the box (e.g. ``+D/2`` on the z/y axes of an
    even box, or rotated beyond the cube) contribute 0.
    """
    xp = get_array_module(grid)
    R = _check_ops(ops)
    D = int(grid.shape[-2])
    if grid.ndim < 3 or grid.shape[-3:] != (D, D, D // 2 + 1):
        raise ValueError(f"expected an rfftn layout (..., D, D, D//2+1), got shape {grid.shape}")
    is64 = grid.dtype in (np.float64, np.complex128)
    ftype = xp.float64 if is64 else xp.float32
    flat = grid.reshape(-1, grid.shape[-3] * grid.shape[-2] * grid.shape[-1])
    kf = xp.fft.fftfreq(D, d=1.0 / D).astype(ftype)
    kh = xp.arange(D // 2 + 1, dtype=ftype)
    z, y, x = (a.ravel() for a in xp.meshgrid(kf, kf, kh, indexing="ij"))
    sel = None
    if max_radius is not None:
        sel = xp.nonzero(z * z + y * y + x * x <= float(max_radius) ** 2)[0]
        z, y, x = z[sel], y[sel], x[sel]
    axes = [(-(D // 2), (D - 1) // 2, D), (-(D // 2), (D - 1) // 2, D), (0, D // 2, D // 2 + 1)]
    acc = None
    for Rm in R:
        s = [float(Rm[0, j]) * x + float(Rm[1, j]) * y + float(Rm[2, j]) * z for j in range(3)]
        neg = s[0] < 0
        sign = xp.where(neg, -1.0, 1.0).astype(ftype)
        vals = _trilinear_gather(flat, [s[2] * sign, s[1] * sign, s[0] * sign], axes)
        if xp.iscomplexobj(vals):
            vals = xp.where(neg, vals.conj(), vals)
        acc = vals if acc is None else acc + vals
    acc = _reduce(acc, len(R), reduce)
    if sel is not None:
        full = xp.zeros((flat.shape[0], flat.shape[1]), dtype=acc.dtype)
        full[:, sel] = acc
        acc = full
    return acc.reshape(grid.shape)
