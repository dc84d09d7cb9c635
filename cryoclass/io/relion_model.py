"""RELION-style ``run_model.star`` for a classification, so RELION's class selection reads it.

RELION's *Subset selection* job and ``relion_display --class`` open a Class3D run through its
``…_model.star`` (table ``model_classes``: one reference map per class, with its class
distribution and resolution) and read the particles from the ``…_data.star`` next to it (the
name with ``_model.star`` replaced by ``_data.star``). :func:`write_relion_model` writes both:
``run_model.star`` and ``run_data.star``, the latter a relative symbolic link to the
classification's ``particles.star`` (a copy where links are not possible), so the particles are
stored once.

Only quantities cryoclass has are written, under RELION's labels and with RELION's meaning:

- ``data_model_general``: reference and data dimensionality, the references' box
  (``rlnOriginalImageSize`` = ``rlnCurrentImageSize`` = the classification box, px) and pixel size
  (``rlnPixelSize``, Å), the resolution the classification used (``rlnCurrentResolution``, Å), the
  number of classes and bodies, the mean of each particle's largest posterior
  (``rlnAveragePmax``), and ``rlnTau2FudgeFactor`` when the classes were regularised RELION's way
  (FSC filtering off).
- ``data_model_classes``: ``rlnReferenceImage`` (the class map, a path relative to the RELION
  project directory, by default the current directory, as RELION writes it),
  ``rlnClassDistribution`` (the mean posterior of the class: its effective size / N, RELION's
  ``pdf_class``) and ``rlnEstimatedResolution`` (Å, where the class's half-set FSC falls below
  0.143).
- ``data_model_class_N`` (N 1-based, as ``rlnClassNumber``): per Fourier shell the spectral index,
  resolution (1/Å and Å) and the class's half-set FSC (``rlnGoldStandardFsc``).

RELION's noise, SSNR, orientational-accuracy and group tables are not written: cryoclass does not
estimate those quantities the way RELION does, and no reader of the class selection needs them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .mrc import atomic_path

__all__ = [
    "model_blocks",
    "write_relion_model",
    "project_relative",
    "display_command",
    "MODEL_NAME",
    "DATA_NAME",
]

#: File names: RELION derives the data file's name from the model file's.
MODEL_NAME = "run_model.star"
DATA_NAME = "run_data.star"


def display_command(model: str | os.PathLike) -> str:
    """The shell command that opens ``model`` (a ``run_model.star``) in RELION's class
    selection."""
    import shlex

    return f"relion_display --gui --class --i {shlex.quote(os.fspath(model))}"


def project_relative(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """``path`` relative to ``base`` (default: the current directory); absolute if that fails
    (e.g. another drive)."""
    start = os.path.abspath(base) if base is not None else os.getcwd()
    try:
        return os.path.relpath(os.path.abspath(path), start)
    except ValueError:  # pragma: no cover - Windows, different drives
        return os.path.abspath(path)


def model_blocks(
    reference_images: list[str],
    class_distribution: np.ndarray,
    resolution_A: np.ndarray,
    fsc: np.ndarray,
    fsc_freq_invA: np.ndarray,
    box_px: int,
    pixel_size_A: float,
    current_resolution_A: float,
    average_pmax: float,
    tau2_fudge: float | None = None,
) -> dict[str, Any]:
    """The blocks of a RELION ``model.star`` (block name without ``data_`` → dict or table).

    ``class_distribution`` (K,) sums to 1; ``resolution_A`` (K,) is each class's FSC = 0.143
    resolution (inf where it never falls below); ``fsc`` (K, S) the half-set FSC at the shells
    ``fsc_freq_invA`` (S,), 1/Å, shell i at i / (box_px · pixel_size_A).
    """
    K = len(reference_images)
    general: dict[str, Any] = {
        "rlnReferenceDimensionality": 3,
        "rlnDataDimensionality": 2,
        "rlnOriginalImageSize": int(box_px),
        "rlnCurrentResolution": float(current_resolution_A),
        "rlnCurrentImageSize": int(box_px),
        "rlnPixelSize": float(pixel_size_A),
        "rlnNrClasses": K,
        "rlnNrBodies": 1,
    }
    if tau2_fudge is not None:
        general["rlnTau2FudgeFactor"] = float(tau2_fudge)
    general["rlnAveragePmax"] = float(average_pmax)
    # RELION writes 999 for a class whose resolution it cannot estimate
    res = np.where(np.isfinite(resolution_A), resolution_A, 999.0)
    blocks: dict[str, Any] = {
        "model_general": general,
        "model_classes": pd.DataFrame(
            {
                "rlnReferenceImage": list(reference_images),
                "rlnClassDistribution": np.asarray(class_distribution, np.float64),
                "rlnEstimatedResolution": res.astype(np.float64),
            }
        ),
    }
    freq = np.asarray(fsc_freq_invA, np.float64)
    with np.errstate(divide="ignore"):
        angstrom = np.where(freq > 0, 1.0 / np.where(freq > 0, freq, 1.0), 999.0)
    index = np.rint(freq * box_px * pixel_size_A).astype(np.int64)
    for k in range(K):
        blocks[f"model_class_{k + 1}"] = pd.DataFrame(
            {
                "rlnSpectralIndex": index,
                "rlnResolution": freq,
                "rlnAngstromResolution": angstrom,
                "rlnGoldStandardFsc": np.asarray(fsc[k], np.float64),
            }
        )
    return blocks


def _link_data(outdir: Path, particles_star: Path) -> Path:
    """``run_data.star`` → ``particles_star``: a relative symbolic link, made under a temporary
    name and renamed over any old one (atomic); a copy where symbolic links fail."""
    target = outdir / DATA_NAME
    tmp = outdir / f".{DATA_NAME}.{os.getpid()}.link.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(os.path.relpath(particles_star, outdir), tmp)
    except OSError:  # pragma: no cover - file systems without symbolic links
        with atomic_path(target) as copy:
            shutil.copyfile(particles_star, copy)
        return target
    os.replace(tmp, target)
    return target


def write_relion_model(
    outdir: str | os.PathLike,
    particles_star: str | os.PathLike,
    blocks: dict[str, Any],
) -> list[Path]:
    """Write ``OUTDIR/run_model.star`` (``blocks``, see :func:`model_blocks`) and
    ``OUTDIR/run_data.star`` (→ ``particles_star``, which must exist); returns both paths."""
    import starfile

    outdir, particles_star = Path(outdir), Path(particles_star)
    if not particles_star.is_file():
        raise FileNotFoundError(f"{particles_star}: no particles star file to pair the model with")
    model = outdir / MODEL_NAME
    with atomic_path(model) as tmp:
        starfile.write(blocks, tmp, float_format="%.6g")
    return [model, _link_data(outdir, particles_star)]
