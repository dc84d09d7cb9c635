"""Where follow-up jobs get their classes from: particle columns and classification OUTDIRs.

Class assignments come from

* our :class:`~cryoclass.engine.result.ClassificationResult` (``.hard``, 0-based),
* a CryoSPARC ``.cs`` field (``alignments3D/class``, 0-based),
* a RELION ``.star`` column (``rlnClassNumber``, 1-based; converted to 0-based here),
* a classification output directory (``particles.star``/``.cs``, ``class_NN.mrc``,
  ``mask_solvent.mrc``, ``params.yaml``), read by :func:`load_result`.

Inside cryoclass classes are always 0-based; ``-1`` marks a particle without a class.

Example
-------
>>> from cryoclass.followup.sources import load_result, class_labels   # doctest: +SKIP
>>> res = load_result("classify_out")                                   # doctest: +SKIP
>>> res.n_classes, res.volumes.shape                                    # doctest: +SKIP
(3, (3, 24, 24, 24))
>>> class_labels(res.particles)[:5]                                     # doctest: +SKIP
array([2, 0, 0, 1, 2])
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputFileError, ParameterError

__all__ = [
    "LoadedResult",
    "load_result",
    "class_labels",
    "class_posteriors",
    "resolve_labels",
    "CLASS_COLUMNS_STAR",
    "strip_class_columns",
]

#: RELION columns a classification adds (removed from a subset before re-classifying it).
CLASS_COLUMNS_STAR = re.compile(r"^rln(ClassNumber|MaxValueProbDistribution|ClassPosterior\d+)$")
_CLASS_FIELDS_CS = re.compile(
    r"^(alignments3D/(class|class_ess|class_posterior)|alignments_class3D_\d+/.*)$"
)
_POST_STAR = re.compile(r"^rlnClassPosterior(\d+)$")
_POST_CS = re.compile(r"^alignments_class3D_(\d+)/class_posterior$")


def _where(particles: Any) -> str:
    return str(particles.source_path or "<particles>")


def class_labels(particles: Any, field_name: str | None = None) -> np.ndarray:
    """0-based class of every particle, read from the particles' original table.

    Parameters
    ----------
    particles : Particles
        Read from a ``.star`` or ``.cs`` file (``particles.original`` holds the raw table).
    field_name : str, optional
        The column/field to read. Default: ``rlnClassNumber`` (star, 1-based) or
        ``alignments3D/class`` (cs, 0-based). A name starting with ``rln`` is taken as 1-based.

    Returns
    -------
    (N,) int64
        Class per particle, 0-based (``rlnClassNumber`` ≤ 0 → ``-1``, no class).

    Raises
    ------
    InputFileError
        The particles have no such column (names the file and the column).
    """
    orig = particles.original
    if orig is None:
        raise InputFileError(
            _where(particles), "in-memory particles carry no class column; pass labels="
        )
    if isinstance(orig, pd.DataFrame):
        name = field_name or "rlnClassNumber"
        if name not in orig.columns:
            raise InputFileError(_where(particles), f"no column {name!r} with class assignments")
        values = orig[name].to_numpy()
    else:
        name = field_name or "alignments3D/class"
        if name not in (orig.dtype.names or ()):
            raise InputFileError(_where(particles), f"no field {name!r} with class assignments")
        values = orig[name]
    try:
        lab = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputFileError(_where(particles), f"column {name!r} is not numeric") from None
    if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
        raise InputFileError(_where(particles), f"column {name!r} holds non-integer classes")
    out = lab.astype(np.int64)
    if name.startswith("rln"):
        out = out - 1
    return np.where(out < 0, -1, out)


def class_posteriors(particles: Any) -> np.ndarray | None:
    """``(N, K)`` float32 class posteriors from ``rlnClassPosteriorNN`` (star, NN 1-based) or
    ``alignments_class3D_{k}/class_posterior`` (cs) columns; None when there are none."""
    orig = particles.original
    if orig is None:
        return None
    if isinstance(orig, pd.DataFrame):
        names = list(orig.columns)
        cols = {int(m.group(1)) - 1: n for n in names if (m := _POST_STAR.match(n))}
        get = lambda n: orig[n].to_numpy(np.float32)  # noqa: E731
    else:
        names = list(orig.dtype.names or ())
        cols = {int(m.group(1)): n for n in names if (m := _POST_CS.match(n))}
        get = lambda n: np.asarray(orig[n], np.float32)  # noqa: E731
    if not cols:
        return None
    K = max(cols) + 1
    if sorted(cols) != list(range(K)):
        raise InputFileError(_where(particles), f"class posterior columns are not 0..{K - 1}")
    return np.stack([get(cols[k]) for k in range(K)], axis=1)


def strip_class_columns(particles: Any) -> Any:
    """The same particles without the class columns of an earlier classification (so that a new
    classification with another K does not inherit stale ``rlnClassPosteriorNN`` columns)."""
    from ..io.particles import Particles

    orig = particles.original
    if isinstance(orig, pd.DataFrame):
        orig = orig[[c for c in orig.columns if not CLASS_COLUMNS_STAR.match(str(c))]]
    elif orig is not None:
        from numpy.lib import recfunctions as rfn

        keep = [n for n in orig.dtype.names or () if not _CLASS_FIELDS_CS.match(n)]
        orig = rfn.repack_fields(orig[keep])
    return Particles(
        particles.meta,
        particles.images,
        particles.source_path,
        particles.source_format,
        orig,
        particles.optics,
    )


@dataclass
class LoadedResult:
    """A classification output directory, read back (see :func:`load_result`).

    Attributes
    ----------
    outdir : Path
    particles : Particles
        From ``particles.star`` (preferred) or ``particles.cs``.
    labels : (N,) int64
        0-based hard class per particle.
    posteriors : (N, K) float32 or None
    volumes : (K, Dc, Dc, Dc) float32
        ``class_NN.mrc`` at the classification box.
    pixel_size_A : float
        Classification pixel size (Å) from the maps' headers.
    solvent_mask : (Dc, Dc, Dc) float32 or None
    params : dict
        The ``params`` section of ``params.yaml`` (empty if absent).
    command : str
        The command recorded in ``params.yaml``.
    fsc : (K, S) float64 or None
        Half-set FSC per class (``diagnostics/fsc.csv``), at ``fsc_freq_invA`` (1/Å).
    """

    outdir: Path
    particles: Any
    labels: np.ndarray
    posteriors: np.ndarray | None
    volumes: np.ndarray
    pixel_size_A: float
    solvent_mask: np.ndarray | None
    params: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    fsc: np.ndarray | None = None
    fsc_freq_invA: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def hard(self) -> np.ndarray:
        return self.labels


def _class_maps(d: Path) -> list[Path]:
    maps = sorted(d.glob("class_[0-9][0-9]*.mrc"))
    nums = [int(p.stem.split("_")[1]) for p in maps]
    if not maps:
        raise InputFileError(d, "no class_NN.mrc volumes: is this a classification OUTDIR?")
    if nums != list(range(len(nums))):
        raise InputFileError(d, f"class volumes are not class_00 … class_{len(nums) - 1:02d}")
    return maps


def _read_fsc(path: Path, K: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-class FSC curves from a classification's ``diagnostics/fsc.csv`` (None if absent)."""
    if not path.is_file():
        return None, None
    df = pd.read_csv(path)
    cols = [f"class_{k:02d}" for k in range(K)]
    if "freq_invA" not in df.columns or any(c not in df.columns for c in cols):
        return None, None
    return df[cols].to_numpy(np.float64).T, df["freq_invA"].to_numpy(np.float64)


def load_result(outdir: str | os.PathLike, project_dir: str | None = None) -> LoadedResult:
    """Read a classification OUTDIR (as written by :class:`~cryoclass.Classification`).

    ``project_dir``: where relative image paths of ``particles.star`` / ``.cs`` resolve (the
    RELION or CryoSPARC project directory) when that is not the current directory or OUTDIR.

    Raises
    ------
    InputFileError
        Not a directory, no ``particles.star``/``.cs``, no ``class_NN.mrc``, or the particles'
        class count disagrees with the volumes.
    """
    import yaml

    from ..io.mrc import read_mrc
    from ..io.particles import read_particles

    d = Path(outdir)
    if not d.is_dir():
        raise InputFileError(d, "not a directory (expected a classification OUTDIR)")
    src = next((d / n for n in ("particles.star", "particles.cs") if (d / n).is_file()), None)
    if src is None:
        raise InputFileError(d, "no particles.star or particles.cs in this directory")
    particles = read_particles(src, project_dir=project_dir)
    post = class_posteriors(particles)
    labels = class_labels(particles) if post is None else np.argmax(post, axis=1)
    vols, apix = zip(*(read_mrc(p) for p in _class_maps(d)))
    volumes = np.stack(vols).astype(np.float32)
    K = volumes.shape[0]
    k_ptcl = post.shape[1] if post is not None else int(labels.max()) + 1
    if (post is not None and k_ptcl != K) or k_ptcl > K:
        raise InputFileError(src, f"particles have {k_ptcl} classes but {d} holds {K} volumes")
    mask = None
    if (d / "mask_solvent.mrc").is_file():
        mask = read_mrc(d / "mask_solvent.mrc")[0].astype(np.float32)
    fsc, freq = _read_fsc(d / "diagnostics" / "fsc.csv", K)
    doc: dict[str, Any] = {}
    if (d / "params.yaml").is_file():
        doc = yaml.safe_load((d / "params.yaml").read_text()) or {}
    return LoadedResult(
        outdir=d,
        particles=particles,
        labels=labels.astype(np.int64),
        posteriors=post,
        volumes=volumes,
        pixel_size_A=float(apix[0]),
        solvent_mask=mask,
        params=dict(doc.get("params") or {}),
        command=str(doc.get("command") or ""),
        fsc=fsc,
        fsc_freq_invA=freq,
    )


def _labels_by_uid(particles: Any, res: LoadedResult) -> np.ndarray:
    uid = particles.meta["uid"].to_numpy()
    ruid = res.particles.meta["uid"].to_numpy()
    if len(uid) == len(ruid) and np.array_equal(uid, ruid):
        return res.labels.copy()
    order = np.argsort(ruid, kind="stable")
    pos = np.clip(np.searchsorted(ruid[order], uid), 0, len(ruid) - 1)
    hit = ruid[order][pos] == uid
    if not hit.any():
        raise InputFileError(res.outdir, "none of its particles' uids match the particles given")
    return np.where(hit, res.labels[order][pos], -1).astype(np.int64)


def resolve_labels(particles: Any, labels: Any, n: int) -> np.ndarray:
    """Class per particle from any accepted form (see :func:`reconstruct_classes`).

    ``labels`` may be None (read ``rlnClassNumber`` / ``alignments3D/class`` from the
    particles), a column/field name, a classification OUTDIR path (its particles are matched to
    ``particles`` by uid; unmatched particles get −1), an object with ``.hard``
    (ClassificationResult, LoadedResult) or an ``(N,)`` integer array.
    """
    if labels is None:
        return class_labels(particles)
    if isinstance(labels, (str, os.PathLike)):
        if Path(labels).is_dir():
            return _labels_by_uid(particles, load_result(labels))
        return class_labels(particles, str(labels))
    elif hasattr(labels, "hard"):
        lab = np.asarray(labels.hard)
    else:
        lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ParameterError("labels", f"has shape {lab.shape}, expected ({n},) — one per particle")
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind != "f" or np.any(lab != np.round(lab)):
            raise ParameterError("labels", "must be integer class numbers (0-based)")
    return np.where(lab < 0, -1, lab).astype(np.int64)
