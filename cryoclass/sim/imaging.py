"""Image formation: analytic projection of pseudo-atoms, CTF modulation and white noise.

Conventions are those of :mod:`cryoclass.conventions`: an atom at ``p`` (Å) of a particle with
RELION matrix ``A`` and origin ``t`` (Å) lands at the image point ``(A p)[:2] − t`` (RELION's
origin is the translation that recentres the particle, checked with ``relion_reconstruct``); the
noiseless image is the line integral of the 3D Gaussians in voxel units, so that
``rfft2(ifftshift(image))`` equals the central slice ``A.T @ (kx, ky, 0)`` of
``rfftn(ifftshift(volume))`` with no scale factor. The CTF (:func:`~cryoclass.conventions.ctf_2d`)
multiplies that transform.

Example
-------
>>> import numpy as np
>>> from cryoclass.sim.phantom import make_atoms
>>> from cryoclass.sim.imaging import project_atoms
>>> atoms = make_atoms(32, 6.0, ("closed",))
>>> img = project_atoms(atoms, np.eye(3)[None], np.zeros((1, 2)), np.zeros(1, int), 32, 6.0)
>>> img.shape
(1, 32, 32)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

from ..conventions import ctf_2d, rfft_frequencies
from ._kernels import splat_projections
from .phantom import PseudoAtoms

__all__ = ["project_atoms", "apply_ctf", "CtfParams"]


def project_atoms(
    atoms: Sequence[PseudoAtoms],
    rotations: np.ndarray,
    shifts_A: np.ndarray,
    state: np.ndarray,
    box: int,
    pixel_size_A: float,
    truncate: float = 4.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Exact projections of Gaussian pseudo-atoms (no CTF, no noise).

    Parameters
    ----------
    atoms : sequence of PseudoAtoms
        The K states.
    rotations : (P, 3, 3) float
        RELION matrices ``A``.
    shifts_A : (P, 2) float
        RELION origins ``(x, y)`` in Å: the particle centre sits at ``D // 2 − t / apix``.
    state : (P,) int
        Index into ``atoms`` of each particle.
    box : int
        Image size ``D``.
    pixel_size_A : float
        Pixel size (Å).
    truncate : float
        Each Gaussian is cut at ``±truncate·σ`` (square window).
    out : (P, D, D) float32 or float64, optional
        Where to write the images.

    Returns
    -------
    (P, D, D) array ``[y, x]``, float32 unless ``out`` is given.
    """
    P = len(state)
    if out is None:
        out = np.empty((P, box, box), dtype=np.float32)
    coords = np.concatenate([a.positions_A for a in atoms]) / pixel_size_A
    weights = np.concatenate([a.weights for a in atoms])
    sigmas = np.concatenate([a.sigmas_A for a in atoms]) / pixel_size_A
    start = np.concatenate([[0], np.cumsum([a.n_atoms for a in atoms])])
    splat_projections(
        coords,
        weights,
        sigmas,
        start,
        np.asarray(state),
        np.asarray(rotations),
        np.asarray(shifts_A) / pixel_size_A,
        out,
        truncate,
    )
    return out


class CtfParams:
    """Per-particle CTF parameters as ``(P, 1, 1)`` float64 arrays for :func:`ctf_2d`.

    Parameters
    ----------
    defocus_u_A, defocus_v_A, defocus_angle_deg : (P,) array
        Defocus (Å, positive = underfocus) and astigmatism angle (degrees).
    voltage_kV, cs_mm, amplitude_contrast : float
        Microscope constants.
    """

    def __init__(
        self,
        defocus_u_A: np.ndarray,
        defocus_v_A: np.ndarray,
        defocus_angle_deg: np.ndarray,
        voltage_kV: float = 300.0,
        cs_mm: float = 2.7,
        amplitude_contrast: float = 0.1,
    ) -> None:
        col = lambda a: np.asarray(a, dtype=np.float64).reshape(-1, 1, 1)  # noqa: E731
        self.defocus_u_A = col(defocus_u_A)
        self.defocus_v_A = col(defocus_v_A)
        self.defocus_angle_deg = col(defocus_angle_deg)
        self.voltage_kV = float(voltage_kV)
        self.cs_mm = float(cs_mm)
        self.amplitude_contrast = float(amplitude_contrast)

    def __getitem__(self, sl: slice) -> CtfParams:
        return CtfParams(
            self.defocus_u_A[sl],
            self.defocus_v_A[sl],
            self.defocus_angle_deg[sl],
            self.voltage_kV,
            self.cs_mm,
            self.amplitude_contrast,
        )

    def values(self, box: int, pixel_size_A: float) -> np.ndarray:
        """The CTF on the ``rfft2`` grid, ``(P, D, D//2 + 1)`` float64."""
        fy, fx = rfft_frequencies(box, pixel_size_A)
        return ctf_2d(
            fx,
            fy,
            self.defocus_u_A,
            self.defocus_v_A,
            self.defocus_angle_deg,
            self.voltage_kV,
            self.cs_mm,
            self.amplitude_contrast,
        )


def apply_ctf(
    images: np.ndarray, ctf: CtfParams, pixel_size_A: float, workers: int | None = None
) -> np.ndarray:
    """Multiply the transforms of ``images`` ``(P, D, D)`` by their CTFs, in place.

    ``F = rfft2(ifftshift(img))``, ``img ← fftshift(irfft2(F · CTF))``. Returns ``images``.
    """
    D = images.shape[-1]
    F = scipy.fft.rfft2(np.fft.ifftshift(images, axes=(-2, -1)), workers=workers)
    F *= ctf.values(D, pixel_size_A)
    out = scipy.fft.irfft2(F, s=(D, D), workers=workers)
    images[...] = np.fft.fftshift(out, axes=(-2, -1))
    return images
