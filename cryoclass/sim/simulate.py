"""Simulated particle datasets with ground truth: poses, CTF, states, noise — no download.

Each particle shows one state of the pseudo-atomic protein (:mod:`cryoclass.sim.phantom`) in a
uniformly random orientation, shifted, modulated by its CTF and buried in white Gaussian noise.

**SNR** is defined over the whole dataset: ``snr = var(noiseless CTF-modulated images) / σ_n²``,
the variance taken over every pixel of every image of the full box (solvent included), and
``σ_n`` the standard deviation of the added white noise.

Example
-------
>>> from cryoclass.sim import simulate
>>> ds = simulate(n_particles=60, box=32, pixel_size_A=6.0, snr=0.1, seed=1)
>>> len(ds.particles), ds.volumes.shape, ds.state_names
(60, (3, 32, 32, 32), ('closed', 'open', 'ligand'))
>>> sorted(set(ds.labels.tolist()))
[0, 1, 2]
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import ParameterError
from .imaging import CtfParams, apply_ctf, project_atoms
from .phantom import PseudoAtoms, _check_states, changed_mass_fractions, make_volumes

__all__ = ["SimulatedDataset", "simulate"]

_NOISE_CHUNK = 1024  # noise is drawn per fixed chunk so results do not depend on chunk_size/n_jobs


@dataclass
class SimulatedDataset:
    """A simulated dataset and its ground truth.

    Attributes
    ----------
    particles : cryoclass.io.particles.Particles
        In-memory particles (images ``(N, D, D)`` float32 and canonical metadata).
    labels : (N,) int64
        True state index of each particle (0-based, into ``state_names``).
    volumes : (K, D, D, D) float32
        Ground-truth maps ``[z, y, x]`` in the units of the images (projection-slice consistent).
    state_names : tuple of str
    pixel_size_A : float
    noise_sigma : float
        Standard deviation of the added noise (0 when noiseless).
    snr : float or None
        Requested SNR (``None``: noiseless); see the module docstring for the definition.
    signal_variance : float
        Measured variance of the noiseless CTF-modulated images over the whole box.
    mass_fractions : dict of str to float
        Per state, the fraction of its mass that differs from ``closed``.
    atoms : list of PseudoAtoms
        The pseudo-atoms of each state (Å).
    parameters : dict
        Every parameter of :func:`simulate` (what :meth:`write` saves in ``simulation.yaml``).
    """

    particles: Any
    labels: np.ndarray
    volumes: np.ndarray
    state_names: tuple[str, ...]
    pixel_size_A: float
    noise_sigma: float
    snr: float | None
    signal_variance: float
    mass_fractions: dict[str, float]
    atoms: list[PseudoAtoms] = field(repr=False)
    parameters: dict[str, Any] = field(default_factory=dict)

    def write(self, outdir: str | os.PathLike) -> dict[str, Path]:
        """Write the dataset and its ground truth to ``outdir`` (created if needed).

        Files: ``particles.mrcs`` + ``particles.star`` (RELION 3.1), ``particles.cs``
        (CryoSPARC, ``blob/path`` relative to ``outdir``), ``truth_labels.csv`` (uid, label,
        state; 0-based labels), ``truth_class_01.mrc`` … (1-based, like RELION's class files;
        ``truth_class_{k+1:02d}.mrc`` is state ``k``) and ``simulation.yaml``.

        Returns
        -------
        dict of str to Path
            File name → path of everything written.
        """
        from .writing import write_dataset

        return write_dataset(self, Path(outdir))


def _check_params(
    n_particles: int,
    box: int,
    pixel_size_A: float,
    snr: float | None,
    defocus_range_A: Sequence[float],
    astigmatism_A: float,
    shift_sigma_A: float,
) -> None:
    if int(n_particles) < 1:
        raise ParameterError("n_particles", f"must be at least 1, got {n_particles}")
    if int(box) < 8:
        raise ParameterError("box", f"must be at least 8 pixels, got {box}")
    if not pixel_size_A > 0:
        raise ParameterError("pixel_size_A", f"must be positive, got {pixel_size_A}")
    if snr is not None and not (snr > 0):
        raise ParameterError("snr", f"must be positive (or None for noiseless), got {snr}")
    lo, hi = (float(v) for v in defocus_range_A)
    if not 0 < lo <= hi:
        raise ParameterError("defocus_range_A", f"need 0 < low <= high, got ({lo}, {hi})")
    if astigmatism_A < 0 or astigmatism_A >= 2 * lo:
        raise ParameterError("astigmatism_A", f"must be in [0, 2·min defocus), got {astigmatism_A}")
    if shift_sigma_A < 0:
        raise ParameterError("shift_sigma_A", f"must be >= 0, got {shift_sigma_A}")


def _populations(populations: Sequence[float] | None, k: int) -> np.ndarray:
    if populations is None:
        return np.full(k, 1.0 / k)
    p = np.asarray(populations, dtype=np.float64)
    if p.shape != (k,) or np.any(p < 0) or not np.isfinite(p).all() or p.sum() <= 0:
        raise ParameterError(
            "populations", f"need {k} non-negative numbers (one per state), got {list(p)}"
        )
    return p / p.sum()


def _exact_labels(rng: np.random.Generator, n: int, p: np.ndarray) -> np.ndarray:
    """Labels with counts ``round(n·p)`` (largest remainder), in random order."""
    raw = n * p
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(len(p)), counts))


def _unique_uids(rng: np.random.Generator, n: int) -> np.ndarray:
    while True:
        uid = rng.integers(1, 2**62, size=n, dtype=np.int64)
        if np.unique(uid).size == n:
            return uid


def _draw_metadata(
    seed: int,
    n: int,
    pops: np.ndarray,
    defocus_range_A: Sequence[float],
    astigmatism_A: float,
    shift_sigma_A: float,
) -> dict[str, np.ndarray]:
    """Labels, poses, shifts, CTF, half-sets and uids, each from its own seeded stream."""
    stream = lambda i: np.random.default_rng(np.random.SeedSequence([seed, i]))  # noqa: E731
    lo, hi = (float(v) for v in defocus_range_A)
    mean_df = stream(3).uniform(lo, hi, size=n)
    return {
        "labels": _exact_labels(stream(1), n, pops),
        "rotations": Rotation.random(n, random_state=stream(2)).as_matrix(),
        "defocus_u_A": mean_df + 0.5 * astigmatism_A,
        "defocus_v_A": mean_df - 0.5 * astigmatism_A,
        "defocus_angle_deg": stream(4).uniform(0.0, 180.0, size=n),
        "shifts_A": stream(5).normal(0.0, shift_sigma_A, size=(n, 2)),
        "half_set": stream(6).permutation(np.arange(n) % 2),
        "uid": _unique_uids(stream(7), n),
    }


def _render(
    atoms: list[PseudoAtoms],
    md: dict[str, np.ndarray],
    ctf: CtfParams,
    box: int,
    pixel_size_A: float,
    workers: int,
    chunk_size: int,
    progress: bool,
) -> tuple[np.ndarray, float]:
    """Noiseless CTF-modulated images and their variance over all pixels."""
    from tqdm.auto import tqdm

    n = len(md["labels"])
    images = np.empty((n, box, box), dtype=np.float32)
    s1 = s2 = 0.0
    with tqdm(total=n, disable=not progress, unit="particle", desc="simulate") as bar:
        for a in range(0, n, chunk_size):
            sl = slice(a, min(a + chunk_size, n))
            block = np.empty((sl.stop - a, box, box), dtype=np.float64)
            project_atoms(
                atoms, md["rotations"][sl], md["shifts_A"][sl], md["labels"][sl], box,
                pixel_size_A, out=block,
            )  # fmt: skip
            apply_ctf(block, ctf[sl], pixel_size_A, workers=workers)
            s1 += float(block.sum())
            s2 += float(np.square(block).sum())
            images[sl] = block
            bar.update(sl.stop - a)
    npix = float(n) * box * box
    return images, s2 / npix - (s1 / npix) ** 2


def _add_noise(images: np.ndarray, sigma: float, seed: int) -> None:
    for j, a in enumerate(range(0, len(images), _NOISE_CHUNK)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 8, j]))
        block = images[a : a + _NOISE_CHUNK]
        block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(sigma)


def simulate(
    n_particles: int = 5000,
    box: int = 128,
    pixel_size_A: float = 1.5,
    snr: float | None = 0.05,
    states: Sequence[str] = ("closed", "open", "ligand"),
    populations: Sequence[float] | None = None,
    defocus_range_A: tuple[float, float] = (10000.0, 25000.0),
    astigmatism_A: float = 500.0,
    shift_sigma_A: float = 3.0,
    seed: int = 0,
    n_jobs: int | None = None,
    *,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    progress: bool = False,
    chunk_size: int = 512,
) -> SimulatedDataset:
    """Simulate particles of a protein in several states, with ground truth.

    Parameters
    ----------
    n_particles : int
        Number of particles ``N``.
    box : int
        Box size ``D`` in pixels.
    pixel_size_A : float
        Pixel size in Å.
    snr : float or None
        Dataset SNR ``var(noiseless CTF-modulated images over the whole box) / σ_n²``;
        ``None`` for noiseless images.
    states : sequence of str
        Among ``closed``, ``open`` (25° hinge motion), ``ligand`` (+3.5 % mass), ``missing``
        (−5 % mass); see :mod:`cryoclass.sim.phantom`.
    populations : sequence of float, optional
        Relative population of each state (normalised; default equal). Counts are exact
        (``round(N·p)``), the order random.
    defocus_range_A : (float, float)
        Mean defocus drawn uniformly in this range (Å, underfocus positive).
    astigmatism_A : float
        ``defocus_u − defocus_v`` (Å); the astigmatism angle is uniform in [0°, 180°).
    shift_sigma_A : float
        Standard deviation of the RELION origins (Å, per axis).
    seed : int
        Same seed → identical dataset (whatever ``n_jobs`` and ``chunk_size``).
    n_jobs : int, optional
        Threads for splatting and FFTs (default: all).
    voltage_kV, cs_mm, amplitude_contrast : float
        Microscope (default 300 kV, 2.7 mm, 0.1).
    progress : bool
        Show a tqdm progress bar.
    chunk_size : int
        Particles rendered per step.

    Returns
    -------
    SimulatedDataset
        Rotations are uniform (``scipy`` ``Rotation.random``) and used as RELION matrices ``A``;
        half-sets are balanced and random; uids are unique random int64.
    """
    states = _check_states(tuple(states))
    _check_params(
        n_particles, box, pixel_size_A, snr, defocus_range_A, astigmatism_A, shift_sigma_A
    )
    if n_jobs is not None and int(n_jobs) < 1:
        raise ParameterError("n_jobs", f"must be at least 1, got {n_jobs}")
    n, box, seed = int(n_particles), int(box), int(seed)
    params = dict(
        n_particles=n, box=box, pixel_size_A=float(pixel_size_A), snr=snr, states=list(states),
        populations=None if populations is None else [float(p) for p in populations],
        defocus_range_A=[float(v) for v in defocus_range_A], astigmatism_A=float(astigmatism_A),
        shift_sigma_A=float(shift_sigma_A), seed=seed, voltage_kV=float(voltage_kV),
        cs_mm=float(cs_mm), amplitude_contrast=float(amplitude_contrast),
    )  # fmt: skip
    pops = _populations(populations, len(states))
    t0 = time.perf_counter()
    volumes, atoms = make_volumes(box, pixel_size_A, states, seed)
    md = _draw_metadata(seed, n, pops, defocus_range_A, astigmatism_A, shift_sigma_A)
    ctf = CtfParams(
        md["defocus_u_A"], md["defocus_v_A"], md["defocus_angle_deg"], voltage_kV, cs_mm,
        amplitude_contrast,
    )  # fmt: skip
    workers = int(n_jobs) if n_jobs else (os.cpu_count() or 1)
    old_threads = numba.get_num_threads()
    numba.set_num_threads(min(workers, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    try:
        images, var = _render(atoms, md, ctf, box, pixel_size_A, workers, chunk_size, progress)
    finally:
        numba.set_num_threads(old_threads)
    sigma = 0.0 if snr is None else float(np.sqrt(var / snr))
    if sigma > 0:
        _add_noise(images, sigma, seed)
    params["elapsed_s"] = round(time.perf_counter() - t0, 3)
    particles = _make_particles(images, md, params)
    return SimulatedDataset(
        particles=particles,
        labels=md["labels"].astype(np.int64),
        volumes=volumes,
        state_names=states,
        pixel_size_A=float(pixel_size_A),
        noise_sigma=sigma,
        snr=snr,
        signal_variance=float(var),
        mass_fractions=changed_mass_fractions(states, seed),
        atoms=atoms,
        parameters=params,
    )


def _make_particles(images: np.ndarray, md: dict[str, np.ndarray], params: dict[str, Any]) -> Any:
    from ..io.particles import Particles

    meta = {
        "rotations": md["rotations"],
        "shift_x_A": md["shifts_A"][:, 0],
        "shift_y_A": md["shifts_A"][:, 1],
        "defocus_u_A": md["defocus_u_A"],
        "defocus_v_A": md["defocus_v_A"],
        "defocus_angle_deg": md["defocus_angle_deg"],
        "voltage_kV": params["voltage_kV"],
        "cs_mm": params["cs_mm"],
        "amplitude_contrast": params["amplitude_contrast"],
        "phase_shift_deg": 0.0,
        "bfactor_A2": 0.0,
        "pixel_size_A": params["pixel_size_A"],
        "optics_group": 1,
        "half_set": md["half_set"],
        "scale": 1.0,
        "uid": md["uid"],
    }
    return Particles.from_arrays(images, meta)
