"""Fourier-slice projection, its adjoint (back-projection) and the fused classification kernels.

Two tiers (as in torch-fourier-slice):

* for people: :func:`project` (volume → CTF-free images) and :func:`backproject`
  (images → ``(numerator, weights)`` grids) and :func:`reconstruct_simple`;
* for the engine: :class:`SliceGeometry` (the classification-box disc and the padded half-space
  grid), :func:`volumes_to_grid` / :func:`grid_to_volumes`, and the fused kernels
  :func:`loglik` (K log-likelihoods per particle without materialising a projection) and
  :func:`backproject_weighted` (responsibility-weighted scatter into K accumulators).

Grid layout. A volume of box ``Dc`` is zero-padded to ``P = pad·Dc``, transformed with
``rfftn(ifftshift(·))`` and stored as a Hermitian half-space ``grid[z, y, x, k]`` with
``z, y ∈ [−R−1, R+1]`` (index ``+ off``, ``off = R + 1``), ``x ∈ [0, R+1]``, ``R = pad·Dc/2``,
classes innermost so the K values at a grid point are contiguous. A slice point
``q = pad·Aᵀ(kx, ky, 0)`` with ``q_x < 0`` reads ``conj(grid(−q))``. Trilinear interpolation;
the volume is pre-divided by ``sinc²`` (the interpolant's real-space apodisation).

Backends. Each hot kernel has a Numba CPU twin (:mod:`._slice_numba`) and an array-code twin
written once against ``xp`` (NumPy or CuPy, chosen from the input arrays): on the GPU that array
code *is* the kernel (CuPy gathers and atomic scatter-adds); on the CPU CI runs the same code with
``xp = numpy`` as the reference the Numba kernels are tested against.

Example
-------
>>> import numpy as np
>>> from cryoclass.core.slices import project
>>> vol = np.zeros((16, 16, 16), np.float32); vol[8, 8, 8] = 1.0
>>> img = project(vol, np.eye(3)[None])
>>> int(np.argmax(img[0])) == 8 * 16 + 8
True
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend as _fft
from ..backend import get_array_module, scatter_add

__all__ = [
    "SliceGeometry",
    "volumes_to_grid",
    "grid_to_volumes",
    "enforce_hermitian",
    "volumes_to_solution_grid",
    "new_accumulator",
    "split_accumulator",
    "loglik",
    "backproject_weighted",
    "slice_stats",
    "project",
    "backproject",
    "reconstruct_simple",
    "extract_disc",
]


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class SliceGeometry:
    """The classification box ``Dc``, padding and the half-plane disc of kept pixels.

    Disc: rfft2 pixels ``(ky, kx)`` with ``0 < kx² + ky² ≤ r_max²`` (``r_max = Dc/2`` unless
    given), DC excluded. ``weight`` is the Hermitian multiplicity (2 for ``kx > 0``, else 1) so
    sums over the disc equal sums over the full plane.
    """

    Dc: int
    pad: int = 2
    r_max: float | None = None

    def on(self, xp: Any, name: str, make: Any = None) -> Any:
        """The geometry constant ``name`` (an attribute, or ``make()`` when given) as an array
        of ``xp``: on NumPy the array itself; on the GPU a device copy made once per geometry
        (copying it again at every call was a host-to-device transfer per kernel call)."""
        value = (lambda: getattr(self, name)) if make is None else make
        if xp is np:
            return value()
        cache = self.__dict__.setdefault("_device_cache", {})
        if name not in cache:
            cache[name] = xp.asarray(value())
        return cache[name]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_device_cache"}

    @property
    def R(self) -> int:
        """Grid radius in padded units (``pad · Dc / 2``)."""
        return self.pad * self.Dc // 2

    @property
    def off(self) -> int:
        return self.R + 1

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        n = 2 * self.R + 3
        return (n, n, self.R + 2)

    @property
    def radius(self) -> float:
        return self.Dc / 2 if self.r_max is None else float(self.r_max)

    @cached_property
    def _disc(self) -> tuple[np.ndarray, ...]:
        D = self.Dc
        ky = np.fft.fftfreq(D, 1.0 / D)
        kx = np.arange(D // 2 + 1, dtype=np.float64)
        KY, KX = np.meshgrid(ky, kx, indexing="ij")
        r2 = KX**2 + KY**2
        keep = (r2 > 0) & (r2 <= self.radius**2 + 1e-9)
        iy, ix = np.nonzero(keep)
        return (
            KX[iy, ix].astype(np.float32),
            KY[iy, ix].astype(np.float32),
            iy.astype(np.int64),
            ix.astype(np.int64),
            np.rint(np.sqrt(r2[iy, ix])).astype(np.int64),
        )

    @property
    def kx(self) -> np.ndarray:
        """(M,) float32 integer frequencies (cycles per box) along x of the disc pixels."""
        return self._disc[0]

    @property
    def ky(self) -> np.ndarray:
        return self._disc[1]

    @property
    def pixel_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(iy, ix) indices of the disc pixels in an rfft2 array of shape (Dc, Dc//2+1)."""
        return self._disc[2], self._disc[3]

    @property
    def shell(self) -> np.ndarray:
        """(M,) int64 resolution shell (rounded radius, 1..r_max) of each disc pixel."""
        return self._disc[4]

    @property
    def n_shells(self) -> int:
        return int(np.floor(self.radius + 0.5)) + 1

    @property
    def weight(self) -> np.ndarray:
        """(M,) float32 Hermitian multiplicity of each disc pixel."""
        return np.where(self.kx > 0, 2.0, 1.0).astype(np.float32)

    @property
    def M(self) -> int:
        return int(self.kx.size)

    @cached_property
    def grid_shell(self) -> np.ndarray:
        """Shell index (in Dc units, rounded) of every grid voxel, shape ``grid_shape``."""
        R, off = self.R, self.off
        z = np.arange(-off, off + 1)
        x = np.arange(0, R + 2)
        rr = np.sqrt(z[:, None, None] ** 2 + z[None, :, None] ** 2 + x[None, None, :] ** 2)
        return np.rint(rr / self.pad).astype(np.int64)


def extract_disc(F: Any, geom: SliceGeometry) -> Any:
    """Disc pixels of rfft2 arrays ``(..., Dc, Dc//2+1)`` → ``(..., M)``."""
    xp = get_array_module(F)
    iy, ix = geom.pixel_index
    return F[..., xp.asarray(iy), xp.asarray(ix)]


# --------------------------------------------------------------------------- volumes <-> grid
def _gridding_apodisation(n: int, P: int, xp: Any) -> Any:
    """Separable sinc² apodisation of trilinear interpolation on a P-grid, for a box of n
    (float64; on the CPU one read-only array per ``(n, P)``, made once)."""
    return _gridding_apodisation_np(n, P) if xp is np else _sinc2(n, P, xp)


@functools.lru_cache(maxsize=8)
def _gridding_apodisation_np(n: int, P: int) -> np.ndarray:
    a = _sinc2(n, P, np)
    a.flags.writeable = False
    return a


def _sinc2(n: int, P: int, xp: Any) -> Any:
    x = (xp.arange(n) - n // 2) / P
    s = xp.sinc(x) ** 2
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def volumes_to_grid(vols: Any, geom: SliceGeometry, dtype: Any = np.complex64) -> Any:
    """Real volumes ``(K, Dc, Dc, Dc)`` → padded half-space Fourier grid ``(Z, Y, X, K)``."""
    xp = get_array_module(vols)
    K, Dc = vols.shape[0], vols.shape[1]
    if Dc != geom.Dc:
        raise ValueError(f"volume box {Dc} does not match the geometry box {geom.Dc}")
    P, R, off = geom.pad * Dc, geom.R, geom.off
    apod = _gridding_apodisation(Dc, P, xp)
    grid = xp.zeros(geom.grid_shape + (K,), dtype=dtype)
    if not _use_xp("auto", xp) and P % 2 == 0 and np.dtype(dtype) == np.complex64:
        from ._solve_numba import fourier_to_grid_kernel

        box = np.empty((K, Dc, Dc, Dc), np.float32)
        np.divide(vols, apod, out=box, casting="unsafe")  # in float64, rounded to float32
        # the transform of the zero-padded volumes (lines of zeros skipped); the kernel
        # applies the ifftshift as a phase
        F = _fft.rfftn_centred(box, P)
        fourier_to_grid_kernel(F.astype(np.complex64, copy=False), R, off, P, grid)
        return grid
    padded = xp.zeros((K, P, P, P), dtype=np.float32)
    s = P // 2 - Dc // 2
    box = padded[:, s : s + Dc, s : s + Dc, s : s + Dc]
    if xp is np:  # vols / apod in float64, rounded into the float32 box: no temporaries
        np.divide(vols, apod, out=box, casting="unsafe")
    else:
        box[...] = vols / apod
    F = _fft.rfftn(xp.fft.ifftshift(padded, axes=(1, 2, 3)), axes=(1, 2, 3))
    idx = xp.arange(-R, R) % P  # frequencies -R..R-1 on the P grid
    sub = F[:, idx][:, :, idx][:, :, :, : R + 1]  # (K, 2R, 2R, R+1)
    grid[off - R : off + R, off - R : off + R, : R + 1, :] = xp.moveaxis(sub, 0, -1)
    return grid


def volumes_to_solution_grid(vols: Any, geom: SliceGeometry) -> Any:
    """The grid ``G`` with ``grid_to_volumes(G) == vols``: the representation of a volume in which
    back-projected solutions ``num / wgt`` live (no interpolation pre-correction). Used as the
    prior mean of a regularised solve."""
    xp = get_array_module(vols)
    apod = _gridding_apodisation(vols.shape[-1], geom.pad * geom.Dc, xp)
    return volumes_to_grid((vols * apod**2).astype(np.float32), geom)


def enforce_hermitian(grid: Any, geom: SliceGeometry) -> Any:
    """Fold the ``x = 0`` plane of an accumulated half-space grid (in place):
    ``G(0, y, z) ← G(0, y, z) + conj(G(0, −y, −z))`` (RELION's ``enforceHermitianSymmetry``)."""
    xp = get_array_module(grid)
    plane = grid[..., :, :, 0, :]
    mirrored = plane[..., ::-1, ::-1, :]
    both = plane + (xp.conj(mirrored) if xp.iscomplexobj(grid) else mirrored)
    grid[..., :, :, 0, :] = both
    return grid


def grid_to_volumes(grid: Any, geom: SliceGeometry, gridding_correction: bool = True) -> Any:
    """Half-space Fourier grid ``(Z, Y, X, K)`` (a volume transform, e.g. ``N / (W + reg)``)
    → real volumes ``(K, Dc, Dc, Dc)`` float32 (cropped from the padded box)."""
    xp = get_array_module(grid)
    Dc, P, R, off = geom.Dc, geom.pad * geom.Dc, geom.R, geom.off
    K = grid.shape[-1]
    F = xp.zeros((K, P, P, P // 2 + 1), dtype=np.complex64)
    idx = xp.arange(-R, R) % P
    sub = xp.moveaxis(grid[off - R : off + R, off - R : off + R, : R + 1, :], -1, 0)
    F[:, idx[:, None], idx[None, :], : R + 1] = sub
    vol = xp.fft.fftshift(_fft.irfftn(F, s=(P, P, P), axes=(1, 2, 3)), axes=(1, 2, 3))
    s = P // 2 - Dc // 2
    out = vol[:, s : s + Dc, s : s + Dc, s : s + Dc].astype(np.float32)
    if gridding_correction:
        out = out / _gridding_apodisation(Dc, P, xp)
    return out


# --------------------------------------------------------------------------- array-code twin
def _slice_coords(A: Any, geom: SliceGeometry, xp: Any) -> tuple[Any, Any]:
    """Padded coordinates ``q (n, M, 3)`` (flipped to q_x ≥ 0) and the flip sign ``(n, M)``."""
    kx, ky = geom.on(xp, "kx"), geom.on(xp, "ky")
    A = xp.asarray(A, dtype=np.float32)
    q = geom.pad * (A[:, 0, None, :] * kx[None, :, None] + A[:, 1, None, :] * ky[None, :, None])
    sgn = xp.where(q[..., 0] < 0, -1.0, 1.0).astype(np.float32)
    return q * sgn[..., None], sgn


def _index_dtype(size: int) -> Any:
    """int32 flat indices where they fit (half the index traffic on the GPU), else int64."""
    return np.int32 if size < 2**31 else np.int64


def _corner_rows(q: Any, geom: SliceGeometry, xp: Any) -> tuple[Any, Any]:
    """The 8 trilinear corners at once: flat indices ``(n, M, 8)`` into the ``geom.grid_shape``
    grid and their weights ``(n, M, 8)`` float32 (corner ``cz·4 + cy·2 + cx``; weight
    ``wz·wy·wx``, each factor ``d`` or ``1 − d`` of the fractional coordinate, as the Numba
    kernels compute it). A handful of array operations, not eight rounds of them: on the GPU
    each operation is a kernel launch, and launches were where the array code spent its time
    (cProfile of a GPU job, 2026-12-04); the corner offsets are copied to the GPU once."""
    Z, Y, X = geom.grid_shape
    f = xp.floor(q)
    d = (q - f).astype(np.float32)
    it = _index_dtype(Z * Y * X)
    i = f.astype(it)
    base = ((i[..., 2] + geom.off) * Y + (i[..., 1] + geom.off)) * X + i[..., 0]
    step = geom.on(xp, f"corner_steps_{np.dtype(it).name}", lambda: _corner_steps(geom, it))
    rows = base[..., None] + step
    f01 = xp.empty(d.shape + (2,), np.float32)  # (n, M, axis x/y/z, factor for bit 0/1)
    xp.subtract(1, d, out=f01[..., 0])
    f01[..., 1] = d
    w = f01[..., 2, :, None, None] * f01[..., 1, None, :, None] * f01[..., 0, None, None, :]
    return rows, w.reshape(w.shape[:-3] + (8,))


def _corner_steps(geom: SliceGeometry, it: Any) -> np.ndarray:
    """``(8,)`` flat-index offsets of the corners from corner (0, 0, 0)."""
    _, Y, X = geom.grid_shape
    bits = [(cz, cy, cx) for cz in (0, 1) for cy in (0, 1) for cx in (0, 1)]
    return np.array([(cz * Y + cy) * X + cx for cz, cy, cx in bits], dtype=it)


#: Particle·pixel·corner·class entries per batch of the array code, so that its temporaries
#: (float32 Re/Im/weight rows, their int32 indices, the weights) stay under ~1 GB whatever the
#: box and K (counted from the array sizes, not measured). At box 64, K = 3 a chunk of 1024
#: particles is one batch.
CORNER_BATCH = 2**25


def _batches(n: int, per_particle: int) -> list[slice]:
    """Consecutive particle ranges of at most :data:`CORNER_BATCH` entries each."""
    step = max(1, CORNER_BATCH // max(1, per_particle))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def _gather_xp(grid: Any, A: Any, geom: SliceGeometry) -> Any:
    """Slices of all K classes ``(n, M, K)`` complex64 (array code; NumPy or CuPy)."""
    xp = get_array_module(grid)
    K = grid.shape[-1]
    if grid.shape[:3] != geom.grid_shape:
        raise ValueError(f"grid {grid.shape[:3]} is not the geometry's {geom.grid_shape}")
    parts = [_gather_batch(grid, A[b], geom, xp) for b in _batches(len(A), geom.M * 8 * K)]
    return parts[0] if len(parts) == 1 else xp.concatenate(parts)


def _gather_batch(grid: Any, A: Any, geom: SliceGeometry, xp: Any) -> Any:
    q, sgn = _slice_coords(A, geom, xp)
    K = grid.shape[-1]
    rows, w = _corner_rows(q, geom, xp)
    vals = grid.reshape(-1, K)[rows]  # (n, M, 8, K)
    out = (w[..., None] * vals).sum(axis=2, dtype=np.complex64)
    return xp.where((sgn < 0)[..., None], xp.conj(out), out)


def _loglik_xp(grid, A, X, C, alpha, wsig, geom):
    xp = get_array_module(grid, X)
    V = _gather_xp(grid, A, geom)
    pred = (alpha[:, None] * C)[..., None] * V
    d = X[..., None] - pred
    return -0.5 * xp.sum(wsig[None, :, None] * (d.real**2 + d.imag**2), axis=1, dtype=np.float64)


def _backproject_xp(A, X, C, alpha, wsig, r, half, geom, acc, rmin):
    """Scatter-add into ``acc (2, Z, Y, X, K, 3)``: per batch of particles (:func:`_batches`),
    one (atomic on the GPU) scatter of every particle pixel's 8 corners × K classes × (Re, Im,
    weight) rows."""
    if acc.shape[1:4] != geom.grid_shape:
        raise ValueError(f"accumulator {acc.shape[1:4]} is not the geometry's {geom.grid_shape}")
    for b in _batches(len(A), geom.M * 8 * acc.shape[4]):
        _backproject_batch(A[b], X[b], C[b], alpha[b], wsig, r[b], half[b], geom, acc, rmin)


def _backproject_batch(A, X, C, alpha, wsig, r, half, geom, acc, rmin):
    xp = get_array_module(acc, X)
    q, sgn = _slice_coords(A, geom, xp)
    c = alpha[:, None] * C
    data = X * c * wsig[None, :]
    data = xp.where(sgn < 0, xp.conj(data), data)
    wv = c * c * wsig[None, :]
    rr = xp.where(r >= rmin, r, 0).astype(np.float32)
    Z, Y, Xs, K = acc.shape[1:5]
    it = _index_dtype(acc.size)
    rows, w = _corner_rows(q, geom, xp)
    h = xp.asarray(half).astype(it) * it(Z * Y * Xs)
    rows = ((rows + h[:, None, None])[..., None] * it(K) + xp.arange(K, dtype=it)).reshape(-1)
    wr = w[..., None] * rr[:, None, None, :]  # (n, M, 8, K)
    vals = xp.empty(wr.shape + (3,), np.float32)
    xp.multiply(wr, data.real[..., None, None], out=vals[..., 0])
    xp.multiply(wr, data.imag[..., None, None], out=vals[..., 1])
    xp.multiply(wr, wv[..., None, None], out=vals[..., 2])
    scatter_add(acc.reshape(-1, 3), rows, vals.reshape(-1, 3))


def new_accumulator(geom: SliceGeometry, K: int, xp: Any = np) -> Any:
    """Zeroed back-projection accumulator ``(2, Z, Y, X, K, 3)`` float32: per half-set, grid
    point and class, the numerator (Re, Im) and the weight, interleaved."""
    return xp.zeros((2,) + geom.grid_shape + (K, 3), np.float32)


def split_accumulator(acc: Any) -> tuple[Any, Any]:
    """``(numerator complex64 (..., K), weight float32 (..., K))`` from an accumulator (copies)."""
    return (acc[..., 0] + 1j * acc[..., 1]).astype(np.complex64), acc[..., 2].copy()


# --------------------------------------------------------------------------- engine kernels
def _use_xp(impl: str, xp: Any) -> bool:
    """Whether to run the array-code twin: ``impl='xp'``, a CuPy input, or ``impl='auto'`` with
    the environment variable ``CRYOCLASS_KERNEL_IMPL=xp`` (runs the GPU algorithm on NumPy: how
    CI without a GPU checks the whole job's GPU path)."""
    if impl == "auto":
        impl = os.environ.get("CRYOCLASS_KERNEL_IMPL", "auto")
    return impl == "xp" or xp is not np


def _prep(A, X, C, alpha, wsig, xp):
    return (
        xp.ascontiguousarray(xp.asarray(A, dtype=np.float32)),
        xp.ascontiguousarray(xp.asarray(X, dtype=np.complex64)),
        xp.ascontiguousarray(xp.asarray(C, dtype=np.float32)),
        xp.ascontiguousarray(xp.asarray(alpha, dtype=np.float32)),
        xp.ascontiguousarray(xp.asarray(wsig, dtype=np.float32)),
    )


def loglik(
    grid: Any,
    A: Any,
    X: Any,
    C: Any,
    alpha: Any,
    wsig: Any,
    geom: SliceGeometry,
    impl: str = "auto",
) -> Any:
    """Gaussian log-likelihoods of particles under every class, fused (no projections kept).

    ``LL[i, k] = −½ Σ_m wsig[m] |X[i,m] − α_i C[i,m] V_k(pad·A_iᵀ(kx_m, ky_m, 0))|²``

    Parameters
    ----------
    grid : (Z, Y, X, K) complex64 half-space class grids (:func:`volumes_to_grid`).
    A : (n, 3, 3) RELION rotation matrices.
    X : (n, M) complex64 disc pixels of the recentred particle transforms.
    C : (n, M) float32 CTF at the disc pixels.
    alpha : (n,) per-particle scale.
    wsig : (M,) float32 ``weight / σ²(shell)``.
    impl : 'auto' (Numba on the CPU, array code on the GPU), 'numba' or 'xp'.

    Returns
    -------
    (n, K) float64 log-likelihoods (up to a particle-independent constant).
    """
    xp = get_array_module(grid, X)
    A, X, C, alpha, wsig = _prep(A, X, C, alpha, wsig, xp)
    if _use_xp(impl, xp):
        return _loglik_xp(grid, A, X, C, alpha, wsig, geom)
    out = np.empty((X.shape[0], grid.shape[-1]), np.float64)
    _loglik_numba(_verified_loglik_kernel(), grid, A, X, C, alpha, wsig, geom, out)
    return out


def _loglik_numba(kernel, grid, A, X, C, alpha, wsig, geom, out) -> None:
    """Call the Numba log-likelihood ``kernel`` (its flat ``uint64`` view of the grid)."""
    g = np.ascontiguousarray(grid, dtype=np.complex64)
    gq = g.view(np.uint64).reshape(-1)
    kernel(gq, g.shape[3], g.shape[1], g.shape[2], A, geom.kx, geom.ky, wsig, X, C, alpha,
           np.float32(geom.pad), geom.off, out)  # fmt: skip


def _tiny_problem(K: int) -> tuple:
    """A tiny random problem (8³ box, 12 particles) for the once-per-process kernel checks."""
    from scipy.spatial.transform import Rotation  # loaded with SciPy's k-means already

    rng = np.random.default_rng(K)
    geom, n = SliceGeometry(8, 2), 12
    A = Rotation.random(n, random_state=K).as_matrix().astype(np.float32)
    X = (rng.normal(size=(n, geom.M)) + 1j * rng.normal(size=(n, geom.M))).astype(np.complex64)
    C = rng.uniform(-1, 1, (n, geom.M)).astype(np.float32)
    al = rng.uniform(0.5, 2, n).astype(np.float32)
    ws = rng.uniform(0.5, 2, geom.M).astype(np.float32)
    return rng, geom, A, X, C, al, ws


def _loglik_agrees(kernel: Any, K: int) -> bool:
    """Whether ``kernel`` (a Numba log-likelihood) equals the array code on a tiny random
    problem with K classes."""
    rng, geom, A, X, C, al, ws = _tiny_problem(K)
    vols = rng.normal(size=(K, geom.Dc, geom.Dc, geom.Dc)).astype(np.float32)
    grid = volumes_to_grid(vols, geom)
    ref = _loglik_xp(grid, A, X, C, al, ws, geom)
    got = np.empty_like(ref)
    _loglik_numba(kernel, grid, A, X, C, al, ws, geom, got)
    return bool(np.allclose(got, ref, rtol=1e-5, atol=1e-6 * float(np.abs(ref).max())))


def _verdict_file(kernel: Any) -> tuple[str, str] | None:
    """``(path, key)`` of the on-disk note that ``kernel``'s cached compilation agreed with the
    array code: next to Numba's cache index of the kernel, keyed by that index's size and
    modification time (a recompilation rewrites it), the CPU (name and features) and the Numba
    version. None where the kernel has no on-disk cache (yet)."""
    cache = getattr(getattr(kernel, "dispatcher", None), "_cache", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    try:
        st = os.stat(index)  # type: ignore[arg-type]
        import llvmlite.binding as llvm
        import numba
    except (OSError, TypeError, ImportError):
        return None
    cpu = f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"
    return f"{index}.verified", f"{st.st_size} {st.st_mtime_ns} {cpu} numba {numba.__version__}"


def _verified_before(kernel: Any) -> bool:
    note = _verdict_file(kernel)
    try:
        return note is not None and Path(note[0]).read_text(encoding="utf-8") == note[1]
    except OSError:
        return False


def _note_verified(kernel: Any) -> None:
    """Write the verdict note (atomically; silently skipped where the cache is read-only)."""
    note = _verdict_file(kernel)
    if note is None:
        return
    tmp = f"{note[0]}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(note[1])
        os.replace(tmp, note[0])
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _verified_kernel(wide: Any, plain: Any, agrees: Any, what: str) -> Any:
    """``wide`` (a kernel compiled with an LLVM option Numba does not use by default) if
    ``agrees(wide)``, else — a miscompilation on this CPU — ``plain()``, with a warning:
    slower, never silently wrong. The check runs once per binary: its success
    is noted beside Numba's on-disk cache (:func:`_verdict_file`), which later processes read
    instead of checking again (saves 0.12 s of each job's start: both checks, N = 5 000)."""
    if _verified_before(wide):
        return wide
    if agrees(wide):
        _note_verified(wide)  # keyed after the check: its first call may compile and save
        return wide
    import warnings

    warnings.warn(
        f"cryoclass: the vectorised {what} kernel disagrees with the array code on this CPU; "
        "using the kernel compiled with Numba's default options (correct, slower)",
        RuntimeWarning,
        stacklevel=4,
    )
    return plain()


@functools.lru_cache(maxsize=1)
def _verified_loglik_kernel() -> Any:
    """The Numba log-likelihood compiled with ``_numba_compile.gather_lanes`` lanes, checked
    once per binary against the array code through each of its class-block sizes
    (K = 7: blocks of 4 and 3; K = 6: 4 and 2; K = 1)."""
    from ._slice_numba import loglik_kernel_plain, loglik_kernel_wide

    def agrees(kernel: Any) -> bool:
        return all(_loglik_agrees(kernel, K) for K in (1, 6, 7))

    return _verified_kernel(loglik_kernel_wide, loglik_kernel_plain, agrees, "log-likelihood")


def _backproject_agrees(kernel: Any, K: int, one_hot: bool) -> bool:
    """Whether ``kernel`` (a Numba back-projection) equals the array code on a tiny random
    problem with K classes (soft or one-hot responsibilities)."""
    rng, geom, A, X, C, al, ws = _tiny_problem(K)
    n = len(A)
    r = rng.dirichlet(np.ones(K), n).astype(np.float32)
    if one_hot:
        r = (r == r.max(1, keepdims=True)).astype(np.float32)
    half = (np.arange(n) % 2).astype(np.int64)
    ref, got = new_accumulator(geom, K), new_accumulator(geom, K)
    _backproject_xp(A, X, C, al, ws, r, half, geom, ref, 1e-4)
    kernel(A, geom.kx, geom.ky, ws, X, C, al, r, half, np.float32(geom.pad), geom.off,
           np.float32(1e-4), got.reshape(2, -1), got.shape[2], got.shape[3], 1)  # fmt: skip
    return bool(np.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max())))


@functools.lru_cache(maxsize=1)
def _verified_backproject_kernel() -> Any:
    """The Numba back-projection compiled with LLVM's SLP vectoriser, which Numba keeps off by
    default after miscompilations (numba#8852): checked once per binary against the array code
    on a tiny problem through each of its paths (one class, one block of three, blocks of three
    plus a remainder, one-hot). If it disagrees, the same kernel compiled without SLP is used,
    with a warning."""
    from ._slice_numba import backproject_kernel_plain, backproject_kernel_slp

    def agrees(kernel: Any) -> bool:
        cases = ((1, False), (3, False), (4, False), (4, True))
        return all(_backproject_agrees(kernel, K, hard) for K, hard in cases)

    return _verified_kernel(backproject_kernel_slp, backproject_kernel_plain, agrees,
                            "back-projection")  # fmt: skip


def backproject_weighted(
    A: Any,
    X: Any,
    C: Any,
    alpha: Any,
    wsig: Any,
    r: Any,
    half: Any,
    geom: SliceGeometry,
    acc: Any,
    rmin: float = 1e-4,
    impl: str = "auto",
) -> None:
    """Responsibility-weighted insertion of particles into K class accumulators (in place).

    Numerator ``Σ_i r_ik α_i C_i X_i wsig`` and weight ``Σ_i r_ik α_i² C_i² wsig`` (trilinear
    scatter) into ``acc[h, z, y, x, k, (Re, Im, W)]`` (:func:`new_accumulator`), ``h = half[i]``;
    responsibilities below ``rmin`` are skipped. Fold the ``x = 0`` plane
    (:func:`enforce_hermitian`) before solving.
    """
    xp = get_array_module(acc, X)
    A, X, C, alpha, wsig = _prep(A, X, C, alpha, wsig, xp)
    r = xp.ascontiguousarray(xp.asarray(r, dtype=np.float32))
    half = xp.ascontiguousarray(xp.asarray(half, dtype=np.int64))
    if _use_xp(impl, xp):
        _backproject_xp(A, X, C, alpha, wsig, r, half, geom, acc, rmin)
        return
    import numba

    if not acc.flags.c_contiguous:  # the kernel writes a flat view: a copy would lose the sums
        raise ValueError("backproject_weighted: the accumulator must be C-contiguous")
    # tasks = 2 half-sets × nblocks class blocks (see backproject_kernel)
    nblocks = max(1, min(r.shape[1], -(-numba.get_num_threads() // 2)))
    _verified_backproject_kernel()(
        A,
        geom.kx,
        geom.ky,
        wsig,
        X,
        C,
        alpha,
        r,
        half,
        np.float32(geom.pad),
        geom.off,
        np.float32(rmin),
        acc.reshape(2, -1),
        acc.shape[2],
        acc.shape[3],
        nblocks,
    )


def slice_stats(
    grid: Any, A: Any, X: Any, C: Any, geom: SliceGeometry, impl: str = "auto"
) -> tuple[Any, Any, Any]:
    """Per-particle, per-shell sums against one volume (class 0 of ``grid``):
    ``Σ w|X|²``, ``Σ w Re(X* C V)``, ``Σ w C²|V|²`` — each ``(n, n_shells)`` float64.
    The noise model σ²(shell) and the optimal per-particle scale are built from these."""
    xp = get_array_module(grid, X)
    A, X, C, _, _ = _prep(A, X, C, np.ones(1), np.ones(1), xp)
    n, S = X.shape[0], geom.n_shells
    if _use_xp(impl, xp):
        V = _gather_xp(grid[..., :1], A, geom)[..., 0]
        P = C * V
        # per-shell sums as one product with the (M, S) shell indicator (no loop over shells:
        # on the GPU each boolean selection waited for the device)
        onehot = geom.on(xp, "shell_onehot", lambda: _shell_onehot(geom))
        vals = (X.real**2 + X.imag**2, (X.conj() * P).real, P.real**2 + P.imag**2)
        out = [v.astype(np.float64) @ onehot for v in vals]
        return out[0], out[1], out[2]
    sxx, sxp, spp = (np.zeros((n, S), np.float64) for _ in range(3))
    _slice_stats_numba(_verified_slice_stats_kernel(), grid, A, X, C, geom, (sxx, sxp, spp))
    return sxx, sxp, spp


def _shell_onehot(geom: SliceGeometry) -> np.ndarray:
    """``(M, n_shells)`` float64: each disc pixel's Hermitian weight in its shell's column."""
    onehot = geom.shell[:, None] == np.arange(geom.n_shells)[None, :]
    return onehot * geom.weight.astype(np.float64)[:, None]


def _slice_stats_numba(kernel, grid, A, X, C, geom, out) -> None:
    """Call the Numba shell-statistics ``kernel`` (its flat ``uint64`` view of the grid)."""
    g = np.ascontiguousarray(grid, dtype=np.complex64)
    kernel(g.view(np.uint64).reshape(-1), g.shape[3], g.shape[1], g.shape[2], A, geom.kx,
           geom.ky, geom.shell, X, C, np.float32(geom.pad), geom.off, *out)  # fmt: skip


def _slice_stats_agree(kernel: Any, K: int) -> bool:
    """Whether ``kernel`` (a Numba shell-statistics kernel) equals the array code on a tiny
    random problem (class 0 of K)."""
    rng, geom, A, X, C, _, _ = _tiny_problem(K)
    grid = volumes_to_grid(rng.normal(size=(K, geom.Dc, geom.Dc, geom.Dc)).astype(np.float32),
                           geom)  # fmt: skip
    ref = slice_stats(grid, A, X, C, geom, impl="xp")
    got = tuple(np.zeros_like(r) for r in ref)
    _slice_stats_numba(kernel, grid, A, X, C, geom, got)
    return all(np.allclose(g, r, rtol=1e-4, atol=1e-5 * float(np.abs(r).max()))
               for g, r in zip(got, ref))  # fmt: skip


@functools.lru_cache(maxsize=1)
def _verified_slice_stats_kernel() -> Any:
    """The shell-statistics kernel compiled like the log-likelihood, checked once per
    process against the array code (one class, and class 0 of three)."""
    from ._slice_numba import slice_stats_kernel_plain, slice_stats_kernel_wide

    def agrees(kernel: Any) -> bool:
        return _slice_stats_agree(kernel, 1) and _slice_stats_agree(kernel, 3)

    return _verified_kernel(slice_stats_kernel_wide, slice_stats_kernel_plain, agrees,
                            "shell-statistics")  # fmt: skip


# --------------------------------------------------------------------------- for people
def project(volume: Any, rotations: Any, pad: int = 2, ctf: Any = None) -> Any:
    """Project a real volume ``(D, D, D)`` at poses ``rotations (n, 3, 3)`` (RELION A).

    Returns real images ``(n, D, D)`` float32 (line integrals in voxel units; origin at D//2),
    optionally multiplied in Fourier space by ``ctf`` of shape ``(n, D, D//2+1)``.
    """
    xp = get_array_module(volume)
    D = volume.shape[0]
    geom = _full_geometry(D, pad)
    grid = volumes_to_grid(volume[None].astype(np.float32), geom)
    vals = _gather_xp(grid, rotations, geom)[..., 0]
    F = xp.zeros((len(rotations), D, D // 2 + 1), np.complex64)
    iy, ix = geom.pixel_index
    F[:, xp.asarray(iy), xp.asarray(ix)] = vals
    F[:, 0, 0] = xp.sum(volume)
    if ctf is not None:
        F = F * ctf
    return xp.fft.fftshift(_fft.irfft2(F, s=(D, D)), axes=(-2, -1)).astype(np.float32)


def _full_geometry(D: int, pad: int) -> SliceGeometry:
    """Geometry whose 'disc' is every rfft2 pixel inside the Nyquist sphere (for project)."""
    return SliceGeometry(D, pad, r_max=D / 2)


def backproject(
    images: Any, rotations: Any, pad: int = 2, ctf: Any = None
) -> tuple[Any, Any, SliceGeometry]:
    """Insert images ``(n, D, D)`` at poses ``rotations (n, 3, 3)`` into a padded Fourier grid.

    Returns ``(numerator, weights, geometry)``: half-space grids ``(Z, Y, X, 1)`` with
    ``numerator = Σ CTF·F(img)`` and ``weights = Σ CTF²`` (``CTF = 1`` when ``ctf`` is None).
    This is the exact adjoint of :func:`project`'s slice extraction on the disc
    (tested in ``tests/test_core_slices.py``).
    """
    xp = get_array_module(images)
    n, D = images.shape[0], images.shape[-1]
    geom = _full_geometry(D, pad)
    F = _fft.rfft2(xp.fft.ifftshift(images, axes=(-2, -1)))
    X = extract_disc(F, geom)
    C = xp.ones(X.shape, np.float32) if ctf is None else extract_disc(ctf, geom)
    acc = new_accumulator(geom, 1, xp)
    backproject_weighted(
        rotations,
        X,
        C,
        xp.ones(n, np.float32),
        xp.asarray(geom.weight),
        xp.ones((n, 1), np.float32),
        xp.zeros(n, np.int64),
        geom,
        acc,
        rmin=0.0,
    )
    num, wgt = split_accumulator(acc[0])
    return num, wgt, geom


def reconstruct_simple(
    images: Any, rotations: Any, pad: int = 2, ctf: Any = None, wiener: float = 1e-3
) -> Any:
    """Reconstruct a volume ``(D, D, D)`` from images by ``N / (W + wiener·mean(W))``."""
    num, wgt, geom = backproject(images, rotations, pad, ctf)
    enforce_hermitian(num, geom)
    enforce_hermitian(wgt, geom)
    reg = wiener * float(wgt[wgt > 0].mean())
    return grid_to_volumes(num / (wgt + reg), geom)[0]
