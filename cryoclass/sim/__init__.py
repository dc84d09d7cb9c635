"""Simulated cryo-EM particles with ground truth (no download needed).

A deterministic pseudo-atomic protein in several states (:mod:`~cryoclass.sim.phantom`), exact
analytic projections with CTF and noise (:mod:`~cryoclass.sim.imaging`), datasets written as
RELION ``.star``/``.mrcs`` and CryoSPARC ``.cs`` with their truth (:func:`simulate`).

Example
-------
>>> from cryoclass.sim import simulate
>>> ds = simulate(n_particles=30, box=32, pixel_size_A=6.0, snr=0.05,
...               states=("closed", "ligand"), seed=3)
>>> ds.state_names, round(ds.mass_fractions["ligand"], 3)
(('closed', 'ligand'), 0.036)
"""

from __future__ import annotations

from .imaging import apply_ctf, project_atoms
from .phantom import STATES, PseudoAtoms, changed_mass_fractions, make_atoms, make_volumes, voxelise
from .simulate import SimulatedDataset, simulate

__all__ = [
    "STATES",
    "PseudoAtoms",
    "SimulatedDataset",
    "apply_ctf",
    "changed_mass_fractions",
    "make_atoms",
    "make_volumes",
    "project_atoms",
    "simulate",
    "voxelise",
]


def __getattr__(name: str):  # oracle imports the engine: load it lazily
    if name in ("oracle_labels", "oracle_loglik", "truth_grid"):
        from . import oracle

        return getattr(oracle, name)
    raise AttributeError(name)
