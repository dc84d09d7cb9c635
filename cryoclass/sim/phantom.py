"""A deterministic pseudo-atomic protein with conformational and compositional states.

The protein is built once per seed in normalised units (maximum diameter 1) and scaled to
``0.65 · box · pixel_size_A`` when rendered, so the same molecule appears at every sampling.
Its pseudo-atoms (about one per residue, 3.8 Å apart at box 128 / 1.5 Å) are self-avoiding random
walks confined to ellipsoids:

* ``lobe_a``, ``lobe_b`` — the two lobes of the body;
* ``hinge`` — a domain hinged on ``lobe_b``; the pocket between it and ``lobe_a`` is left empty;
* ``subunit`` — a small peripheral subunit (≈ 5 % of the mass);
* ``ligand`` — a compact cluster (≈ 3.5 % of the mass of the liganded state) filling the pocket.

States: ``closed`` (reference: body + hinge + subunit), ``open`` (the hinge domain rotated 25°
about a hinge axis: a conformational change), ``ligand`` (closed + ligand: a compositional change)
and ``missing`` (closed without the subunit).

Example
-------
>>> from cryoclass.sim.phantom import make_volumes
>>> vols, atoms = make_volumes(32, 6.0, states=("closed", "ligand"))
>>> vols.shape, vols.dtype.name
((2, 32, 32, 32), 'float32')
>>> 0.03 < atoms[1].mass_fraction("ligand") < 0.04
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import ParameterError
from ._kernels import splat_volume

__all__ = [
    "STATES",
    "PseudoAtoms",
    "changed_mass_fractions",
    "make_atoms",
    "make_volumes",
    "voxelise",
]

STATES = ("closed", "open", "ligand", "missing")

# Blueprint in normalised units: name -> (centre, semi-axes, number of pseudo-atoms).
_DOMAINS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], int]] = {
    "lobe_a": ((-0.20, -0.06, 0.00), (0.20, 0.17, 0.17), 830),
    "lobe_b": ((0.14, -0.05, 0.00), (0.19, 0.17, 0.16), 760),
    "hinge": ((0.00, 0.185, 0.00), (0.24, 0.11, 0.14), 560),
    "subunit": ((0.30, -0.23, 0.13), (0.09, 0.09, 0.09), 120),
}
_POCKET = ((-0.10, 0.10, 0.00), 0.085)  # centre, radius (carved out of the protein)
_N_LIGAND = 84
_HINGE_POINT = (0.20, 0.11, 0.0)
_HINGE_AXIS = (0.0, 0.0, 1.0)
_OPEN_ANGLE_DEG = -25.0  # negative: the hinge domain swings away from lobe_a
_STEP = 0.030  # walk step (normalised); 3.8 Å at a diameter of 125 Å
_MIN_DIST = 0.72 * _STEP  # self-avoidance distance
_SIGMA_REL = 0.016  # Gaussian width of an atom (normalised); 2 Å at a diameter of 125 Å
_DIAMETER_FRACTION = 0.65


@dataclass(frozen=True)
class PseudoAtoms:
    """Gaussian pseudo-atoms of one state.

    Attributes
    ----------
    positions_A : (M, 3) float64
        ``(x, y, z)`` positions in Å relative to the box centre.
    weights : (M,) float64
        Peak density of each Gaussian (arbitrary units; the mass is proportional to the weight).
    sigmas_A : (M,) float64
        Gaussian standard deviations in Å.
    domain : (M,) int64
        Index of each atom's domain in ``domain_names``.
    domain_names : tuple of str
        Names of the domains.
    """

    positions_A: np.ndarray
    weights: np.ndarray
    sigmas_A: np.ndarray
    domain: np.ndarray
    domain_names: tuple[str, ...]

    @property
    def n_atoms(self) -> int:
        """Number of pseudo-atoms."""
        return int(self.weights.size)

    @property
    def masses(self) -> np.ndarray:
        """(M,) integrated mass of each atom, ``w·(2π)^{3/2}σ³`` (Å³ × weight units)."""
        return self.weights * (2.0 * np.pi) ** 1.5 * self.sigmas_A**3

    def mass_fraction(self, domain: str) -> float:
        """Fraction of this state's total mass in ``domain`` (0 when absent)."""
        if domain not in self.domain_names:
            return 0.0
        m = self.masses
        sel = self.domain == self.domain_names.index(domain)
        return float(m[sel].sum() / m.sum())


def _inside(pts: np.ndarray, centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    pocket_c, pocket_r = np.asarray(_POCKET[0]), _POCKET[1]
    in_ell = (((pts - centre) / semi) ** 2).sum(-1) <= 1.0
    return in_ell & (((pts - pocket_c) ** 2).sum(-1) > pocket_r**2)


def _confined_walk(
    rng: np.random.Generator,
    n: int,
    inside: object,
    start: np.ndarray,
    others: np.ndarray,
) -> np.ndarray:
    """Self-avoiding walk of ``n`` points with steps ``_STEP`` and ``inside(points)`` true.

    When the walk is stuck it restarts from a random earlier point (a branched chain).
    """
    pts = np.empty((n, 3))
    pts[0] = start
    placed = np.concatenate([others, pts[:0]])
    cur, i, stuck = start, 1, 0
    while i < n:
        d = rng.normal(size=(24, 3))
        cand = cur + _STEP * d / np.linalg.norm(d, axis=1, keepdims=True)
        ok = inside(cand)  # type: ignore[operator]
        if ok.any():
            allp = np.concatenate([placed, pts[:i]])
            dmin = np.sqrt(((cand[ok, None, :] - allp[None]) ** 2).sum(-1)).min(1)
            good = cand[ok][dmin >= _MIN_DIST]
            if len(good):
                cur = pts[i] = good[rng.integers(len(good))]
                i, stuck = i + 1, 0
                continue
        stuck += 1
        if stuck > 2000:
            raise RuntimeError("pseudo-atom walk could not fill its domain")  # pragma: no cover
        cur = pts[rng.integers(i)]
    return pts


@lru_cache(maxsize=8)
def _normalised_model(seed: int) -> dict[str, np.ndarray]:
    """Domain name -> (n, 3) normalised coordinates, centred on the closed state's centre."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    out: dict[str, np.ndarray] = {}
    for name, (centre, semi, n) in _DOMAINS.items():
        c, s = np.asarray(centre), np.asarray(semi)
        others = np.concatenate(list(out.values())) if out else np.empty((0, 3))
        out[name] = _confined_walk(rng, n, lambda p, c=c, s=s: _inside(p, c, s), c, others)
    pc, pr = np.asarray(_POCKET[0]), _POCKET[1]
    in_pocket = lambda p: ((p - pc) ** 2).sum(-1) <= (0.85 * pr) ** 2  # noqa: E731
    out["ligand"] = _confined_walk(rng, _N_LIGAND, in_pocket, pc, np.empty((0, 3)))
    closed = np.concatenate([out[k] for k in _DOMAINS])
    com = closed.mean(0)
    extent = 2.0 * np.sqrt(((closed - com) ** 2).sum(-1)).max()
    return {k: (v - com) / extent for k, v in out.items()}


def _weights(model: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Per-atom weights, uniform in [0.8, 1.2] (residue masses vary)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA70]))
    return {k: rng.uniform(0.8, 1.2, len(v)) for k, v in model.items()}


def _hinge_rotation(pts: np.ndarray, angle_deg: float) -> np.ndarray:
    pivot = np.asarray(_HINGE_POINT)
    rot = Rotation.from_rotvec(np.deg2rad(angle_deg) * np.asarray(_HINGE_AXIS))
    return rot.apply(pts - pivot) + pivot


def _state_domains(state: str, model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    doms = {k: model[k] for k in _DOMAINS}
    if state == "open":
        doms["hinge"] = _hinge_rotation(model["hinge"], _OPEN_ANGLE_DEG)
    elif state == "ligand":
        doms["ligand"] = model["ligand"]
    elif state == "missing":
        del doms["subunit"]
    return doms


def _check_states(states: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    states = tuple(states)
    if not states:
        raise ParameterError("states", "give at least one state")
    bad = [s for s in states if s not in STATES]
    if bad:
        raise ParameterError("states", f"unknown state(s) {bad}; choose from {list(STATES)}")
    return states


def make_atoms(
    box: int,
    pixel_size_A: float,
    states: tuple[str, ...] = ("closed", "open", "ligand"),
    seed: int = 0,
) -> list[PseudoAtoms]:
    """Pseudo-atoms of each state, scaled to a diameter of 65 % of the box.

    Parameters
    ----------
    box : int
        Box size ``D`` in pixels.
    pixel_size_A : float
        Pixel size in Å.
    states : tuple of str
        States among ``closed``, ``open``, ``ligand``, ``missing``.
    seed : int
        Seed of the molecule (the same seed gives the same molecule at any sampling).

    Returns
    -------
    list of PseudoAtoms
        One per state, positions in Å from the box centre. Atom width
        ``σ = max(2 Å · D·apix / 192 Å, pixel_size_A)`` (at least one pixel).
    """
    states = _check_states(states)
    if int(box) < 8:
        raise ParameterError("box", f"must be at least 8 pixels, got {box}")
    if not pixel_size_A > 0:
        raise ParameterError("pixel_size_A", f"must be positive, got {pixel_size_A}")
    diameter = _DIAMETER_FRACTION * box * pixel_size_A
    sigma = max(_SIGMA_REL * diameter, pixel_size_A)
    model = _normalised_model(int(seed))
    base_w = _weights(model, int(seed))
    out = []
    for st in states:
        doms = _state_domains(st, model)
        names = tuple(doms)
        pos = np.concatenate(list(doms.values())) * diameter
        w = np.concatenate([base_w[k] for k in names])
        dom = np.concatenate([np.full(len(doms[k]), i) for i, k in enumerate(names)])
        out.append(PseudoAtoms(pos, w, np.full(len(w), sigma), dom.astype(np.int64), names))
    return out


def voxelise(
    atoms: PseudoAtoms, box: int, pixel_size_A: float, truncate: float = 4.0
) -> np.ndarray:
    """Voxel map ``(D, D, D)`` float32 ``[z, y, x]`` of ``Σ w·exp(−|r − p|²/2σ²)``.

    The origin is voxel ``D // 2``; each Gaussian is truncated to a cube of ``±truncate·σ``.
    """
    vol = np.zeros((box, box, box), dtype=np.float64)
    splat_volume(
        atoms.positions_A / pixel_size_A,
        atoms.weights,
        atoms.sigmas_A / pixel_size_A,
        vol,
        truncate,
    )
    return vol.astype(np.float32)


def make_volumes(
    box: int,
    pixel_size_A: float,
    states: tuple[str, ...] = ("closed", "open", "ligand"),
    seed: int = 0,
) -> tuple[np.ndarray, list[PseudoAtoms]]:
    """Ground-truth volumes of the pseudo-atomic protein in each state.

    Parameters
    ----------
    box : int
        Box size ``D`` (pixels).
    pixel_size_A : float
        Pixel size (Å).
    states : tuple of str
        Any of ``closed`` (reference), ``open`` (hinge domain rotated 25°), ``ligand``
        (closed + a ligand of ≈ 3.5 % of the mass) and ``missing`` (closed minus a subunit of
        ≈ 5 % of the mass).
    seed : int
        Seed of the molecule.

    Returns
    -------
    volumes : (K, D, D, D) float32
        Maps ``[z, y, x]``, origin at voxel ``D // 2``.
    atoms : list of PseudoAtoms
        The pseudo-atoms of each state (Å).
    """
    atoms = make_atoms(box, pixel_size_A, states, seed)
    vols = np.stack([voxelise(a, box, pixel_size_A) for a in atoms])
    return vols, atoms


def changed_mass_fractions(states: tuple[str, ...], seed: int = 0) -> dict[str, float]:
    """Fraction of each state's mass that differs from ``closed``.

    ``open``: the moved hinge domain; ``ligand``: the ligand; ``missing``: the removed subunit
    (as a fraction of the closed mass); ``closed``: 0. All atoms have the same width, so mass is
    proportional to the summed weights.
    """
    w = {k: v.sum() for k, v in _weights(_normalised_model(int(seed)), int(seed)).items()}
    closed = sum(w[k] for k in _DOMAINS)
    changed = {
        "closed": 0.0,
        "open": w["hinge"] / closed,
        "ligand": w["ligand"] / (closed + w["ligand"]),
        "missing": w["subunit"] / closed,
    }
    return {s: float(changed[s]) for s in _check_states(states)}
