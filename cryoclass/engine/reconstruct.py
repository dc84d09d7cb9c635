"""M-step: class sufficient statistics and their regularised solution into class volumes.

Statistics per class ``k`` and half-set ``h`` on the padded half-space grid:
``num = Σ r α C X / σ²`` and ``wgt = Σ r α² C² / σ²`` (from
:func:`cryoclass.core.slices.backproject_weighted`). A class volume is the Wiener solution
``V = num / (wgt + 1/τ²(ν))`` with ``τ²`` from the half-set FSC (``use_fsc_filter``: SSNR =
2·FSC/(1−FSC) of the full map, τ² = SSNR / ⟨wgt⟩_shell — FSC filtering) or, RELION-style, from
the class power spectrum times ``tau2_fudge``. Then back to real space, symmetrised, masked.
With a :class:`ConsensusPrior` (``shrink_to_consensus``) a class is instead the consensus plus
its regularised contrast against the pooled mean of all classes, shrunk locally.

Example
-------
>>> from cryoclass.core.slices import SliceGeometry
>>> from cryoclass.engine.reconstruct import ClassStats
>>> st = ClassStats.zeros(SliceGeometry(16, 2), K=3)
>>> st.acc.shape
(2, 35, 35, 18, 3, 3)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as _fft
from ..backend import get_array_module, scatter_add, to_numpy
from ..core.fsc import fsc_batched, ssnr_from_fsc
from ..core.slices import (
    SliceGeometry,
    _gridding_apodisation,
    _use_xp,
    grid_to_volumes,
    new_accumulator,
)
from ..core.symmetry import symmetrize_volume
from .local_shrink import shrink_differences

__all__ = ["ClassStats", "ConsensusPrior", "Reconstruction", "reconstruct", "shell_mean"]


@dataclass
class ClassStats:
    """Accumulated statistics: ``acc (2, Z, Y, X, K, 3)`` float32 — per half-set, grid point and
    class the numerator (Re, Im) and weight interleaved (see
    :func:`cryoclass.core.slices.new_accumulator`) — and ``mass (K,)`` float64 = Σ r."""

    acc: Any
    mass: Any

    @classmethod
    def zeros(cls, geom: SliceGeometry, K: int, xp: Any = np) -> ClassStats:
        return cls(new_accumulator(geom, K, xp), np.zeros(K))

    @property
    def K(self) -> int:
        return int(self.acc.shape[-2])

    def num(self, h: int | None = None) -> Any:
        """Numerator of half ``h`` (None: both summed), complex64 ``(Z, Y, X, K)``."""
        a = self.acc[h] if h is not None else self.acc[0] + self.acc[1]
        return (a[..., 0] + 1j * a[..., 1]).astype(np.complex64)

    def wgt(self, h: int | None = None) -> Any:
        """Weight of half ``h`` (None: both summed), float32 ``(Z, Y, X, K)``."""
        return self.acc[h, ..., 2] if h is not None else self.acc[0, ..., 2] + self.acc[1, ..., 2]

    def scale_(self, f: float) -> None:
        """Multiply all statistics by ``f`` in place (O-EM forgetting)."""
        if isinstance(self.acc, np.ndarray) and self.acc.flags.c_contiguous:
            from ..core._scale_numba import scale_inplace  # NumPy's runs on one thread

            scale_inplace(self.acc.reshape(-1), np.float32(f))
        else:
            self.acc *= np.float32(f)
        self.mass = self.mass * f

    def reset_class_(self, k: int) -> None:
        self.acc[..., k, :] = 0
        self.mass[k] = 0.0


def _folded(a: Any) -> Any:
    """Copy of one half-set grid ``(Z, Y, X, K)`` with the x = 0 plane Hermitian-folded."""
    xp = get_array_module(a)
    out = a.copy()
    plane = a[:, :, 0, :]
    mirrored = plane[::-1, ::-1, :]
    out[:, :, 0, :] = plane + (xp.conj(mirrored) if xp.iscomplexobj(a) else mirrored)
    return out


def _grid_shell_upto(geom: SliceGeometry, xp: Any) -> Any:
    """``(Z, Y, X)`` shell of each grid point, ``n_shells`` for every point beyond the last
    (as an array of ``xp``, made once per geometry)."""
    S = geom.n_shells
    return geom.on(xp, "grid_shell_upto", lambda: np.minimum(geom.grid_shell, S))


def shell_mean(grid: Any, geom: SliceGeometry) -> np.ndarray:
    """Mean of a real grid ``(Z, Y, X, K)`` over each resolution shell → ``(K, S)`` float64."""
    xp = get_array_module(grid)
    S, K = geom.n_shells, grid.shape[-1]
    sh = _grid_shell_upto(geom, xp).ravel()
    counts = geom.on(xp, "grid_shell_counts", lambda: _shell_counts(geom))
    flat = grid.reshape(-1, K).astype(np.float64)
    if _use_xp("auto", xp):  # one scatter (a bincount waits for the GPU to give its maximum)
        sums = xp.zeros((S + 1, K), np.float64)
        scatter_add(sums, sh, flat)
        sums = sums.T
    else:
        sums = np.stack([np.bincount(sh, weights=flat[:, k], minlength=S + 1) for k in range(K)])
    return to_numpy(sums[:, :S] / xp.maximum(counts, 1.0)[None, :])


def _solve(num: Any, wgt: Any, reg: np.ndarray, geom: SliceGeometry, contrast: bool = False) -> Any:
    """``num / (wgt + reg(shell))`` on the grid (Wiener shrinkage towards zero), zero beyond the
    last shell. ``contrast``: instead each class's contrast ``(num_k − wgt_k·c) / (wgt_k +
    reg_k)`` against the pooled, unregularised mean ``c = Σ_j num_j / Σ_j wgt_j`` of all
    classes at the grid point (see :class:`ConsensusPrior`)."""
    xp = get_array_module(num)
    sh = _grid_shell_upto(geom, xp)
    reg_ext = np.concatenate([reg, np.full((reg.shape[0], 1), np.inf)], axis=1)  # (K, S+1)
    regg = xp.asarray(reg_ext.T.astype(np.float32))[sh]  # (Z, Y, X, K)
    finite = xp.isfinite(regg)
    if contrast:
        wsum = wgt.sum(-1, keepdims=True)
        pooled = xp.where(wsum > 0, num.sum(-1, keepdims=True) / xp.maximum(wsum, 1e-30), 0)
        out = (num - wgt * pooled) / (wgt + regg)
    else:
        out = num / (wgt + regg)
    return xp.where(finite, out, 0)  # (a masked assignment would wait for the GPU)


def _fused(stats: ClassStats) -> bool:
    """Whether the Numba solve kernels apply (NumPy arrays and not the array-code path)."""
    return not _use_xp("auto", get_array_module(stats.acc))


def _weight_shell_mean(stats: ClassStats, h: int | None, geom: SliceGeometry) -> np.ndarray:
    """Shell means ``(K, S)`` of the folded weight of half ``h`` (None: both halves)."""
    if not _fused(stats):
        return shell_mean(_folded(stats.wgt(h)), geom)
    from ..core._solve_numba import shell_weight_sums_kernel

    S = geom.n_shells
    sums = np.zeros((stats.K, S))
    shell_weight_sums_kernel(stats.acc, 2 if h is None else h, _grid_shell(geom), S, geom.off, sums)
    return sums / np.maximum(_shell_counts(geom), 1.0)[None, :]


@functools.lru_cache(maxsize=8)
def _grid_shell(geom: SliceGeometry) -> np.ndarray:
    return np.ascontiguousarray(geom.grid_shell.astype(np.int64))


@functools.lru_cache(maxsize=8)
def _shell_counts(geom: SliceGeometry) -> np.ndarray:
    sh = geom.grid_shell.ravel()
    return np.bincount(sh[sh < geom.n_shells], minlength=geom.n_shells).astype(np.float64)


def _solve_volumes(
    stats: ClassStats,
    h: int | None,
    reg: np.ndarray,
    geom: SliceGeometry,
    contrast: bool = False,
) -> Any:
    """Real volumes ``(K, Dc, Dc, Dc)`` of the regularised solution ``num / (wgt + reg)`` of half
    ``h`` (None: both) on the folded grid, or with ``contrast`` each class's regularised
    contrast against the pooled mean of all classes (see :func:`_solve`)."""
    if not _fused(stats):
        num, wgt = _folded(stats.num(h)), _folded(stats.wgt(h))
        return grid_to_volumes(_solve(num, wgt, reg, geom, contrast), geom)
    from ..core._solve_numba import solve_kernel

    K, Dc, P, R = stats.K, geom.Dc, geom.pad * geom.Dc, geom.R
    # the kernel writes every element where P = 2R (always: Dc is even); else zero it first
    F = (np.empty if P == 2 * R else np.zeros)((K, P, P, P // 2 + 1), np.complex64)
    solve_kernel(
        stats.acc,
        2 if h is None else h,
        np.ascontiguousarray(reg, dtype=np.float32),
        _grid_shell(geom),
        contrast,
        R,
        geom.off,
        P,
        F,
    )
    out = _fft.irfftn_crop(F, P, Dc, overwrite=True)  # already fftshift-ed (see the kernel)
    # out / apod in float64, rounded to float32, in one pass
    vols = np.empty(out.shape, np.float32)
    return np.divide(out, _gridding_apodisation(Dc, P, np), out=vols, casting="unsafe")


@dataclass
class Reconstruction:
    """Result of one M-step: real volumes (K, Dc, Dc, Dc) float32 (internal Fourier units),
    half-set FSC (K, S), τ² (K, S) and the regulariser used."""

    volumes: Any
    fsc: np.ndarray
    tau2: np.ndarray
    halves: Any | None = None


@dataclass
class ConsensusPrior:
    """Shrink class volumes towards the consensus instead of towards zero. Each class is
    ``volume + Δ_k`` with ``Δ_k`` the class's *contrast*: its statistics against the pooled,
    unregularised mean of all classes, ``(num_k − wgt_k·c) / (wgt_k + reg_k)``,
    ``c = Σ num / Σ wgt``, regularised by the FSC of the two half-set contrasts. What is
    reproducible about a class is its difference from the others.

    Why the pooled mean and not the regularised consensus map: a class's half-map minus the
    consensus half-map carries ``(w_k − w_c)·V`` — the stronger Wiener attenuation ``w_k`` of a
    map from fewer particles than the consensus's ``w_c`` — in both halves alike, so it reads
    as signal all over the particle (in the FSC and in the local shrinkage), and the noise
    there survives. Against the pooled mean the contrast of identical classes is zero whatever
    their sizes (``tests/test_engine_contrast.py``). Measured at N = 5 000, SNR 0.01 (3
    datasets × 4 seeds, ARI): 0.5161 / 0.4867 / 0.5131 → 0.5236 / 0.4865 / 0.5156 (with the
    local σ 12 Å, first array-code version), 0.5252 / 0.4896 / 0.5170 with σ 10 Å
    (``benchmarks/RESULTS.md``); no setting of the benchmark lower."""

    volume: Any
    #: σ (voxels) of the local shrinkage of the class differences (0 = off; see
    #: :mod:`cryoclass.engine.local_shrink`).
    local_sigma_px: float = 0.0


def reconstruct(
    stats: ClassStats,
    geom: SliceGeometry,
    mask: Any,
    *,
    use_fsc_filter: bool = True,
    tau2_prev: np.ndarray | None = None,
    tau2_fudge: float = 4.0,
    sym_ops: np.ndarray | None = None,
    keep_halves: bool = False,
    prior: ConsensusPrior | None = None,
) -> Reconstruction:
    """Solve the class statistics into masked real-space class volumes (see module docstring).

    ``mask``: (Dc, Dc, Dc) solvent mask, applied to half-maps for the FSC and to the result.
    ``tau2_prev``: the previous τ² (regularises the half-maps; None → 1 % of the mean weight).
    """
    xp = get_array_module(stats.acc)
    S = geom.n_shells
    halves, regs = [], []
    for h in (0, 1):
        if tau2_prev is not None:
            regs.append(1.0 / tau2_prev)
        else:
            regs.append(0.01 * np.maximum(_weight_shell_mean(stats, h, geom), 1e-30))
        halves.append(_solve_volumes(stats, h, regs[h], geom))
    if sym_ops is not None and len(sym_ops) > 1:
        halves = [xp.stack([symmetrize_volume(v, sym_ops) for v in hv]) for hv in halves]
    _, fsc = fsc_batched(halves[0], halves[1], mask=mask, pixel_size_A=1.0)
    fsc = np.nan_to_num(to_numpy(fsc)[:, :S], nan=0.0)
    fsc[:, 0] = 1.0
    wmean = np.maximum(_weight_shell_mean(stats, None, geom), 1e-30)
    if use_fsc_filter:
        ssnr = np.maximum(ssnr_from_fsc(fsc, full_map=True), 1e-6)
        tau2 = ssnr / wmean
    else:
        tau2 = _tau2_from_power(halves, geom, tau2_fudge)
    if prior is not None:
        vols = _consensus_plus_contrast(stats, geom, mask, prior, regs, wmean, sym_ops)
    else:
        vols = _solve_volumes(stats, None, 1.0 / np.maximum(tau2, 1e-30), geom)
        if sym_ops is not None and len(sym_ops) > 1:
            vols = xp.stack([symmetrize_volume(v, sym_ops) for v in vols])
    vols = vols * mask[None]
    return Reconstruction(vols.astype(np.float32), fsc, tau2, halves if keep_halves else None)


def _consensus_plus_contrast(
    stats: ClassStats,
    geom: SliceGeometry,
    mask: Any,
    prior: ConsensusPrior,
    reg_halves: list[np.ndarray],
    wmean: np.ndarray,
    sym_ops: np.ndarray | None,
) -> Any:
    """Class volumes ``consensus + Δ_k`` (see :class:`ConsensusPrior`): the half-set contrasts
    (regularised like the half-maps) give the FSC that regularises the full contrast, and are
    the signal and noise estimates of its local shrinkage."""
    xp = get_array_module(stats.acc)
    S = geom.n_shells
    sym = sym_ops is not None and len(sym_ops) > 1

    def contrast(h: int | None, reg: np.ndarray) -> Any:
        d = _solve_volumes(stats, h, reg, geom, contrast=True)
        return xp.stack([symmetrize_volume(v, sym_ops) for v in d]) if sym else d

    d = [contrast(h, reg_halves[h]) for h in (0, 1)]
    _, fsc_d = fsc_batched(d[0], d[1], mask=mask, pixel_size_A=1.0)
    fsc_d = np.nan_to_num(to_numpy(fsc_d)[:, :S], nan=0.0)
    tau2_d = np.maximum(ssnr_from_fsc(fsc_d, full_map=True), 1e-6) / wmean
    delta = contrast(None, 1.0 / np.maximum(tau2_d, 1e-30))
    if prior.local_sigma_px > 0:
        delta = shrink_differences(delta, d, mask, prior.local_sigma_px)
    return xp.asarray(prior.volume)[None] + delta


def _tau2_from_power(halves: list[Any], geom: SliceGeometry, fudge: float) -> np.ndarray:
    """RELION-style τ²(ν) = T · ⟨|V|²⟩_shell of the class map (average of the two halves)."""
    from ..core.fsc import shell_index

    xp = get_array_module(halves[0])
    vol = 0.5 * (halves[0] + halves[1])
    F = _fft.rfftn(xp.fft.ifftshift(vol, axes=(1, 2, 3)), axes=(1, 2, 3))
    D = vol.shape[-1]
    sh = shell_index(D, xp).ravel()
    S = geom.n_shells
    keep = sh < S
    cnt = xp.maximum(xp.bincount(sh[keep], minlength=S), 1)
    p = (F.real**2 + F.imag**2).reshape(F.shape[0], -1)
    ps = xp.stack(
        [xp.bincount(sh[keep], weights=p[k, keep], minlength=S) / cnt for k in range(F.shape[0])]
    )
    return np.maximum(fudge * to_numpy(ps), 1e-30)
