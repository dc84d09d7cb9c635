"""Follow-up jobs on a classification: heterogeneous reconstruction, regrouping, re-classifying.

* :func:`reconstruct_classes` — per-class maps at the full box with half-maps and FSC
  (CryoSPARC "Heterogeneous Reconstruction Only").
* :func:`regroup` — cluster many classes into superclasses by real-space voxel correlation.
* :func:`subset_particles` / :func:`reclassify` — a new classification of chosen classes.
* :func:`select_particles` — the particles of chosen classes (optionally only the confidently
  assigned ones) written as ``selected.star`` / ``.cs`` for refinement elsewhere.
* :func:`load_result` — read a classification OUTDIR back.

Example
-------
>>> from cryoclass.followup import reconstruct_classes, regroup, reclassify   # doctest: +SKIP
>>> hr = reconstruct_classes(result)      # a ClassificationResult             # doctest: +SKIP
>>> rg = regroup("classify_out", 3, min_class_size=50)                         # doctest: +SKIP
>>> job = reclassify("classify_out", [0, 2], n_classes=2, outdir="sub")        # doctest: +SKIP
>>> job.run()                                                                  # doctest: +SKIP
"""

from __future__ import annotations

from .hetero import HeteroReconstruction, reconstruct_classes
from .select import Selection, select_particles
from .sources import LoadedResult, class_labels, class_posteriors, load_result
from .subset import reclassify, select_classes, subset_particles
from .superclasses import Regrouping, class_correlation, regroup

__all__ = [
    "HeteroReconstruction",
    "reconstruct_classes",
    "Regrouping",
    "regroup",
    "class_correlation",
    "subset_particles",
    "select_classes",
    "reclassify",
    "Selection",
    "select_particles",
    "LoadedResult",
    "load_result",
    "class_labels",
    "class_posteriors",
]
