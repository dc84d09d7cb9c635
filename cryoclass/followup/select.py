"""Select particles from a classification: chosen classes, optionally only the confident ones.

A particle is selected when its most likely class is one of the chosen classes and, with a
``min_probability`` P > 0, when its posterior probability of belonging to the chosen set,
``Σ_{k ∈ chosen} r_ik``, is at least P (for one class, its class posterior; RELION's
``rlnMaxValueProbDistribution`` for a particle of that class). Merging two similar classes
therefore keeps a particle split between them; with every class chosen the sum is 1 and the
threshold keeps everyone (select one class at a time to drop ambiguous particles).
:meth:`Selection.write` writes
``selected.star`` / ``selected.cs`` — the parent's rows, every column kept (class numbers and
posteriors included), image paths valid from the new directory — and ``selection.yaml``
(provenance and counts).

Example
-------
>>> import numpy as np
>>> from cryoclass.followup.select import selection_rows
>>> post = np.array([[0.9, 0.1, 0.0], [0.5, 0.1, 0.4], [0.3, 0.2, 0.5], [0.1, 0.8, 0.1]])
>>> selection_rows(post.argmax(1), post, [0, 2], 0.85).tolist()   # Σ over {0, 2}: .9 .9 .8
[0, 1]
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputFileError, ParameterError
from .sources import LoadedResult, load_result
from .subset import chosen_rows, select_classes

__all__ = ["Selection", "select_particles", "selection_rows"]


def selection_rows(
    labels: np.ndarray,
    posteriors: np.ndarray | None,
    classes: Iterable[int],
    min_probability: float = 0.0,
) -> np.ndarray:
    """Rows (ascending) whose hard class ``labels`` is in ``classes`` and, for
    ``min_probability`` > 0, whose summed posterior over ``classes`` is ≥ ``min_probability``.

    Raises
    ------
    ParameterError
        ``min_probability`` outside [0, 1], or > 0 without ``posteriors``.
    """
    p = float(min_probability)
    if not 0.0 <= p <= 1.0:
        raise ParameterError("min_probability", f"must be between 0 and 1, got {p:g}")
    chosen = np.asarray(sorted({int(k) for k in classes}), dtype=np.int64)
    keep = np.isin(labels, chosen)
    if p > 0.0:
        if posteriors is None:
            raise ParameterError(
                "min_probability",
                "these particles carry no class posteriors (rlnClassPosteriorNN or "
                "alignments_class3D_k/class_posterior); select by class only",
            )
        keep &= np.asarray(posteriors, dtype=np.float64)[:, chosen].sum(axis=1) >= p
    return np.nonzero(keep)[0]


@dataclass
class Selection:
    """Particles selected from a classification OUTDIR (see :func:`select_particles`).

    Attributes
    ----------
    parent : LoadedResult
    rows : (n,) int64 rows of the parent's particles (its order).
    classes : the chosen 0-based classes.
    min_probability : the threshold on the chosen classes' summed posterior (0 = none).
    min_size : the class-size filter applied, if any.
    """

    parent: LoadedResult
    rows: np.ndarray
    classes: list[int]
    min_probability: float
    min_size: int | None = None

    def table(self) -> pd.DataFrame:
        """Per chosen class: its particles (most likely class) and those selected."""
        lab = self.parent.labels
        picked = np.bincount(lab[self.rows], minlength=self.parent.n_classes)
        sizes = np.bincount(lab[lab >= 0], minlength=self.parent.n_classes)
        return pd.DataFrame(
            {
                "class": self.classes,
                "particles": [int(sizes[k]) for k in self.classes],
                "selected": [int(picked[k]) for k in self.classes],
            }
        )

    def write(
        self,
        outdir: str | os.PathLike,
        formats: tuple[str, ...] = ("star", "cs"),
        command: str = "",
    ) -> list[Path]:
        """Write ``selected.star`` / ``selected.cs`` (the formats the parent has, of those
        asked for) and ``selection.yaml`` into ``outdir`` (created); each file atomically.
        Returns the files."""
        d = Path(outdir)
        src = self.parent.outdir
        if d.exists() and d.resolve() == Path(src).resolve():
            raise ParameterError("outdir", f"{d} is the classification itself; choose another")
        d.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        if "star" in formats and (src / "particles.star").is_file():
            from ..io.star import write_star

            files.append(d / "selected.star")
            write_star(files[-1], self.parent.particles.subset(self.rows))
        if "cs" in formats and (src / "particles.cs").is_file():
            files.append(d / "selected.cs")
            _write_cs_rows(src / "particles.cs", self._cs_rows(src / "particles.cs"), files[-1])
        if not files:
            raise InputFileError(
                src, f"no particles.{' or particles.'.join(formats)} to select from"
            )
        files.append(self._write_yaml(d / "selection.yaml", command))
        return files

    def _cs_rows(self, path: Path) -> np.ndarray:
        """The selected rows of ``particles.cs``, matched to ``particles.star``'s by uid."""
        from ..io.cryosparc import load_cs

        arr = load_cs(path)
        uid = self.parent.particles.meta["uid"].to_numpy().astype(np.uint64)
        cs_uid = arr["uid"].astype(np.uint64)
        if len(cs_uid) == len(uid) and np.array_equal(cs_uid, uid):
            return arr[self.rows]
        pos = {int(u): i for i, u in enumerate(cs_uid)}
        missing = [int(u) for u in uid[self.rows] if int(u) not in pos]
        if missing:
            raise InputFileError(
                path, f"{len(missing)} selected uids are missing (e.g. {missing[0]})"
            )
        return arr[np.array([pos[int(u)] for u in uid[self.rows]], dtype=np.int64)]

    def _write_yaml(self, path: Path, command: str) -> Path:
        import yaml

        from .. import __version__
        from ..io.mrc import atomic_path

        doc = {
            "cryoclass_version": __version__,
            "job": "select particles",
            "command": command,
            "parent_outdir": str(Path(self.parent.outdir).resolve()),
            "parent_command": self.parent.command,
            "classes": [int(k) for k in self.classes],
            "min_probability": float(self.min_probability),
            "min_size": None if self.min_size is None else int(self.min_size),
            "n_selected": int(len(self.rows)),
            "n_particles": int(len(self.parent.labels)),
            "per_class": self.table().to_dict(orient="records"),
        }
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True)
        return path


def _write_cs_rows(src: Path, rows: np.ndarray, path: Path) -> None:
    """``rows`` of the CryoSPARC table ``src`` into ``path``, every field kept; image paths
    (``blob/path``) that ``src`` gave relative to its own directory are re-based on ``path``'s
    (paths relative to a CryoSPARC project, or absolute, are kept)."""
    from ..io.mrc import atomic_path

    if "blob/path" in (rows.dtype.names or ()):
        rows = rows.copy()
        old_dir, new_dir = src.parent.resolve(), path.parent.resolve()
        for value in np.unique(rows["blob/path"]):
            name = value.decode() if isinstance(value, bytes) else str(value)
            if os.path.isabs(name) or not (old_dir / name).is_file():
                continue
            target = (old_dir / name).resolve()
            if (new_dir / name).is_file() and (new_dir / name).resolve() == target:
                continue
            new = os.path.relpath(target, new_dir)
            if rows.dtype["blob/path"].kind == "S":
                field = rows.dtype["blob/path"]
                if len(new.encode()) > field.itemsize:  # widen the fixed-width field
                    rows = rows.astype(_widened(rows.dtype, "blob/path", len(new.encode())))
                rows["blob/path"][rows["blob/path"] == value] = new.encode()
            else:
                rows["blob/path"][rows["blob/path"] == value] = new
    with atomic_path(path, suffix=".cs") as tmp, open(tmp, "wb") as fh:
        np.save(fh, rows, allow_pickle=False)


def _widened(dtype: np.dtype, name: str, size: int) -> np.dtype:
    """``dtype`` with the fixed-width bytes field ``name`` widened to ``size`` bytes."""
    return np.dtype([(n, f"S{size}" if n == name else dtype[n]) for n in dtype.names or ()])


def select_particles(
    result: Any,
    classes: Iterable[int] | None = None,
    *,
    min_size: int | None = None,
    min_probability: float = 0.0,
) -> Selection:
    """Particles of chosen classes of a classification, optionally only the confident ones.

    Parameters
    ----------
    result : OUTDIR path or LoadedResult
        The classification (as written by ``cryoclass classify``).
    classes : iterable of int, optional
        0-based classes (the ``class_NN`` numbering). Give these, ``min_size``, or both.
    min_size : int, optional
        Only classes with at least this many particles (without ``classes``: of all classes).
    min_probability : float
        Keep a particle only if its summed posterior over the chosen classes is at least this
        (0 = every particle whose most likely class is chosen).

    Raises
    ------
    ParameterError
        No classes and no ``min_size``, a class that does not exist, a probability outside
        [0, 1] (or > 0 without posteriors), or an empty selection.
    """
    res = result if isinstance(result, LoadedResult) else load_result(result)
    chosen = select_classes(res.labels, res.n_classes, classes, min_size)
    rows = chosen_rows(res, res.particles, res.labels, chosen, min_probability, None)
    return Selection(res, rows, chosen, float(min_probability), min_size)
