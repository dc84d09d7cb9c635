"""Geometry, CTF and Fourier conventions: the one place where RELION and CryoSPARC meet.

Conventions (checked against ``relion_reconstruct`` in ``tests/test_relion_crosscheck.py``):

* **Arrays.** Images are ``(D, D)`` real arrays indexed ``[y, x]``; volumes ``(D, D, D)`` indexed
  ``[z, y, x]`` (as ``mrcfile`` returns them). The origin (particle centre, rotation centre) is the
  pixel ``D // 2`` on every axis. Rotation matrices act on column vectors ``(x, y, z)``.
* **Fourier transforms** are unnormalised forward transforms of the ``ifftshift``-ed array
  (``F = rfft2(ifftshift(img))``), Hermitian half-plane layout: ``F[ky, kx]`` with ``kx = 0..D//2``
  and ``ky`` in ``fftfreq`` order (integer frequencies ``k``; spatial frequency ``k / (D * apix)``
  in 1/Å). With this convention the projection-slice theorem holds without any scale factor.
* **RELION Euler angles** ``(rot, tilt, psi)`` in degrees, ZYZ:
  ``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` (RELION's ``Euler_angles2matrix``). A volume point ``r``
  projects to the image point ``(A @ r)[:2]``; the central slice for image frequency
  ``(kx, ky)`` samples the volume transform at ``A.T @ (kx, ky, 0)``.
* **CryoSPARC poses** are axis-angle vectors (radians); ``R = rodrigues(pose)`` and the RELION
  matrix is ``A = R.T``. CryoSPARC ``alignments3D/shift`` is in pixels with the sign of RELION's
  origin: ``rlnOriginXAngst = shift_x * psize_A``.
* **Shifts.** RELION's origin ``t`` (Å) is the translation that brings the particle to the box
  centre: the particle centre sits at ``−t`` relative to the box centre (a volume point ``r``
  appears at ``(A @ r)[:2] − t``; centre in the micrograph = ``rlnCoordinate − rlnOrigin``). A
  particle is recentred by multiplying its transform by ``exp(−2πi ξ·t)``
  (:func:`recentre_phase`). Checked with ``relion_reconstruct`` 3.1.3: the opposite sign drops
  the map correlation from 0.9999 to 0.85.
* **CTF** (RELION ``ctf.h``): ``λ = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))`` Å (V in volts),
  ``γ = π λ Δf(ξ) |ξ|² − (π/2) Cs λ³ |ξ|⁴ + φ + asin(Q0)``, ``CTF = sin(γ) · exp(−B|ξ|²/4) · s``.
  This equals RELION's ``−sin(argument)`` with its internal negative defocus; it is positive at
  low frequency (white particles on a dark background after contrast inversion at extraction).
  ``Δf(ξ) = ½(ΔfU+ΔfV) + ½(ΔfU−ΔfV)·cos(2(α_ξ − α_ast))``; defocus positive = underfocus.
* **Classes** are 0-based in the code and in ``.cs``; ``rlnClassNumber`` is 1-based. Half-sets are
  0/1 (``.cs`` ``alignments3D/split``) ↔ RELION ``rlnRandomSubset`` 1/2.

Example
-------
>>> import numpy as np
>>> from cryoclass.conventions import euler_to_matrix, matrix_to_euler
>>> A = euler_to_matrix(30.0, 60.0, -45.0)
>>> np.allclose(matrix_to_euler(A), (30.0, 60.0, -45.0))
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import backend as _fft
from .backend import get_array_module

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "cryosparc_pose_to_matrix",
    "matrix_to_cryosparc_pose",
    "electron_wavelength_A",
    "ctf_2d",
    "rfft_frequencies",
    "centred_frequencies",
    "recentre_phase",
    "classification_box",
    "fourier_crop_2d",
    "fourier_crop_3d",
    "fourier_pad_3d",
    "resample_volume",
]


# --------------------------------------------------------------------------- rotations
def euler_to_matrix(rot: Any, tilt: Any, psi: Any) -> np.ndarray:
    """RELION ZYZ Euler angles (degrees) → rotation matrices ``A`` of shape ``(..., 3, 3)``."""
    phi, theta, ps = (np.deg2rad(np.asarray(a, dtype=np.float64)) for a in (rot, tilt, psi))
    ca, sa = np.cos(phi), np.sin(phi)
    cb, sb = np.cos(theta), np.sin(theta)
    cg, sg = np.cos(ps), np.sin(ps)
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    A = np.empty(np.broadcast(phi, theta, ps).shape + (3, 3))
    A[..., 0, 0] = cg * cc - sg * sa
    A[..., 0, 1] = cg * cs + sg * ca
    A[..., 0, 2] = -cg * sb
    A[..., 1, 0] = -sg * cc - cg * sa
    A[..., 1, 1] = -sg * cs + cg * ca
    A[..., 1, 2] = sg * sb
    A[..., 2, 0] = sc
    A[..., 2, 1] = ss
    A[..., 2, 2] = cb
    return A


def matrix_to_euler(A: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotation matrices ``(..., 3, 3)`` → RELION ``(rot, tilt, psi)`` in degrees.

    Follows RELION's ``Euler_matrix2angles``: tilt in [0, 180]; at the gimbal lock
    (tilt ≈ 0 or 180) rot is set to 0 and the whole in-plane angle goes into psi.
    """
    A = np.asarray(A, dtype=np.float64)
    abs_sb = np.sqrt(A[..., 0, 2] ** 2 + A[..., 1, 2] ** 2)
    regular = abs_sb > 16 * np.finfo(np.float32).eps
    # choosing sin(tilt) >= 0 makes tilt = atan2(|sin tilt|, cos tilt) in [0, pi]
    rot = np.where(regular, np.arctan2(A[..., 2, 1], A[..., 2, 0]), 0.0)
    tilt = np.where(
        regular, np.arctan2(abs_sb, A[..., 2, 2]), np.where(A[..., 2, 2] < 0, np.pi, 0.0)
    )
    psi_lock = np.where(
        A[..., 2, 2] < 0,
        np.arctan2(A[..., 1, 0], -A[..., 0, 0]),
        np.arctan2(-A[..., 1, 0], A[..., 0, 0]),
    )
    psi = np.where(regular, np.arctan2(A[..., 1, 2], -A[..., 0, 2]), psi_lock)
    wrap = lambda x: (np.rad2deg(x) + 180.0) % 360.0 - 180.0  # noqa: E731
    return wrap(rot), np.rad2deg(tilt), wrap(psi)


def axis_angle_to_matrix(v: Any) -> np.ndarray:
    """Rodrigues: axis-angle vectors ``(..., 3)`` (radians) → rotation matrices ``(..., 3, 3)``."""
    v = np.asarray(v, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1)[..., None, None]
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -v[..., 2], v[..., 1]
    K[..., 1, 0], K[..., 1, 2] = v[..., 2], -v[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -v[..., 1], v[..., 0]
    small = theta < 1e-12
    safe = np.where(small, 1.0, theta)
    s = np.where(small, 1.0, np.sin(safe) / safe)
    c = np.where(small, 0.5, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + s * K + c * (K @ K)


def matrix_to_axis_angle(R: Any) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` → axis-angle vectors ``(..., 3)`` (radians, |v| ≤ π)."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    flat = R.reshape(-1, 3, 3)
    return Rotation.from_matrix(flat).as_rotvec().reshape(R.shape[:-2] + (3,))


def cryosparc_pose_to_matrix(pose: Any) -> np.ndarray:
    """CryoSPARC ``alignments3D/pose`` (axis-angle, radians) → RELION matrix ``A = R.T``."""
    return np.swapaxes(axis_angle_to_matrix(pose), -1, -2)


def matrix_to_cryosparc_pose(A: Any) -> np.ndarray:
    """RELION matrix ``A`` → CryoSPARC axis-angle pose (of ``R = A.T``)."""
    return matrix_to_axis_angle(np.swapaxes(np.asarray(A, dtype=np.float64), -1, -2))


# --------------------------------------------------------------------------- CTF
def electron_wavelength_A(voltage_kV: Any) -> Any:
    """Relativistic electron wavelength (Å) at an acceleration voltage in kV (RELION's formula)."""
    V = np.asarray(voltage_kV, dtype=np.float64) * 1e3
    return 12.2643247 / np.sqrt(V * (1.0 + V * 0.978466e-6))


def ctf_2d(
    freq_x: Any,
    freq_y: Any,
    defocus_u_A: Any,
    defocus_v_A: Any,
    defocus_angle_deg: Any,
    voltage_kV: Any,
    cs_mm: Any,
    amplitude_contrast: Any,
    phase_shift_deg: Any = 0.0,
    bfactor_A2: Any = 0.0,
    scale: Any = 1.0,
) -> Any:
    """RELION's CTF at spatial frequencies ``(freq_x, freq_y)`` in 1/Å.

    Frequencies broadcast against the per-particle parameters: pass per-particle parameters with
    shape ``(N, 1, 1)`` and frequency grids ``(Dy, Dx)`` to get ``(N, Dy, Dx)``. Works on NumPy or
    CuPy arrays (chosen from ``freq_x``). Returns float64 (NumPy) / input float type.
    """
    xp = get_array_module(freq_x, freq_y)
    lam = electron_wavelength_A(voltage_kV)
    cs_A = np.asarray(cs_mm, dtype=np.float64) * 1e7
    k1 = np.pi * lam
    k2 = 0.5 * np.pi * cs_A * lam**3
    k3 = np.arcsin(np.clip(np.asarray(amplitude_contrast, dtype=np.float64), -1.0, 1.0))
    k5 = np.deg2rad(np.asarray(phase_shift_deg, dtype=np.float64))
    du = np.asarray(defocus_u_A, dtype=np.float64)
    dv = np.asarray(defocus_v_A, dtype=np.float64)
    ast = np.deg2rad(np.asarray(defocus_angle_deg, dtype=np.float64))
    as_xp = lambda a: xp.asarray(a) if xp is not np else a  # noqa: E731
    u2 = freq_x * freq_x + freq_y * freq_y
    ang = xp.arctan2(freq_y, freq_x)
    dfocus = as_xp(0.5 * (du + dv)) + as_xp(0.5 * (du - dv)) * xp.cos(2.0 * (ang - as_xp(ast)))
    gamma = as_xp(k1) * dfocus * u2 - as_xp(k2) * u2 * u2 + as_xp(k5 + k3)
    ctf = xp.sin(gamma)
    b = np.asarray(bfactor_A2, dtype=np.float64)
    if np.any(b != 0):
        ctf = ctf * xp.exp(-as_xp(b) / 4.0 * u2)
    return ctf * as_xp(np.asarray(scale, dtype=np.float64))


# --------------------------------------------------------------------------- Fourier grids
def rfft_frequencies(D: int, pixel_size_A: float = 1.0, xp: Any = np) -> tuple[Any, Any]:
    """``(freq_y, freq_x)`` grids in 1/Å for the ``rfft2`` layout ``(D, D//2 + 1)``."""
    ky = xp.fft.fftfreq(D, d=pixel_size_A)
    kx = xp.fft.rfftfreq(D, d=pixel_size_A)
    return xp.broadcast_to(ky[:, None], (D, kx.size)), xp.broadcast_to(kx[None, :], (D, kx.size))


def centred_frequencies(D: int, pixel_size_A: float = 1.0, xp: Any = np) -> tuple[Any, Any]:
    """``(freq_y, freq_x)`` grids in 1/Å for a centred full ``(D, D)`` transform (origin D//2)."""
    k = (xp.arange(D) - D // 2) / (D * pixel_size_A)
    return xp.broadcast_to(k[:, None], (D, D)), xp.broadcast_to(k[None, :], (D, D))


def recentre_phase(freq_x: Any, freq_y: Any, shift_x_A: Any, shift_y_A: Any) -> Any:
    """Phase factor ``exp(−2πi (ξx tx + ξy ty))`` that recentres a particle whose RELION origin is
    ``(tx, ty)`` (Å), i.e. whose centre sits at ``−t`` in the box (RELION applies the origin as a
    translation of the image). Frequencies in 1/Å; broadcasting as in :func:`ctf_2d`."""
    xp = get_array_module(freq_x, freq_y)
    as_xp = lambda a: xp.asarray(a) if xp is not np else np.asarray(a)  # noqa: E731
    ph = -2.0 * np.pi * (freq_x * as_xp(shift_x_A) + freq_y * as_xp(shift_y_A))
    return xp.exp(1j * ph)


# --------------------------------------------------------------------------- boxes and crops
def classification_box(box: int, pixel_size_A: float, filter_res_A: float) -> tuple[int, float]:
    """Box ``D_c`` and pixel size (Å) at which to classify for a filter resolution (Å).

    ``D_c = even(ceil(2 D apix / filter_res))``, at most ``D``; ``apix_c = apix D / D_c``.
    The crop keeps ``|ξ| ≤ 1 / filter_res``.
    """
    from .errors import ParameterError

    if not filter_res_A > 0:
        raise ParameterError("filter_res_A", f"must be positive, got {filter_res_A}")
    nyquist = 2.0 * pixel_size_A
    if filter_res_A < nyquist * (1 - 1e-9):
        raise ParameterError(
            "filter_res_A",
            f"{filter_res_A:g} Å is finer than Nyquist "
            f"({nyquist:g} Å at pixel size {pixel_size_A:g} Å)",
        )
    if filter_res_A > box * pixel_size_A / 2:
        raise ParameterError(
            "filter_res_A",
            f"{filter_res_A:g} Å is coarser than half the box ({box * pixel_size_A / 2:g} Å); "
            "nothing would be left to classify",
        )
    dc = int(np.ceil(2.0 * box * pixel_size_A / filter_res_A))
    dc += dc % 2
    dc = min(dc, box - box % 2) if box % 2 else min(dc, box)
    dc = max(dc, 8)
    return dc, pixel_size_A * box / dc


def _crop_axis_indices(D: int, Dc: int) -> np.ndarray:
    """Indices in an ``fftfreq``-ordered axis of length D of the frequencies kept at length Dc."""
    k = np.fft.fftfreq(Dc, d=1.0 / Dc).astype(np.int64)  # -Dc/2 .. Dc/2-1
    return np.mod(k, D)


def fourier_crop_2d(F: Any, Dc: int) -> Any:
    """Crop ``rfft2`` transforms ``(..., D, D//2+1)`` to ``(..., Dc, Dc//2+1)``.

    Coefficients are kept unscaled (projection-slice consistent); the real-space image of the
    crop at pixel size ``apix D / Dc`` is ``irfft2(crop) * (Dc / D)**2`` in the original units.
    """
    D = F.shape[-2]
    if Dc > D:
        raise ValueError(f"cannot crop box {D} to larger box {Dc}")
    iy = _crop_axis_indices(D, Dc)
    xp = get_array_module(F)
    return F[..., xp.asarray(iy), : Dc // 2 + 1]


def fourier_crop_3d(F: Any, Dc: int) -> Any:
    """Crop ``rfftn`` volume transforms ``(D, D, D//2+1)`` to ``(Dc, Dc, Dc//2+1)`` (unscaled)."""
    D = F.shape[0]
    xp = get_array_module(F)
    idx = xp.asarray(_crop_axis_indices(D, Dc))
    return F[idx][:, idx][:, :, : Dc // 2 + 1]


def fourier_pad_3d(F: Any, Dp: int) -> Any:
    """Zero-pad ``rfftn`` volume transforms ``(D, D, D//2+1)`` to ``(Dp, Dp, Dp//2+1)``."""
    D = F.shape[0]
    xp = get_array_module(F)
    out = xp.zeros((Dp, Dp, Dp // 2 + 1), dtype=F.dtype)
    idx = xp.asarray(_crop_axis_indices(Dp, D))
    out[idx[:, None], idx[None, :], : D // 2 + 1] = F
    return out


def resample_volume(vol: Any, D_new: int) -> Any:
    """Resample a real volume ``(D, D, D)`` to ``(D_new,)*3`` by Fourier crop/pad, keeping its
    density values (a map at pixel size ``apix`` becomes one at ``apix D / D_new``)."""
    xp = get_array_module(vol)
    D = vol.shape[0]
    if D_new == D:
        return vol.copy()
    F = _fft.rfftn(xp.fft.ifftshift(vol))
    G = fourier_crop_3d(F, D_new) if D_new < D else fourier_pad_3d(F, D_new)
    out = xp.fft.fftshift(_fft.irfftn(G, s=(D_new,) * 3, axes=(0, 1, 2))) * (D_new / D) ** 3
    return out.astype(vol.dtype, copy=False)
