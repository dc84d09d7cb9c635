"""Regroup many classes into a few superclasses by real-space voxel correlation.

With 50–100 classes a classification over-splits the data on purpose; this groups the classes
whose maps look alike (CryoSPARC's follow-up for large K). The similarity of classes ``a`` and
``b`` is the Pearson correlation of their voxels inside the solvent mask (mask-weighted); the
clustering is average-linkage hierarchical on the distance ``1 − corr`` (default), or spectral
on a locally scaled affinity ``exp(−d² / (σ_a σ_b))`` (σ = distance to the 7th neighbour) with
scikit-learn when installed and a NumPy eigen-decomposition otherwise (both assign labels by
column-pivoted QR, so they agree).

Classes smaller than ``min_class_size`` particles, classes in ``exclude`` and empty (all-zero)
maps take no part and get superclass −1, as do their particles. Before correlating, the maps
are low-passed to the coarsest FSC = 0.5 resolution of the classes taking part (when known):
FSC-filtered maps of small classes are smoother than those of large ones, and comparing them
unfiltered groups classes by resolution rather than by structure. Superclasses are numbered by
decreasing particle count. Each superclass map is the class maps' average weighted by their
particle counts.

Example
-------
>>> from cryoclass.followup import regroup
>>> rg = regroup("classify_K50", 3, min_class_size=20, exclude=[7])   # doctest: +SKIP
>>> rg.class_table()                                                  # doctest: +SKIP
>>> rg.dendrogram["ivl"]                                              # doctest: +SKIP
>>> rg.write("regroup_out")                                           # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ParameterError

__all__ = ["Regrouping", "regroup", "class_correlation", "STAR_COLUMN", "CS_FIELD"]

#: Per-particle superclass (0-based, −1 = excluded) in written ``.star`` / ``.cs`` files.
STAR_COLUMN = "cryoclassSuperclass"
CS_FIELD = "cryoclass/superclass"


@dataclass
class Regrouping:
    """Superclasses of K classes.

    Attributes
    ----------
    superclass_of_class : (K,) int64
        Superclass of each class (−1: excluded or too small).
    labels : (N,) int64 or None
        Superclass of each particle (via its hard class); None without particle assignments.
    class_labels : (N,) int64 or None
        Hard class of each particle.
    volumes : (S, D, D, D) float32
        Particle-count-weighted mean map of each superclass.
    correlation : (K, K) float64
        Masked real-space voxel correlation of every pair of classes.
    active : (n,) int64
        The classes that were clustered; leaf ``i`` of ``linkage`` is class ``active[i]``.
    linkage : (n − 1, 4) float64
        ``scipy.cluster.hierarchy.linkage`` (average) of ``1 − correlation`` among ``active``.
    dendrogram : dict
        ``scipy.cluster.hierarchy.dendrogram(linkage, no_plot=True, labels=active)``: ``icoord``,
        ``dcoord``, ``ivl``, ``leaves``, ``color_list`` — the plot data.
    sizes : (K,) float64
        Particles per class (the weights).
    mask : (D, D, D) float32
    pixel_size_A : float
    method : str
    particles : Particles or None
    reasons : dict of int to str
        Why each left-out class was left out (excluded, too small, empty map).
    lowpass_A : float or None
        The low-pass (Å) applied before correlating.
    """

    superclass_of_class: np.ndarray
    labels: np.ndarray | None
    class_labels: np.ndarray | None
    volumes: np.ndarray
    correlation: np.ndarray
    active: np.ndarray
    linkage: np.ndarray
    dendrogram: dict[str, Any]
    sizes: np.ndarray
    mask: np.ndarray
    pixel_size_A: float
    method: str
    particles: Any = None
    reasons: dict[int, str] = field(default_factory=dict)
    lowpass_A: float | None = None

    @property
    def n_superclasses(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def hard(self) -> np.ndarray | None:
        """Alias of ``labels`` (per-particle superclass)."""
        return self.labels

    def superclass_sizes(self) -> np.ndarray:
        """(S,) particles per superclass."""
        s = self.superclass_of_class
        return np.array([self.sizes[s == j].sum() for j in range(self.n_superclasses)])

    def class_table(self) -> pd.DataFrame:
        """Per class: size, superclass (−1 = left out) and why it was left out."""
        K = len(self.superclass_of_class)
        return pd.DataFrame(
            {
                "class": np.arange(K),
                "size": self.sizes,
                "superclass": self.superclass_of_class,
                "left_out": [self.reasons.get(k, "") for k in range(K)],
            }
        )

    @property
    def assignments(self) -> pd.DataFrame:
        """One row per particle: uid, class, superclass."""
        if self.labels is None or self.class_labels is None:
            raise ParameterError("regroup", "no particle assignments were given")
        uid = (
            self.particles.meta["uid"].to_numpy()
            if self.particles is not None
            else np.arange(len(self.labels))
        )
        return pd.DataFrame({"uid": uid, "class": self.class_labels, "superclass": self.labels})

    def linkage_table(self) -> pd.DataFrame:
        """The linkage as a table; node ids < n are leaves (``*_class`` gives their class)."""
        n = len(self.active)
        Z = self.linkage
        leaf = lambda i: int(self.active[int(i)]) if i < n else -1  # noqa: E731
        return pd.DataFrame(
            {
                "node": np.arange(n, n + len(Z)),
                "left": Z[:, 0].astype(np.int64),
                "right": Z[:, 1].astype(np.int64),
                "distance": Z[:, 2],
                "n_classes": Z[:, 3].astype(np.int64),
                "left_class": [leaf(i) for i in Z[:, 0]],
                "right_class": [leaf(i) for i in Z[:, 1]],
            }
        )

    def write(
        self,
        outdir: str | os.PathLike,
        formats: tuple[str, ...] = ("star", "cs"),
        command: str = "",
    ) -> list[Path]:
        """Write ``superclass_NN.mrc`` and, with particles, ``superclass_NN.star/.cs`` and
        ``particles.star/.cs`` (column ``cryoclassSuperclass`` / field ``cryoclass/superclass``,
        0-based, −1 = left out), plus ``correlation.csv``, ``linkage.csv``,
        ``dendrogram.json``, ``classes.csv``, ``assignments.csv`` and ``summary.yaml``."""
        from ._superclasses_io import write_regrouping

        return write_regrouping(self, Path(outdir), formats, command)


def class_correlation(volumes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask-weighted Pearson correlation of every pair of volumes.

    Parameters
    ----------
    volumes : (K, D, D, D) real
    mask : (D, D, D) real in [0, 1]
        Voxel weights; voxels with weight 0 are ignored.

    Returns
    -------
    (K, K) float64 in [−1, 1]; 0 where a volume is constant inside the mask (diagonal 1).
    """
    w = np.asarray(mask, np.float64)
    sel = w > 0
    if not sel.any():
        raise ParameterError("mask", "is zero everywhere")
    ws = w[sel]
    X = np.stack([np.asarray(v, np.float64)[sel] for v in volumes])
    X -= (X @ ws / ws.sum())[:, None]
    X *= np.sqrt(ws)[None, :]
    G = X @ X.T
    nrm = np.sqrt(np.maximum(np.diag(G), 0.0))
    ok = nrm > 1e-12 * max(float(nrm.max()), 1e-300)
    c = np.zeros_like(G)
    c[np.ix_(ok, ok)] = G[np.ix_(ok, ok)] / np.outer(nrm[ok], nrm[ok])
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


def _affinity(d: np.ndarray, k: int = 7) -> np.ndarray:
    """Locally scaled affinity (Zelnik-Manor & Perona) from a distance matrix."""
    n = len(d)
    kk = min(k, n - 1)
    sig = np.sort(d, axis=1)[:, kk] if kk > 0 else np.ones(n)
    sig = np.maximum(sig, 1e-12)
    A = np.exp(-(d**2) / np.outer(sig, sig))
    np.fill_diagonal(A, 1.0)
    return A


def _cluster_qr(vectors: np.ndarray) -> np.ndarray:
    """Labels from a spectral embedding by column-pivoted QR (Damle et al.), as scikit-learn."""
    from scipy.linalg import qr, svd

    k = vectors.shape[1]
    _, _, piv = qr(vectors.T, pivoting=True)
    ut, _, v = svd(vectors[piv[:k], :].T)
    return np.abs(vectors @ (ut @ v.conj())).argmax(axis=1)


def _spectral(d: np.ndarray, n: int, backend: str) -> np.ndarray:
    A = _affinity(d)
    if backend in ("auto", "sklearn"):
        try:
            from sklearn.cluster import SpectralClustering
        except ImportError:
            if backend == "sklearn":
                raise ParameterError("spectral_backend", "scikit-learn is not installed") from None
        else:
            sc = SpectralClustering(
                n_clusters=n, affinity="precomputed", assign_labels="cluster_qr", random_state=0
            )
            return np.asarray(sc.fit_predict(A))
    deg = A.sum(1)
    dm = 1.0 / np.sqrt(deg)
    _, vecs = np.linalg.eigh(dm[:, None] * A * dm[None, :])
    emb = vecs[:, ::-1][:, :n] * dm[:, None]  # largest eigenvalues of the normalised affinity
    return _cluster_qr(emb)


def _normalise_input(obj: Any, mask: Any, sizes: Any) -> dict[str, Any]:
    """Volumes, mask, pixel size, particles and labels from any accepted regroup input."""
    from .sources import load_result

    if isinstance(obj, (str, os.PathLike)):
        obj = load_result(obj)
    if isinstance(obj, np.ndarray):
        src: dict[str, Any] = {"volumes": obj, "mask": None, "apix": 1.0, "parts": None}
        src.update(labels=None, fsc=None, freq=None)
    else:
        m = getattr(obj, "solvent_mask", None)
        fsc = getattr(obj, "fsc_masked", getattr(obj, "fsc", None))
        src = {
            "volumes": np.asarray(obj.volumes),
            "mask": m if m is not None else getattr(obj, "mask", None),
            "apix": float(getattr(obj, "pixel_size_A", 1.0)),
            "parts": getattr(obj, "particles", None),
            "labels": getattr(obj, "hard", None),
            "fsc": fsc,
            "freq": getattr(obj, "freq_invA", getattr(obj, "fsc_freq_invA", None)),
        }
    vols = np.asarray(src["volumes"], np.float32)
    if vols.ndim != 4 or len(set(vols.shape[1:])) != 1:
        raise ParameterError("volumes", f"expected (K, D, D, D) class maps, got {vols.shape}")
    K, D = vols.shape[0], vols.shape[-1]
    if mask is not None:
        src["mask"] = mask
    if isinstance(src["mask"], (str, os.PathLike)):
        from ..io.mrc import read_mrc

        src["mask"] = read_mrc(src["mask"])[0]
    if src["mask"] is None:
        from ..core.masks import spherical_mask

        src["mask"] = spherical_mask(D, 0.42 * D, 0.06 * D)
    mk = np.asarray(src["mask"], np.float32)
    if mk.shape != (D, D, D):
        raise ParameterError("mask", f"has shape {mk.shape}; the class maps are ({D}, {D}, {D})")
    src["mask"] = mk
    lab = None if src["labels"] is None else np.asarray(src["labels"], np.int64)
    src["labels"] = lab
    if sizes is not None:
        sz = np.asarray(sizes, np.float64)
        if sz.shape != (K,):
            raise ParameterError("sizes", f"has shape {sz.shape}, expected ({K},)")
    elif lab is not None:
        sz = np.bincount(lab[lab >= 0], minlength=K).astype(np.float64)[:K]
    else:
        sz = np.ones(K)
    src["sizes"], src["volumes"] = sz, vols
    return src


def regroup(
    result_or_volumes: Any,
    n_superclasses: int,
    *,
    mask: Any = None,
    min_class_size: float = 0,
    min_superclass_fraction: float = 0.02,
    exclude: Iterable[int] = (),
    method: str = "hierarchical",
    sizes: Any = None,
    lowpass_A: float | str | None = "auto",
    spectral_backend: str = "auto",
) -> Regrouping:
    """Cluster class volumes into ``n_superclasses`` superclasses.

    Parameters
    ----------
    result_or_volumes : ClassificationResult, LoadedResult, HeteroReconstruction, path or array
        A classification (object or OUTDIR: maps, solvent mask, particles and their hard
        classes) or bare ``(K, D, D, D)`` maps.
    n_superclasses : int
        Number of superclasses S (≤ number of classes taking part).
    mask : (D, D, D) array or path, optional
        Where voxels are compared (default: the result's solvent mask, else a soft sphere).
    min_class_size : float
        Classes with fewer particles are left out (superclass −1).
    exclude : iterable of int
        Classes (0-based) left out by hand.
    min_superclass_fraction : float
        Hierarchical only: a branch of the tree holding less than this fraction of the
        particles is not made a superclass of its own (the tree is cut deeper until ``S``
        branches each hold at least this much; the small branches join the superclass they
        correlate with best, by average correlation). 0 = plain ``maxclust`` cut.
    method : {'hierarchical', 'spectral'}
    sizes : (K,) array, optional
        Class weights (default: hard particle counts, or 1 for bare maps).
    lowpass_A : float, 'auto' or None
        Low-pass the maps to this resolution (Å) before correlating them, so that maps of
        different resolution (FSC-filtered classes of different sizes) are compared on the
        frequencies where all of them hold signal. 'auto': the coarsest FSC = 0.5 resolution of
        the classes taking part, when their FSC curves are known (no low-pass otherwise);
        None: no low-pass. Superclass maps are averages of the maps as given.
    spectral_backend : {'auto', 'sklearn', 'numpy'}

    Returns
    -------
    Regrouping
    """
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    if method not in ("hierarchical", "spectral"):
        raise ParameterError("method", f"must be 'hierarchical' or 'spectral', got {method!r}")
    if spectral_backend not in ("auto", "sklearn", "numpy"):
        raise ParameterError("spectral_backend", "must be 'auto', 'sklearn' or 'numpy'")
    src = _normalise_input(result_or_volumes, mask, sizes)
    vols, sz = src["volumes"], src["sizes"]
    K = vols.shape[0]
    excl = sorted({int(k) for k in exclude})
    bad = [k for k in excl if not 0 <= k < K]
    if bad:
        raise ParameterError("exclude", f"class {bad[0]} does not exist (classes 0..{K - 1})")
    reasons = _left_out(vols, sz, excl, min_class_size)
    active = np.array([k for k in range(K) if k not in reasons], np.int64)
    n = int(n_superclasses)
    if not 1 <= n <= len(active):
        raise ParameterError(
            "n_superclasses", f"{n_superclasses} for {len(active)} classes taking part"
        )
    if isinstance(lowpass_A, str) and lowpass_A != "auto":
        raise ParameterError(
            "lowpass_A", f"must be a resolution (Å), 'auto' or None: {lowpass_A!r}"
        )
    lp = _auto_lowpass(src, active) if lowpass_A == "auto" else lowpass_A
    if lp is not None and float(lp) <= 2.0 * src["apix"] * (1 + 1e-6):
        lp = None  # at or beyond Nyquist: nothing to remove
    cvols = vols
    if lp is not None:
        from ..core.filters import lowpass

        cvols = np.stack([np.asarray(lowpass(v, float(lp), src["apix"])) for v in vols])
    corr = class_correlation(cvols, src["mask"])
    d = 1.0 - corr[np.ix_(active, active)]
    d = np.clip(0.5 * (d + d.T), 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    Z = (
        linkage(squareform(d, checks=False), method="average")
        if len(active) > 1
        else np.zeros((0, 4))
    )
    if len(active) == 1:
        raw = np.zeros(1, np.int64)
    elif method == "hierarchical":
        raw = _cut_tree(Z, n, sz[active], 1.0 - d, min_superclass_fraction)
    else:
        raw = _spectral(d, n, spectral_backend)
    # number superclasses by decreasing size (ties: lowest class first)
    groups = [active[raw == g] for g in np.unique(raw)]
    groups.sort(key=lambda ks: (-sz[ks].sum(), ks.min()))
    sup = np.full(K, -1, np.int64)
    for j, ks in enumerate(groups):
        sup[ks] = j
    vout = np.stack([_weighted_mean(vols[ks], sz[ks]) for ks in groups]).astype(np.float32)
    lab = src["labels"]
    plabels = None if lab is None else np.where(lab >= 0, sup[np.maximum(lab, 0)], -1)
    dend = (
        dendrogram(Z, no_plot=True, labels=[int(k) for k in active])
        if len(active) > 1
        else {"icoord": [], "dcoord": [], "ivl": [int(active[0])], "leaves": [0], "color_list": []}
    )
    return Regrouping(
        superclass_of_class=sup,
        labels=plabels,
        class_labels=lab,
        volumes=vout,
        correlation=corr,
        active=active,
        linkage=np.asarray(Z, np.float64),
        dendrogram=json.loads(json.dumps(dend, default=_jsonable)),
        sizes=sz,
        mask=src["mask"],
        pixel_size_A=src["apix"],
        method=method,
        particles=src["parts"],
        reasons=reasons,
        lowpass_A=None if lp is None else float(lp),
    )


def _cut_tree(Z: np.ndarray, n: int, w: np.ndarray, corr: np.ndarray, min_frac: float) -> Any:
    """``n`` clusters of the average-linkage tree ``Z``, mass-aware (see ``regroup``)."""
    from scipy.cluster.hierarchy import fcluster

    total = max(float(w.sum()), 1e-300)
    for m in range(n, len(w) + 1):
        raw = fcluster(Z, m, criterion="maxclust") - 1
        ids = np.unique(raw)
        mass = np.array([w[raw == g].sum() for g in ids])
        big = ids[np.argsort(-mass, kind="stable")[:n]]
        if len(big) == n and np.all(mass[np.isin(ids, big)] >= min_frac * total):
            break
    out = np.full(len(w), -1, np.int64)
    for j, g in enumerate(big):
        out[raw == g] = j
    for g in ids[~np.isin(ids, big)]:  # small branches join the best-correlated superclass
        members = raw == g
        score = [corr[np.ix_(members, out == j)].mean() for j in range(n)]
        out[members] = int(np.argmax(score))
    return out


def _left_out(
    vols: np.ndarray, sizes: np.ndarray, exclude: list[int], min_size: float
) -> dict[int, str]:
    """Classes that take no part in the clustering, and why."""
    reasons = {k: "excluded" for k in exclude}
    for k in range(len(vols)):
        if k in reasons:
            continue
        if sizes[k] < min_size:
            reasons[k] = f"size < {min_size:g}"
        elif not np.any(vols[k]):
            reasons[k] = "empty map"
    return reasons


def _auto_lowpass(src: dict[str, Any], active: np.ndarray) -> float | None:
    """The coarsest FSC = 0.5 resolution (Å) of the classes taking part (None if unknown)."""
    from ..core.fsc import resolution_at

    if src.get("fsc") is None or src.get("freq") is None:
        return None
    fsc = np.asarray(src["fsc"], np.float64)
    res = np.array([resolution_at(src["freq"], fsc[k], 0.5) for k in active])
    res = res[np.isfinite(res)]
    return float(res.max()) if res.size else None


def _weighted_mean(vols: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, np.float64)
    if w.sum() <= 0:
        w = np.ones_like(w)
    return np.tensordot(w / w.sum(), vols.astype(np.float64), axes=1)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")
