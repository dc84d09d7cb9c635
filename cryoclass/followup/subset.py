"""Re-classify a subset: the particles of chosen classes, classified again.

:func:`subset_particles` picks the particles hard-assigned to some classes (by number and/or a
minimum class size) and drops the earlier classification's columns (``rlnClassNumber``,
``rlnClassPosteriorNN``, ``alignments_class3D_*`` …) so the new result's files are not mixed with
stale ones. :func:`reclassify` starts a new :class:`~cryoclass.Classification` on them, with
the parent's parameters unless told otherwise, and records where the particles came from in
the new ``params.yaml``::

    provenance:
      parent_outdir: /data/classify_K10
      parent_command: cryoclass classify particles.star -K 10 --filter-res 8 -o classify_K10
      classes: [0, 2]
      min_size: null
      n_particles: 5321

Example
-------
>>> from cryoclass.followup import reclassify
>>> job = reclassify("classify_K10", [0, 2], n_classes=2, filter_res_A=6,
...                  outdir="classify_K10_sub")          # doctest: +SKIP
>>> result = job.run()                                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from .sources import class_posteriors, load_result, resolve_labels, strip_class_columns

__all__ = ["select_classes", "subset_particles", "reclassify"]


def select_classes(
    labels: np.ndarray,
    n_classes: int,
    classes: Iterable[int] | None = None,
    min_size: int | None = None,
) -> list[int]:
    """Classes chosen by number (``classes``) and/or size (at least ``min_size`` particles);
    both given → those of ``classes`` that are large enough.

    Raises
    ------
    ParameterError
        Neither given, a class number out of range, or nothing selected.
    """
    if classes is None and min_size is None:
        raise ParameterError("classes", "give the classes to keep, a min_size, or both")
    sizes = np.bincount(labels[labels >= 0], minlength=n_classes)
    chosen = list(range(n_classes)) if classes is None else sorted({int(k) for k in classes})
    bad = [k for k in chosen if not 0 <= k < n_classes]
    if bad:
        raise ParameterError("classes", f"class {bad[0]} does not exist (0..{n_classes - 1})")
    if min_size is not None:
        chosen = [k for k in chosen if sizes[k] >= min_size]
    if not chosen or sizes[chosen].sum() == 0:
        raise ParameterError("classes", "the selection holds no particles")
    return chosen


def _source(result: Any, labels: Any) -> tuple[Any, np.ndarray, int, Any]:
    """(particles, labels, K, loaded-or-result object) from any accepted input."""
    if isinstance(result, (str, os.PathLike)):
        result = load_result(result)
    if hasattr(result, "particles") and hasattr(result, "hard"):
        parts = result.particles
        lab = resolve_labels(parts, result if labels is None else labels, len(parts))
        K = int(getattr(result, "n_classes", lab.max() + 1))
        return parts, lab, K, result
    lab = resolve_labels(result, labels, len(result))
    return result, lab, int(lab.max()) + 1, None


def chosen_rows(
    src: Any, parts: Any, lab: np.ndarray, chosen: list[int], min_probability: float, given: Any
) -> np.ndarray:
    """Rows of the chosen classes, confident ones only with ``min_probability`` > 0 (see
    :func:`~cryoclass.followup.select.selection_rows`; posteriors from the result or the
    particles' columns; none where explicit ``labels`` were given). Raises ParameterError when
    no particle passes."""
    from .select import selection_rows

    post = None
    if min_probability > 0 and given is None:
        post = getattr(src, "posteriors", None)
        if post is None:
            post = class_posteriors(parts)
    rows = selection_rows(lab, post, chosen, min_probability)
    if len(rows) == 0:
        raise ParameterError(
            "min_probability", f"no particle of classes {chosen} reaches {min_probability:g}"
        )
    return rows


def subset_particles(
    result: Any,
    classes: Iterable[int] | None = None,
    min_size: int | None = None,
    *,
    labels: Any = None,
    keep_class_columns: bool = False,
    min_probability: float = 0.0,
) -> Any:
    """The particles of some classes, as a new :class:`~cryoclass.io.particles.Particles`.

    Parameters
    ----------
    result : ClassificationResult, LoadedResult, OUTDIR path or Particles
        Where the classes come from (Particles: their ``rlnClassNumber`` /
        ``alignments3D/class`` column, or ``labels``).
    classes : iterable of int, optional
        0-based classes to keep.
    min_size : int, optional
        Keep only classes with at least this many (hard-assigned) particles.
    labels : optional
        Class per particle, overriding the result's (see :func:`reconstruct_classes`).
    keep_class_columns : bool
        Keep the parent classification's class columns (default: drop them).
    min_probability : float
        Keep only particles whose posterior summed over the chosen classes is at least this
        (needs posteriors: a result, or particles with posterior columns).

    Returns
    -------
    Particles
        In the parent's particle order; ``len`` = the particles of the chosen classes.
    """
    parts, lab, K, src = _source(result, labels)
    chosen = select_classes(lab, K, classes, min_size)
    sub = parts.subset(chosen_rows(src, parts, lab, chosen, min_probability, labels))
    return sub if keep_class_columns else strip_class_columns(sub)


def _parent_params(src: Any) -> Any:
    from ..params import ClassificationParams

    if src is None:
        return None
    p = getattr(src, "params", None)
    if isinstance(p, ClassificationParams):
        return p
    if isinstance(p, dict) and p:
        known = {f.name for f in dataclasses.fields(ClassificationParams)}
        return ClassificationParams.from_dict({k: v for k, v in p.items() if k in known})
    return None


def reclassify(
    result_or_outdir: Any,
    classes: Iterable[int] | None = None,
    params: Any = None,
    *,
    min_size: int | None = None,
    min_probability: float = 0.0,
    outdir: str | os.PathLike | None = None,
    command: str = "",
    **kwargs: Any,
) -> Any:
    """A new classification of the particles of ``classes`` (not yet run: call ``.run()``).

    Parameters
    ----------
    result_or_outdir : ClassificationResult, LoadedResult or OUTDIR path
        The parent classification.
    classes : iterable of int, optional
        0-based parent classes whose particles are re-classified.
    params : ClassificationParams, optional
        Default: the parent's parameters. Keyword arguments that are parameter names
        (``n_classes=2``, ``filter_res_A=6`` …) override them.
    min_size : int, optional
        Keep only chosen classes with at least this many particles.
    min_probability : float
        Re-classify only particles whose posterior summed over the chosen classes is at least
        this (see :func:`~cryoclass.followup.select.selection_rows`).
    outdir : path, optional
        Output directory of the new job.
    command : str
        Command line recorded in ``params.yaml``.
    **kwargs
        Parameter overrides, and :class:`~cryoclass.Classification` keywords
        (``solvent_mask``, ``focus_mask``, ``init_volumes``, ``overwrite``, ``resume``).

    Returns
    -------
    Classification
        With ``provenance = {parent_outdir, parent_command, classes, min_size, n_particles}``,
        written into its ``params.yaml``.
    """
    from ..engine.job import Classification
    from ..params import ClassificationParams

    parts, lab, K, src = _source(result_or_outdir, None)
    chosen = select_classes(lab, K, classes, min_size)
    sub = strip_class_columns(
        parts.subset(chosen_rows(src, parts, lab, chosen, min_probability, None))
    )
    names = {f.name for f in dataclasses.fields(ClassificationParams)}
    overrides = {k: v for k, v in kwargs.items() if k in names}
    job_kw = {k: v for k, v in kwargs.items() if k not in names}
    base = params if params is not None else _parent_params(src)
    if base is None:
        p = ClassificationParams(**overrides)
    else:
        p = base.replace(**overrides) if overrides else base
    parent_dir = getattr(src, "outdir", None)
    provenance = {
        "parent_outdir": None if parent_dir is None else str(Path(parent_dir).resolve()),
        "parent_command": str(getattr(src, "command", "") or ""),
        "classes": [int(k) for k in chosen],
        "min_size": None if min_size is None else int(min_size),
        "min_probability": float(min_probability),
        "n_particles": len(sub),
    }
    return Classification(sub, p, outdir=outdir, command=command, provenance=provenance, **job_kw)
