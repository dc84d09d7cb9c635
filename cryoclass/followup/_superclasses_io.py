"""Writers of a :class:`~cryoclass.followup.superclasses.Regrouping` (see ``Regrouping.write``).

Example
-------
>>> rg.write("regroup_out")      # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io.mrc import atomic_path, write_mrc

__all__ = ["write_regrouping"]


def _table(path: Path, df: pd.DataFrame, index: bool = False) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return path


def _particle_files(rg: Any, d: Path, formats: tuple[str, ...]) -> list[Path]:
    from ..io.cryosparc import write_cs
    from ..io.particles import write_particles_with_images
    from ..io.star import write_star
    from .superclasses import CS_FIELD, STAR_COLUMN

    parts, lab = rg.particles, rg.labels
    files: list[Path] = []
    star_extra = lambda idx: {STAR_COLUMN: lab[idx]}  # noqa: E731
    cs_extra = lambda idx: {CS_FIELD: lab[idx].astype(np.int32)}  # noqa: E731
    everyone = np.arange(len(lab))
    if parts.source_format == "memory" or not str(parts.meta["image_path"].iloc[0]):
        parts = write_particles_with_images(
            d / "particles.star", parts, d / "particles.mrcs", extra=star_extra(everyone)
        )
        files += [d / "particles.star", d / "particles.mrcs"]
    elif "star" in formats:
        write_star(d / "particles.star", parts, extra=star_extra(everyone))
        files.append(d / "particles.star")
    if "cs" in formats:
        write_cs(d / "particles.cs", parts, extra=cs_extra(everyone))
        files.append(d / "particles.cs")
    for j in range(rg.n_superclasses):
        idx = np.nonzero(lab == j)[0]
        sub = parts.subset(idx)
        if "star" in formats:
            files.append(d / f"superclass_{j:02d}.star")
            write_star(files[-1], sub, extra=star_extra(idx))
        if "cs" in formats:
            files.append(d / f"superclass_{j:02d}.cs")
            write_cs(files[-1], sub, extra=cs_extra(idx))
    return files


def write_regrouping(rg: Any, d: Path, formats: tuple[str, ...], command: str) -> list[Path]:
    """Write every output of a regrouping into ``d`` (created); returns the files."""
    import yaml

    from .. import __version__

    d.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for j in range(rg.n_superclasses):
        files.append(d / f"superclass_{j:02d}.mrc")
        write_mrc(files[-1], rg.volumes[j], rg.pixel_size_A)
    K = len(rg.superclass_of_class)
    names = [f"class_{k:02d}" for k in range(K)]
    files.append(_table(d / "correlation.csv", pd.DataFrame(rg.correlation, names, names), True))
    files.append(_table(d / "linkage.csv", rg.linkage_table()))
    files.append(_table(d / "classes.csv", rg.class_table()))
    files.append(d / "dendrogram.json")
    with atomic_path(files[-1]) as tmp, open(tmp, "w") as fh:
        json.dump(rg.dendrogram, fh)
    if rg.labels is not None and rg.class_labels is not None:
        files.append(_table(d / "assignments.csv", rg.assignments))
        if rg.particles is not None and formats:
            files += _particle_files(rg, d, formats)
    sizes = rg.superclass_sizes()
    doc = {
        "cryoclass_version": __version__,
        "job": "regroup classes into superclasses",
        "command": command,
        "method": rg.method,
        "lowpass_A": rg.lowpass_A,
        "n_superclasses": rg.n_superclasses,
        "superclasses": [
            {
                "superclass": j,
                "classes": [int(k) for k in np.nonzero(rg.superclass_of_class == j)[0]],
                "size": float(sizes[j]),
            }
            for j in range(rg.n_superclasses)
        ],
        "left_out": {int(k): v for k, v in sorted(rg.reasons.items())},
    }
    files.append(d / "summary.yaml")
    with atomic_path(files[-1]) as tmp, open(tmp, "w") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True)
    return files
