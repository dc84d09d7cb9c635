"""Heterogeneous reconstruction only: per-class maps at the full box from hard class assignments.

The CryoSPARC job of the same name: each class is reconstructed from the particles hard-assigned
to it, at the particles' **extracted box and pixel size** (the classification itself ran at the
smaller box of its filter resolution), with half-maps from the particles' half-sets, a solvent
mask (given, or automatic from the consensus), masked and unmasked half-map FSC curves and the
FSC = 0.143 resolution.

The engine's pieces are reused as they are: :func:`~cryoclass.engine.problem.build_problem` at
the Nyquist filter resolution (``filter_res_A = 2·apix`` → ``Dc = D``), the noise model and
per-particle scales against a consensus (:func:`~cryoclass.engine.passes.consensus_pass`,
:func:`~cryoclass.engine.passes.stats_pass`, :func:`~cryoclass.engine.em.noise_and_scale`), one
:func:`~cryoclass.engine.passes.hard_pass` of the particles into K-class statistics and the
half-set FSC-regularised Wiener solve :func:`~cryoclass.engine.reconstruct.reconstruct`.

Maps: ``class_NN.mrc`` is the FSC-weighted (Wiener) full map times the solvent mask — what the
classification calls a class volume, at full resolution; ``class_NN_half_A/B.mrc`` are the
unmasked half-maps the FSC was computed from (lightly Tikhonov-regularised, not FSC-filtered).

Example
-------
>>> from cryoclass import sim
>>> from cryoclass.followup import reconstruct_classes
>>> ds = sim.simulate(n_particles=2000, box=48, pixel_size_A=3.0, snr=0.5,
...                   states=("closed", "open"))                       # doctest: +SKIP
>>> hr = reconstruct_classes(ds.particles, ds.labels)                  # doctest: +SKIP
>>> hr.summary()                                                       # doctest: +SKIP
>>> hr.write("hetero_out")                                             # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..backend import get_device_module, to_numpy
from ..core.fsc import fsc_batched, resolution_at
from ..core.masks import auto_solvent_mask, check_mask, resample_mask, spherical_mask
from ..core.symmetry import symmetry_operators
from ..engine.em import noise_and_scale
from ..engine.passes import consensus_pass, hard_pass, power_pass, stats_pass
from ..engine.problem import Problem, build_problem
from ..engine.reconstruct import ClassStats, reconstruct
from ..errors import ParameterError
from .sources import resolve_labels

__all__ = ["HeteroReconstruction", "reconstruct_classes"]

Progress = Callable[[str, int, int], None]


@dataclass
class HeteroReconstruction:
    """Per-class reconstructions at the full box (density units, NumPy arrays).

    Attributes
    ----------
    volumes : (K, D, D, D) float32
        FSC-weighted class maps, multiplied by ``mask`` (zeros for an empty class).
    half_maps : (2, K, D, D, D) float32
        Unmasked half-maps (half-set A = 0, B = 1).
    mask : (D, D, D) float32
        Solvent mask used for the masked FSC and the full maps.
    consensus : (D, D, D) float32
        FSC-weighted map of all assigned particles.
    fsc_masked, fsc_unmasked : (K, S) float64
        Half-map FSC per class, with and without the mask; NaN for an empty class.
    freq_invA : (S,) float64
        Shell frequencies (1/Å), DC to Nyquist.
    sizes : (K,) int64
        Particles per class.
    labels : (N,) int64
        0-based class of every particle (−1: not used).
    particles : Particles
    scale : (N,) float32
        Per-particle scale α used (NaN for unassigned particles).
    pixel_size_A : float
    symmetry : str
    """

    volumes: np.ndarray
    half_maps: np.ndarray
    mask: np.ndarray
    consensus: np.ndarray
    fsc_masked: np.ndarray
    fsc_unmasked: np.ndarray
    freq_invA: np.ndarray
    sizes: np.ndarray
    labels: np.ndarray
    particles: Any
    scale: np.ndarray
    pixel_size_A: float
    symmetry: str = "C1"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def hard(self) -> np.ndarray:
        """Alias of ``labels`` (so a HeteroReconstruction can feed :func:`regroup`)."""
        return self.labels

    @property
    def solvent_mask(self) -> np.ndarray:
        return self.mask

    def resolution_A(self, masked: bool = True, threshold: float = 0.143) -> np.ndarray:
        """(K,) resolution (Å) where each class's half-map FSC crosses ``threshold``."""
        curves = self.fsc_masked if masked else self.fsc_unmasked
        return np.array(
            [
                resolution_at(self.freq_invA, c, threshold) if n else np.nan
                for c, n in zip(curves, self.sizes)
            ]
        )

    def summary(self) -> pd.DataFrame:
        """Per class: size, fraction, masked and unmasked FSC = 0.143 resolution (Å)."""
        n = max(int(self.sizes.sum()), 1)
        return pd.DataFrame(
            {
                "class": np.arange(self.n_classes),
                "size": self.sizes,
                "fraction": self.sizes / n,
                "res_masked_A": self.resolution_A(True),
                "res_unmasked_A": self.resolution_A(False),
            }
        )

    def fsc_table(self) -> pd.DataFrame:
        """FSC curves: ``freq_invA``, ``resolution_A`` and ``class_NN_masked`` /
        ``class_NN_unmasked`` columns."""
        with np.errstate(divide="ignore"):
            res = np.where(self.freq_invA > 0, 1.0 / self.freq_invA, np.inf)
        cols: dict[str, Any] = {"freq_invA": self.freq_invA, "resolution_A": res}
        for k in range(self.n_classes):
            cols[f"class_{k:02d}_masked"] = self.fsc_masked[k]
            cols[f"class_{k:02d}_unmasked"] = self.fsc_unmasked[k]
        return pd.DataFrame(cols)

    def write(self, outdir: str | os.PathLike, command: str = "") -> list[Path]:
        """Write ``class_NN.mrc``, ``class_NN_half_A.mrc``, ``class_NN_half_B.mrc`` (non-empty
        classes), ``mask.mrc``, ``consensus.mrc``, ``fsc.csv``, ``summary.csv`` and
        ``summary.yaml`` (version, command, box, pixel size, per-class table)."""
        import yaml

        from .. import __version__
        from ..io.mrc import atomic_path, write_mrc

        d = Path(outdir)
        d.mkdir(parents=True, exist_ok=True)
        apix, files = self.pixel_size_A, []
        for k in np.nonzero(self.sizes)[0]:
            for suffix, vol in (
                ("", self.volumes[k]),
                ("_half_A", self.half_maps[0, k]),
                ("_half_B", self.half_maps[1, k]),
            ):
                files.append(d / f"class_{k:02d}{suffix}.mrc")
                write_mrc(files[-1], vol, apix)
        for name, vol in (("mask", self.mask), ("consensus", self.consensus)):
            files.append(d / f"{name}.mrc")
            write_mrc(files[-1], vol, apix)
        table = self.summary()
        for name, df in (("fsc.csv", self.fsc_table()), ("summary.csv", table)):
            files.append(d / name)
            with atomic_path(files[-1]) as tmp:
                df.to_csv(tmp, index=False)
        doc = {
            "cryoclass_version": __version__,
            "job": "heterogeneous reconstruction only",
            "command": command,
            "box": int(self.volumes.shape[-1]),
            "pixel_size_A": float(apix),
            "symmetry": self.symmetry,
            "n_particles": int(self.sizes.sum()),
            **self.info,
            "classes": [
                {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                for row in table.to_dict("records")
            ],
        }
        files.append(d / "summary.yaml")
        with atomic_path(files[-1]) as tmp, open(tmp, "w") as fh:
            yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True)
        return files


def _load_mask(mask: Any, box: int, apix: float) -> np.ndarray:
    from ..engine.job import _load_volume

    arr, m_apix, name = _load_volume(mask, "mask")
    return np.asarray(check_mask(arr, box, apix, name=name, mask_pixel_size_A=m_apix), np.float32)


def _noise_model(
    prob: Problem, xp: Any, mask0: Any, sym_ops: Any, scale_mode: str, chunk_size: int
) -> tuple[Any, Any, Any]:
    """σ²(ν), α and the consensus statistics' reconstruction, as in the engine's consensus phase:
    start from the data power, reconstruct all particles, fit noise + scales to the residuals,
    reconstruct again."""
    g = prob.geom
    S = g.n_shells
    counts = np.bincount(g.shell, weights=g.weight, minlength=S)
    power = power_pass(prob, chunk_size)
    sig2 = np.maximum(power / (prob.n * np.maximum(counts, 1)), 1e-30)
    sig2[0] = sig2[1]
    scale_in = to_numpy(prob.scale_input).astype(np.float64)
    alpha = scale_in if scale_mode == "input" else np.ones(prob.n)

    def wsig(s2: np.ndarray) -> Any:
        return xp.asarray((g.weight / s2[g.shell]).astype(np.float32))

    stats = consensus_pass(prob, wsig(sig2), xp.asarray(alpha.astype(np.float32)), chunk_size)
    rec = reconstruct(stats, g, mask0, sym_ops=sym_ops)
    sxx, sxp, spp = stats_pass(prob, rec.volumes[0], chunk_size)
    sig2, alpha = noise_and_scale(sxx, sxp, spp, counts, scale_mode, scale_in, 0.2, 5.0)
    alpha_x = xp.asarray(np.asarray(alpha, np.float32))
    stats = consensus_pass(prob, wsig(sig2), alpha_x, chunk_size)
    rec = reconstruct(stats, g, mask0, tau2_prev=rec.tau2, sym_ops=sym_ops)
    return wsig(sig2), alpha_x, rec


def _class_groups(sizes: np.ndarray, bytes_per_class: float, max_memory_gb: float) -> list[Any]:
    """Non-empty classes split into groups whose statistics fit in ``max_memory_gb``."""
    per = max(1, int(max_memory_gb * 1e9 // max(4.0 * bytes_per_class, 1.0)))
    ks = np.nonzero(sizes)[0]
    return [ks[i : i + per] for i in range(0, len(ks), per)]


def reconstruct_classes(
    particles: Any,
    labels: Any = None,
    *,
    n_classes: int | None = None,
    mask: Any = None,
    symmetry: str = "C1",
    pad: int = 2,
    filter_res_A: float | None = None,
    per_particle_scale: str = "optimal",
    mask_threshold: float = 0.2,
    mask_dilate_A: float = 10.0,
    mask_soft_edge_A: float = 10.0,
    device: str = "cpu",
    chunk_size: int = 1024,
    max_memory_gb: float = 4.0,
    progress: Progress | None = None,
) -> HeteroReconstruction:
    """Reconstruct each class from its hard-assigned particles at the full box.

    Parameters
    ----------
    particles : Particles, ClassificationResult or LoadedResult
        Particles with poses and CTF; a result brings its own particles and hard classes.
    labels : None, str, path, array or result
        Class per particle (0-based; −1 = leave out). None: ``rlnClassNumber`` (star,
        1-based) or ``alignments3D/class`` (cs) of ``particles.original``, or the result's hard
        classes. A string names another column/field; a directory is a classification OUTDIR
        whose ``particles.star/.cs`` is row-aligned with ``particles``.
    n_classes : int, optional
        K (default ``max(labels) + 1``); classes without particles give empty maps.
    mask : path or (array, pixel_size_A), optional
        Solvent mask at the particles' box and pixel size. Default: automatic from the consensus
        (threshold ``mask_threshold``·max of the 15 Å low-passed map, dilated ``mask_dilate_A``,
        cosine edge ``mask_soft_edge_A``).
    symmetry : str
        Point group enforced on every map (C1, Cn, Dn, T, O, I).
    pad : int
        Fourier padding of the reconstruction grid.
    filter_res_A : float, optional
        Reconstruct at a coarser resolution (smaller box); default Nyquist, ``2·pixel_size_A``
        (the full box; an odd box ``D`` gives maps of the engine's even box ``D − 1``).
    per_particle_scale : {'optimal', 'input', 'none'}
        Scales α fitted against the consensus, taken from the input, or 1.
    device : {'cpu', 'gpu'}
    chunk_size : int
        Particles per kernel call.
    max_memory_gb : float
        Budget for the class statistics; classes are accumulated in groups that fit.
    progress : callable, optional
        ``progress(phase, done, total)`` with phase 'preprocess', 'consensus' or 'classes'.

    Returns
    -------
    HeteroReconstruction

    Raises
    ------
    ParameterError
        Bad labels, ``n_classes``, ``filter_res_A``, ``per_particle_scale`` or no class with
        particles.
    InputFileError
        A mask of the wrong box / pixel size, or missing class columns.
    """
    if hasattr(particles, "particles") and hasattr(particles, "hard"):
        labels = particles if labels is None else labels
        particles = particles.particles
    N, D, apix = len(particles), int(particles.box), float(particles.pixel_size_A)
    lab = resolve_labels(particles, labels, N)
    K = int(lab.max()) + 1 if n_classes is None else int(n_classes)
    if K < 1:
        raise ParameterError("labels", "no particle has a class (all labels are −1)")
    if lab.max() >= K:
        raise ParameterError("n_classes", f"{K}, but the labels go up to class {int(lab.max())}")
    if per_particle_scale not in ("optimal", "input", "none"):
        raise ParameterError("per_particle_scale", "must be 'optimal', 'input' or 'none'")
    f_res = 2.0 * apix if filter_res_A is None else float(filter_res_A)
    if not f_res >= 2.0 * apix * (1 - 1e-6):
        raise ParameterError(
            "filter_res_A", f"{f_res:g} Å is beyond Nyquist ({2 * apix:g} Å) of the particles"
        )
    xp = get_device_module(device)
    use = np.nonzero(lab >= 0)[0]
    sizes = np.bincount(lab[use], minlength=K)
    ops = symmetry_operators(symmetry)
    sym_ops = ops if len(ops) > 1 else None
    mask_full = None if mask is None else _load_mask(mask, D, apix)
    pr = None if progress is None else (lambda d, n: progress("preprocess", d, n))
    prob = build_problem(particles.subset(use), f_res, pad, chunk_size, xp, progress=pr)
    Dc, apix_c, g = prob.box_c, prob.pixel_size_c_A, prob.geom
    sphere = spherical_mask(Dc, 0.42 * Dc, 0.06 * Dc, xp=xp)
    if mask_full is not None:
        m = mask_full if Dc == D else np.clip(to_numpy(resample_mask(mask_full, Dc)), 0, 1)
        mask0 = xp.asarray(np.asarray(m, np.float32))
    else:
        mask0 = sphere
    if progress is not None:
        progress("consensus", 0, 1)
    wsig, alpha, crec = _noise_model(prob, xp, mask0, sym_ops, per_particle_scale, chunk_size)
    if mask_full is None:
        auto = auto_solvent_mask(
            crec.volumes[0],
            apix_c,
            threshold=mask_threshold,
            lowpass_A=max(15.0, 2.5 * apix_c),
            dilate_A=mask_dilate_A,
            soft_edge_A=mask_soft_edge_A,
        )
        mask0 = (auto * sphere).astype(np.float32)
    dens = (Dc / D) ** 3
    S = g.n_shells
    vols = np.zeros((K,) + (Dc,) * 3, np.float32)
    halves = np.zeros((2, K) + (Dc,) * 3, np.float32)
    fsc_m = np.full((K, S), np.nan)
    fsc_u = np.full((K, S), np.nan)
    bytes_per_class = 2 * float(np.prod(g.grid_shape)) * 12
    groups = _class_groups(sizes, bytes_per_class, max_memory_gb)
    sub_lab = lab[use]
    for gi, grp in enumerate(groups):
        if progress is not None:
            progress("classes", gi, len(groups))
        remap = np.full(K, -1)
        remap[grp] = np.arange(len(grp))
        idx = np.nonzero(remap[sub_lab] >= 0)[0]
        stats = ClassStats.zeros(g, len(grp), xp)
        hard_pass(prob, idx, remap[sub_lab[idx]], stats, wsig, alpha, chunk_size)
        # one solve: half-maps lightly regularised (1 % of the mean weight). Wiener-filtering the
        # halves with their own FSC would suppress their high-frequency noise and let the
        # mask's leakage of low-frequency signal inflate the masked FSC there.
        rec = reconstruct(stats, g, mask0, sym_ops=sym_ops, keep_halves=True)
        hv = list(rec.halves or ())
        vols[grp] = to_numpy(rec.volumes) * dens
        for h in (0, 1):
            halves[h, grp] = to_numpy(hv[h]) * dens
        fsc_m[grp] = rec.fsc
        _, fu = fsc_batched(hv[0], hv[1], mask=None, pixel_size_A=apix_c)
        fsc_u[grp] = np.nan_to_num(to_numpy(fu)[:, :S], nan=0.0)
        fsc_u[grp, 0] = 1.0
        del stats, rec, hv
    if progress is not None:
        progress("classes", len(groups), len(groups))
    scale = np.full(N, np.nan, np.float32)
    scale[use] = to_numpy(alpha)
    return HeteroReconstruction(
        volumes=vols,
        half_maps=halves,
        mask=to_numpy(mask0).astype(np.float32),
        consensus=(to_numpy(crec.volumes[0]) * dens).astype(np.float32),
        fsc_masked=fsc_m,
        fsc_unmasked=fsc_u,
        freq_invA=prob.shell_frequencies_invA(),
        sizes=sizes.astype(np.int64),
        labels=lab,
        particles=particles,
        scale=scale,
        pixel_size_A=float(apix_c),
        symmetry=symmetry,
        info={"filter_res_A": f_res, "per_particle_scale": per_particle_scale, "pad": pad},
    )
