"""Preprocessing: particles → the classification problem at the classification box.

Each particle image is Fourier-transformed, cropped to the classification box ``Dc`` (the filter
resolution), recentred by its origin, and reduced to the half-plane disc ``0 < |k| ≤ r_max``
(``r_max = D·apix / filter_res``). Its CTF is evaluated on the same disc. The result is a
:class:`Problem`: dense arrays ``X (N, M) complex64``, ``C (N, M) float32``, poses, half-sets and
input scales, on the chosen backend.

Example
-------
>>> from cryoclass import sim
>>> from cryoclass.engine.problem import build_problem
>>> ds = sim.simulate(n_particles=50, box=48, pixel_size_A=3.0, seed=0)     # doctest: +SKIP
>>> prob = build_problem(ds.particles, filter_res_A=12.0)                  # doctest: +SKIP
>>> prob.X.shape[0]                                                        # doctest: +SKIP
50
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_array_module, to_device
from ..conventions import classification_box, ctf_2d, fourier_crop_2d, recentre_phase
from ..core.slices import SliceGeometry, extract_disc
from ..errors import InputFileError

__all__ = ["Problem", "build_problem", "lowres_problem"]


@dataclass
class Problem:
    """Everything the EM loop needs, per particle, at the classification box.

    Attributes
    ----------
    geom : SliceGeometry of the classification box (disc of M pixels, padding).
    X : (N, M) complex64 recentred particle transforms on the disc.
    C : (N, M) float32 CTF on the disc.
    A : (N, 3, 3) float32 RELION rotation matrices.
    half : (N,) int64 half-set 0/1.
    scale_input : (N,) float32 upstream per-particle scale.
    box, pixel_size_A : extracted box (px) and pixel size (Å).
    box_c, pixel_size_c_A : classification box (px) and pixel size (Å).
    filter_res_A : the filter resolution (Å).
    """

    geom: SliceGeometry
    X: Any
    C: Any
    A: Any
    half: Any
    scale_input: Any
    box: int
    pixel_size_A: float
    box_c: int
    pixel_size_c_A: float
    filter_res_A: float

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def shell_frequencies_invA(self) -> np.ndarray:
        """Spatial frequency (1/Å) of the classification shells 0..n_shells-1."""
        return np.arange(self.geom.n_shells) / (self.box_c * self.pixel_size_c_A)

    def take(self, idx: Any) -> tuple[Any, Any, Any, Any]:
        """``(A, X, C, half)`` rows for particle indices ``idx``."""
        return self.A[idx], self.X[idx], self.C[idx], self.half[idx]


def lowres_problem(prob: Problem, res_A: float) -> tuple[Problem, np.ndarray]:
    """The same particles restricted to ``|ξ| ≤ 1/res_A`` at the smaller box that needs: a cheap
    problem for low-resolution work (initial volumes). Returns ``(problem, disc_columns)``.

    Integer frequencies ``k`` (cycles per extracted box) do not depend on the box, so the low-res
    disc is a subset of the full disc's pixels.
    """
    from ..conventions import classification_box

    res_A = max(res_A, prob.filter_res_A)
    Dl, apix_l = classification_box(prob.box, prob.pixel_size_A, res_A)
    geom = SliceGeometry(Dl, prob.geom.pad, r_max=min(prob.box * prob.pixel_size_A / res_A, Dl / 2))
    full = {(int(x), int(y)): j for j, (x, y) in enumerate(zip(prob.geom.kx, prob.geom.ky))}
    cols = np.array([full[(int(x), int(y))] for x, y in zip(geom.kx, geom.ky)], np.int64)
    xp = get_array_module(prob.X)
    c = xp.asarray(cols)
    sub = Problem(
        geom=geom,
        X=prob.X[:, c],
        C=prob.C[:, c],
        A=prob.A,
        half=prob.half,
        scale_input=prob.scale_input,
        box=prob.box,
        pixel_size_A=prob.pixel_size_A,
        box_c=Dl,
        pixel_size_c_A=apix_l,
        filter_res_A=res_A,
    )
    return sub, cols


def _disc_ctf(meta: Any, rows: np.ndarray, freq_x: np.ndarray, freq_y: np.ndarray) -> np.ndarray:
    col = lambda name: meta[name].to_numpy(np.float64)[rows][:, None]  # noqa: E731
    return ctf_2d(
        freq_x[None, :],
        freq_y[None, :],
        col("defocus_u_A"),
        col("defocus_v_A"),
        col("defocus_angle_deg"),
        col("voltage_kV"),
        col("cs_mm"),
        col("amplitude_contrast"),
        col("phase_shift_deg"),
        col("bfactor_A2"),
    ).astype(np.float32)


def build_problem(
    particles: Any,
    filter_res_A: float,
    pad: int = 2,
    chunk_size: int = 1024,
    xp: Any = np,
    progress: Callable[[int, int], None] | None = None,
) -> Problem:
    """Read, crop, recentre and CTF-evaluate all particles (in chunks) into a :class:`Problem`.

    ``progress(done, total)`` is called after each chunk.
    """
    meta = particles.meta
    N = len(particles)
    D = int(particles.box)
    apix = float(particles.pixel_size_A)
    Dc, apix_c = classification_box(D, apix, filter_res_A)
    r_max = min(D * apix / filter_res_A, Dc / 2)
    geom = SliceGeometry(Dc, pad, r_max=r_max)
    freq_x = geom.kx.astype(np.float64) / (D * apix)  # 1/Å
    freq_y = geom.ky.astype(np.float64) / (D * apix)
    X = np.empty((N, geom.M), np.complex64)
    C = np.empty((N, geom.M), np.float32)
    sx = meta["shift_x_A"].to_numpy(np.float64)
    sy = meta["shift_y_A"].to_numpy(np.float64)
    done = 0
    for idx, imgs in particles.images.chunks(chunk_size):
        idx = np.asarray(idx)
        if not np.all(np.isfinite(imgs)):
            bad = int(idx[np.nonzero(~np.isfinite(imgs).all(axis=(1, 2)))[0][0]])
            raise InputFileError(
                particles.source_path or "<particles>",
                f"particle {bad} has NaN or inf pixel values",
            )
        F = np.fft.rfft2(np.fft.ifftshift(imgs.astype(np.float32), axes=(-2, -1)))
        F = fourier_crop_2d(F, Dc)
        disc = extract_disc(F, geom)
        ph = recentre_phase(freq_x[None, :], freq_y[None, :], sx[idx][:, None], sy[idx][:, None])
        X[idx] = (disc * ph).astype(np.complex64)
        C[idx] = _disc_ctf(meta, idx, freq_x, freq_y)
        done += len(idx)
        if progress is not None:
            progress(done, N)
    A = particles.rotations.astype(np.float32)
    half = meta["half_set"].to_numpy(np.int64) % 2
    scale = meta["scale"].to_numpy(np.float32)
    return Problem(
        geom=geom,
        X=to_device(X, xp),
        C=to_device(C, xp),
        A=to_device(A, xp),
        half=to_device(half, xp),
        scale_input=to_device(scale, xp),
        box=D,
        pixel_size_A=apix,
        box_c=Dc,
        pixel_size_c_A=apix_c,
        filter_res_A=float(filter_res_A),
    )
