"""Preprocessing: particles → the classification problem at the classification box.

Each particle image is Fourier-transformed, cropped to the classification box ``Dc`` (the filter
resolution), recentred by its origin, and reduced to the half-plane disc ``0 < |k| ≤ r_max``
(``r_max = D·apix / filter_res``). Its CTF is evaluated on the same disc. The result is a
:class:`Problem`: dense arrays ``X (N, M) complex64``, ``C (N, M) float32``, poses, half-sets and
input scales, on the chosen backend. ``X`` and ``C`` live in a particle store
(:mod:`cryoclass.engine.store`): in memory, or — with ``cache_dir`` — in an on-disk cache that the
passes stream chunk by chunk (reused by later runs with the same particles and filter resolution).

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

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as _fft
from ..backend import to_device, to_numpy
from ..conventions import _crop_axis_indices, classification_box, electron_wavelength_A
from ..core._preprocess_numba import disc_ctf_kernel
from ..core.slices import SliceGeometry
from ..errors import InputFileError, ParameterError
from .store import ArrayStore, DiskStore, ParticleStore, open_or_build_cache

__all__ = ["Problem", "build_problem", "lowres_problem", "subset_problem", "DiskStore"]


@dataclass
class Problem:
    """Everything the EM loop needs, per particle, at the classification box.

    Attributes
    ----------
    geom : SliceGeometry of the classification box (disc of M pixels, padding).
    store : ParticleStore holding ``X (N, M)`` complex64 recentred particle transforms and
        ``C (N, M)`` float32 CTF on the disc (in memory or an on-disk cache).
    A : (N, 3, 3) float32 RELION rotation matrices.
    half : (N,) int64 half-set 0/1.
    scale_input : (N,) float32 upstream per-particle scale.
    box, pixel_size_A : extracted box (px) and pixel size (Å).
    box_c, pixel_size_c_A : classification box (px) and pixel size (Å).
    filter_res_A : the filter resolution (Å).
    """

    geom: SliceGeometry
    store: ParticleStore
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
        return int(self.store.n)

    @property
    def xp(self) -> Any:
        """Array module of the rows :meth:`take` returns (NumPy or CuPy)."""
        return self.store.xp

    @property
    def X(self) -> Any:
        """All transforms (materialised for on-disk stores; the engine uses :meth:`take`)."""
        return self.store.X

    @property
    def C(self) -> Any:
        return self.store.C

    def shell_frequencies_invA(self) -> np.ndarray:
        """Spatial frequency (1/Å) of the classification shells 0..n_shells-1."""
        return np.arange(self.geom.n_shells) / (self.box_c * self.pixel_size_c_A)

    def take(self, idx: Any) -> tuple[Any, Any, Any, Any]:
        """``(A, X, C, half)`` rows for particle indices ``idx`` (a slice, or an index array:
        sorted for on-disk stores, any order in memory); a contiguous range gives views of the
        stored rows (no copy)."""
        sel = row_selector(idx, self.xp)
        if isinstance(sel, slice):
            X, C = self.store.rows(sel.start, sel.stop)
        else:
            X, C = self.store.take(sel)
        return self.A[sel], X, C, self.half[sel]


def view_order(A: Any) -> np.ndarray:
    """Positions that sort rotations ``A (n, 3, 3)`` by the plane of their central slice: the
    plane normal (third row, up to sign) in ``⌈√(n/4)⌉`` polar bands, each band by azimuth,
    alternately forwards and backwards. Consecutive particles then read and write nearly the
    same voxels of the class grids — the slice kernels are bound by those gathers and scatters
    (box 48, K = 3, N = 20 000: O-EM and F-EM ≈ 25–40 % faster than in file order;
    ``benchmarks/RESULTS.md``)."""
    nrm = np.asarray(to_numpy(A), np.float64)[:, 2, :]
    nrm = np.where(nrm[:, 2:3] < 0, -nrm, nrm)  # a plane's normal is defined up to sign
    theta = np.arccos(np.clip(nrm[:, 2], -1.0, 1.0))
    phi = np.arctan2(nrm[:, 1], nrm[:, 0])
    nb = max(1, int(np.ceil(np.sqrt(len(nrm) / 4))))
    band = np.minimum((theta * (2 / np.pi) * nb).astype(np.int64), nb - 1)
    return np.lexsort((np.where(band % 2 == 0, phi, -phi), band))


def subset_problem(prob: Problem, idx: np.ndarray) -> Problem:
    """The particles ``idx`` (sorted) copied into a problem of their own, in memory: passes over
    it read contiguous rows. Not for remote (distributed) problems, whose rows stay on the
    workers."""
    if prob.store.remote:
        raise ValueError("subset_problem needs a local problem (its rows are copied here)")
    sel = prob.xp.asarray(idx)
    order = None
    if prob.xp is np and isinstance(prob.store, ArrayStore) and prob.store.order is not None:
        # kept like the whole: rows in the viewing-direction order of the subset
        order = np.argsort(prob.store.position(idx), kind="stable")
        X, C = prob.store.take(np.asarray(idx)[order])
    else:
        X, C = prob.store.take(sel)
    return dataclasses.replace(
        prob,
        store=ArrayStore(X, C, order),
        A=prob.A[sel],
        half=prob.half[sel],
        scale_input=prob.scale_input[sel],
    )


def row_selector(idx: Any, xp: Any) -> Any:
    """``idx`` as a ``slice`` when it is a contiguous ascending NumPy range (or already a
    slice), else as an ``xp`` index array (indexing by a slice is a view, by an array a copy)."""
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, np.ndarray) and idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return xp.asarray(idx)


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
    sub = dataclasses.replace(
        prob,
        geom=geom,
        store=prob.store.columns(cols),
        box_c=Dl,
        pixel_size_c_A=apix_l,
        filter_res_A=res_A,
    )
    return sub, cols


def _ctf_parameters(meta: Any, rows: np.ndarray) -> np.ndarray:
    """Per-particle CTF constants ``(n, 8)`` float64 for :func:`disc_ctf_kernel` (RELION's CTF as
    in :func:`cryoclass.conventions.ctf_2d`): mean defocus, half defocus difference (Å),
    cos 2φ, sin 2φ of the astigmatism angle, ``k1 = πλ``, ``k2 = π Cs λ³ / 2``,
    ``arcsin(amplitude contrast) + phase shift`` and ``B / 4``."""
    col = lambda name: meta[name].to_numpy(np.float64)[rows]  # noqa: E731
    lam = electron_wavelength_A(col("voltage_kV"))
    du, dv = col("defocus_u_A"), col("defocus_v_A")
    ast = np.deg2rad(col("defocus_angle_deg"))
    return np.stack(
        [
            0.5 * (du + dv),
            0.5 * (du - dv),
            np.cos(2.0 * ast),
            np.sin(2.0 * ast),
            np.pi * lam,
            0.5 * np.pi * col("cs_mm") * 1e7 * lam**3,
            np.arcsin(np.clip(col("amplitude_contrast"), -1.0, 1.0))
            + np.deg2rad(col("phase_shift_deg")),
            col("bfactor_A2") / 4.0,
        ],
        axis=1,
    )


def _preprocess_chunks(
    particles: Any,
    geom: SliceGeometry,
    chunk_size: int,
    out: tuple[np.ndarray, np.ndarray] | None = None,
    out_pos: np.ndarray | None = None,
) -> Any:
    """Yield ``(idx, X, C)`` NumPy blocks of preprocessed particles, in order. With ``out =
    (X_all, C_all)`` the rows are written there (rows ``idx``, or ``out_pos[idx]``: the stored
    row of each particle) and the blocks are not returned (``X``, ``C`` are None).

    One ``rfft2`` per chunk, then :func:`disc_ctf_kernel` (crop to the disc, recentre, CTF) in
    one parallel pass; the module docstring of :mod:`cryoclass.core._preprocess_numba` says
    how it equals ``ifftshift → rfft2 → crop → disc × recentre_phase`` and ``ctf_2d``."""
    meta = particles.meta
    D = int(particles.box)
    apix = float(particles.pixel_size_A)
    kx = geom.kx.astype(np.float64)
    ky = geom.ky.astype(np.float64)
    freq_x, freq_y = kx / (D * apix), ky / (D * apix)  # 1/Å
    theta2 = 2.0 * np.arctan2(freq_y, freq_x)
    iy, ix = geom.pixel_index
    rows = np.ascontiguousarray(_crop_axis_indices(D, geom.Dc)[iy], dtype=np.int64)
    cols = np.ascontiguousarray(ix, dtype=np.int64)
    pre = np.exp(2j * np.pi * (kx + ky) * (D // 2) / D)  # ifftshift of the image, in Fourier
    per_pixel = (  # the kernel's per-disc-pixel constants (see disc_ctf_kernel)
        rows,
        cols,
        pre.real.copy(),
        pre.imag.copy(),
        freq_x,
        freq_y,
        geom.kx.astype(np.int64),
        geom.ky.astype(np.int64),
        1.0 / (D * apix),
        np.cos(theta2),
        np.sin(theta2),
    )
    shifts = np.stack(
        [meta["shift_x_A"].to_numpy(np.float64), meta["shift_y_A"].to_numpy(np.float64)], axis=1
    )
    release = getattr(particles.images, "release", None)
    for n_chunk, (idx, imgs) in enumerate(particles.images.chunks(chunk_size)):
        idx = np.asarray(idx)
        F = _fft.rfft2(np.asarray(imgs, dtype=np.float32))
        n = len(idx)
        if out is None:
            X = np.empty((n, geom.M), np.complex64)
            C = np.empty((n, geom.M), np.float32)
            out_rows = np.arange(n, dtype=np.int64)
        else:
            X, C = out
            out_rows = idx.astype(np.int64) if out_pos is None else out_pos[idx]
        finite = np.empty(n, np.bool_)
        disc_ctf_kernel(
            F,
            *per_pixel,
            _ctf_parameters(meta, idx),
            np.ascontiguousarray(shifts[idx]),
            out_rows,
            X,
            C,
            finite,
        )
        if not finite.all():  # NaN/inf in an image or its CTF
            bad = int(idx[np.nonzero(~finite)[0][0]])
            raise InputFileError(
                particles.source_path or "<particles>",
                f"particle {bad} has NaN or inf pixel values or CTF parameters",
            )
        yield (idx, X, C) if out is None else (idx, None, None)
        if release is not None and n_chunk % 16 == 15:
            release()  # unmap image stacks so their pages do not pile up in resident memory


def build_problem(
    particles: Any,
    filter_res_A: float,
    pad: int = 2,
    chunk_size: int = 1024,
    xp: Any = np,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    memory_limit_GB: float = 0.0,
) -> Problem:
    """Read, crop, recentre and CTF-evaluate all particles (in chunks) into a :class:`Problem`.

    ``progress(done, total)`` is called after each chunk. With ``cache_dir`` the preprocessed
    particles go to (or are reused from) an on-disk cache there and are streamed by the passes;
    without it they are kept in memory, unless they would take more than ``memory_limit_GB``
    (> 0), which is refused with a message naming ``cache_dir``.
    """
    meta = particles.meta
    N = len(particles)
    D = int(particles.box)
    apix = float(particles.pixel_size_A)
    Dc, apix_c = classification_box(D, apix, filter_res_A)
    r_max = min(D * apix / filter_res_A, Dc / 2)
    geom = SliceGeometry(Dc, pad, r_max=r_max)
    A = np.ascontiguousarray(particles.rotations, dtype=np.float32)
    store: ParticleStore
    if cache_dir:

        def fill(write: Callable[[np.ndarray, np.ndarray, np.ndarray], None]) -> None:
            done = 0
            for idx, X, C in _preprocess_chunks(particles, geom, chunk_size):
                write(idx, X, C)
                done += len(idx)
                if progress is not None:
                    progress(done, N)

        store, reused = open_or_build_cache(particles, filter_res_A, cache_dir, geom.M, fill, xp)
        if reused and progress is not None:
            progress(N, N)
    else:
        need_GB = N * geom.M * 12 / 1e9
        if memory_limit_GB > 0 and need_GB > memory_limit_GB:
            raise ParameterError(
                "memory_limit_GB",
                f"the preprocessed particles need {need_GB:.2f} GB, more than the limit of "
                f"{memory_limit_GB:g} GB; set cache_dir to stream them from disk",
            )
        X = np.empty((N, geom.M), np.complex64)
        C = np.empty((N, geom.M), np.float32)
        # in memory on the CPU: rows stored in the passes' viewing-direction order, so a pass
        # over all particles reads them as contiguous views instead of gathering every chunk
        # (the results are the same: the passes process the same rows in the same order)
        order = view_order(A) if xp is np and N > 1 else None
        rows = ArrayStore(X, C, order)  # X, C are filled below, each particle at its stored row
        pos = rows.position(np.arange(N))
        done = 0
        for idx, _, _ in _preprocess_chunks(particles, geom, chunk_size, (X, C), pos):
            done += len(idx)
            if progress is not None:
                progress(done, N)
        store = rows if xp is np else ArrayStore(to_device(X, xp), to_device(C, xp))
    half = meta["half_set"].to_numpy(np.int64) % 2
    scale = meta["scale"].to_numpy(np.float32)
    return Problem(
        geom=geom,
        store=store,
        A=to_device(A, xp),
        half=to_device(half, xp),
        scale_input=to_device(scale, xp),
        box=D,
        pixel_size_A=apix,
        box_c=Dc,
        pixel_size_c_A=apix_c,
        filter_res_A=float(filter_res_A),
    )
