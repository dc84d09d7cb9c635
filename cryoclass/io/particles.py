"""Particles: canonical metadata plus a lazy image source, read from RELION or CryoSPARC files.

Example
-------
>>> import numpy as np
>>> from cryoclass.io.particles import Particles
>>> parts = Particles.from_arrays(
...     np.zeros((4, 16, 16), np.float32),
...     {"rotations": np.tile(np.eye(3), (4, 1, 1)), "pixel_size_A": 2.0,
...      "defocus_u_A": 15000.0})
>>> len(parts), parts.box, parts.pixel_size_A, parts.rotations.shape
(4, 16, 2.0, (4, 3, 3))
>>> parts.subset([3, 1]).meta["uid"].tolist()
[3, 1]
"""

from __future__ import annotations

import os
from typing import Any, Literal

import mrcfile
import numpy as np
import pandas as pd

from ..errors import InputFileError, ParameterError
from ._meta import (
    CANONICAL_COLUMNS,
    finalize_meta,
    rotations_from_meta,
    rotations_to_columns,
)
from .mrc import atomic_path
from .source import ArrayImageSource, ImageSource, MrcsImageSource, SubsetImageSource

__all__ = [
    "Particles",
    "read_particles",
    "write_particles_with_images",
    "ImageSource",
    "MrcsImageSource",
    "ArrayImageSource",
    "SubsetImageSource",
    "CANONICAL_COLUMNS",
]

SourceFormat = Literal["star", "cs", "memory"]

#: Defaults used by :meth:`Particles.from_arrays` for optics not given.
MEMORY_DEFAULTS = {"voltage_kV": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}


class Particles:
    """N particles: canonical metadata and their images.

    Parameters
    ----------
    meta : pandas.DataFrame
        One row per particle, index ``0..N-1``, with the columns of
        :data:`cryoclass.io._meta.CANONICAL_COLUMNS` (units in the names; rotations are RELION
        matrices ``A`` stored row-major as ``rotation_00`` … ``rotation_22``).
    images : ImageSource
        Lazy images, ``len(images) == N``.
    source_path : str, optional
        File the particles were read from.
    source_format : {'star', 'cs', 'memory'}
        Format of ``source_path``.
    original : pandas.DataFrame or numpy.ndarray, optional
        The raw input table (star particle block, or the ``.cs`` structured array merged with its
        passthrough), row-aligned with ``meta``; writers start from it so nothing is lost.
    optics : pandas.DataFrame, optional
        The star ``data_optics`` table (RELION 3.1+ input).
    """

    def __init__(
        self,
        meta: pd.DataFrame,
        images: ImageSource,
        source_path: str | None = None,
        source_format: SourceFormat = "memory",
        original: pd.DataFrame | np.ndarray | None = None,
        optics: pd.DataFrame | None = None,
    ):
        missing = [c for c in CANONICAL_COLUMNS if c not in meta.columns]
        if missing:
            raise ValueError(f"Particles: metadata lacks the columns {missing}")
        if len(meta) != len(images):
            raise ValueError(f"Particles: {len(meta)} metadata rows but {len(images)} images")
        if original is not None and len(original) != len(meta):
            raise ValueError(f"Particles: {len(original)} original rows but {len(meta)} particles")
        if source_format not in ("star", "cs", "memory"):
            raise ValueError(f"Particles: unknown source_format {source_format!r}")
        self.meta = meta.reset_index(drop=True)
        self.images = images
        self.source_path = source_path
        self.source_format: SourceFormat = source_format
        self.original = original
        self.optics = optics

    def __len__(self) -> int:
        return len(self.meta)

    def __repr__(self) -> str:
        src = self.source_path or "memory"
        return f"Particles(n={len(self)}, box={self.box}, source={src!r} [{self.source_format}])"

    @property
    def rotations(self) -> np.ndarray:
        """RELION matrices ``A``, shape ``(N, 3, 3)`` float64 (see :mod:`cryoclass.conventions`)."""
        return rotations_from_meta(self.meta)

    @property
    def box(self) -> int:
        """Image box size ``D`` in pixels."""
        return self.images.box

    @property
    def pixel_size_A(self) -> float:
        """The common pixel size in Å; :class:`InputFileError` if particles disagree."""
        apix = self.meta["pixel_size_A"].to_numpy(np.float64)
        if apix.size == 0:
            raise ValueError("Particles: no particles, so no pixel size")
        lo, hi = float(apix.min()), float(apix.max())
        if hi - lo > 1e-4 * hi:
            raise InputFileError(
                self.source_path or "<in-memory particles>",
                f"particles have different pixel sizes ({lo:g} to {hi:g} Å); "
                "re-extract them at one pixel size",
            )
        return float(apix[0])

    def subset(self, indices: Any) -> Particles:
        """The particles ``indices`` (int array or boolean mask), original rows included."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        images = self.images.subset(idx)  # validates the indices
        original: pd.DataFrame | np.ndarray | None = self.original
        if isinstance(original, pd.DataFrame):
            original = original.iloc[idx].reset_index(drop=True)
        elif original is not None:
            original = original[idx]
        return Particles(
            self.meta.iloc[idx].reset_index(drop=True),
            images,
            self.source_path,
            self.source_format,
            original,
            self.optics,
        )

    @classmethod
    def from_arrays(
        cls, images: np.ndarray | ImageSource, meta: pd.DataFrame | dict[str, Any]
    ) -> Particles:
        """In-memory particles (simulations, tests).

        Parameters
        ----------
        images : numpy.ndarray, shape (N, D, D), or ImageSource
        meta : DataFrame or dict
            Canonical columns (scalars broadcast). Required: the rotations — either
            ``rotation_00`` … ``rotation_22`` or a ``"rotations"`` entry of shape ``(N, 3, 3)``
            (RELION matrices) — ``pixel_size_A`` and ``defocus_u_A``. Optional columns get the
            defaults of the readers, optics ``300 kV, Cs 2.7 mm, amplitude contrast 0.1``, and
            ``image_path=""``, ``image_index=0..N-1``.
        """
        source = images if isinstance(images, ImageSource) else ArrayImageSource(images)
        n = len(source)
        cols: dict[str, Any] = (
            {str(k): v.to_numpy() for k, v in meta.items()}
            if isinstance(meta, pd.DataFrame)
            else dict(meta)
        )
        if "rotations" in cols:
            rot = np.asarray(cols.pop("rotations"), dtype=np.float64)
            if rot.shape != (n, 3, 3):
                raise ValueError(f"rotations has shape {rot.shape}, expected ({n}, 3, 3)")
            cols.update(rotations_to_columns(rot))
        needed = ["rotation_00", "pixel_size_A", "defocus_u_A"]
        missing = [c for c in needed if c not in cols]
        if missing:
            raise ValueError(f"Particles.from_arrays: meta lacks {missing}")
        for name, value in MEMORY_DEFAULTS.items():
            cols.setdefault(name, value)
        cols.setdefault("box_px", source.box)
        cols.setdefault("image_path", "")
        cols.setdefault("image_index", np.arange(n))
        cols = {k: np.asarray(v) for k, v in cols.items()}
        full = finalize_meta({k: cols.get(k) for k in CANONICAL_COLUMNS}, n)
        return cls(full, source, None, "memory")


def read_particles(
    path: str | os.PathLike,
    passthrough: str | os.PathLike | list[str | os.PathLike] | None = None,
    project_dir: str | None = None,
) -> Particles:
    """Read particles from a RELION ``.star`` (3.0 or 3.1+) or CryoSPARC ``.cs`` file.

    Parameters
    ----------
    path : str or PathLike
        ``.star`` or ``.cs`` file.
    passthrough : path or list of paths, optional
        CryoSPARC passthrough ``.cs`` file(s), merged by ``uid`` (fields of ``path`` win).
    project_dir : str, optional
        Directory that image paths are relative to (CryoSPARC project directory / RELION project
        directory). Default: the file's directory (and, for ``.cs``, its parents; for ``.star``,
        then the current directory).

    Returns
    -------
    Particles
        Images are memory-mapped lazily; each stack's header has been checked.

    Raises
    ------
    InputFileError
        Missing or malformed file, missing columns, non-finite poses/shifts/defocus, missing
        stacks, indices past the end of a stack, mixed box sizes.
    """
    path = os.path.abspath(os.fspath(path))
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".star", ".cs"):
        raise InputFileError(path, f"unknown particle file type {ext!r} (expected .star or .cs)")
    if not os.path.isfile(path):
        raise InputFileError(path, "file not found")
    if ext == ".star":
        from .star import read_star_particles

        if passthrough is not None:
            raise ParameterError(
                "passthrough", f"passthrough files apply to CryoSPARC .cs input only, not {path}"
            )
        sd = read_star_particles(path, project_dir)
        return Particles(sd.meta, sd.images, path, "star", sd.original, sd.optics)
    from .cryosparc import read_cs_particles

    cd = read_cs_particles(path, passthrough, project_dir)
    return Particles(cd.meta, cd.images, path, "cs", cd.original)


def _write_stack(path: str, particles: Particles, chunk_size: int) -> None:
    n, box = len(particles), particles.box
    with atomic_path(path, suffix=".mrcs") as tmp:
        with mrcfile.new_mmap(tmp, shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = particles.pixel_size_A
            for idx, imgs in particles.images.chunks(chunk_size):
                mrc.data[idx[0] : idx[-1] + 1] = imgs
            mrc.update_header_stats()


def write_particles_with_images(
    star_path: str | os.PathLike,
    particles: Particles,
    mrcs_path: str | os.PathLike,
    cs_path: str | os.PathLike | None = None,
    *,
    extra: dict[str, Any] | None = None,
    chunk_size: int = 1024,
) -> Particles:
    """Write the images as one float32 ``.mrcs`` stack and the metadata as a star (and ``.cs``).

    Parameters
    ----------
    star_path : str or PathLike
        RELION 3.1 star file to write; its image names point into ``mrcs_path``, relative to the
        star's directory.
    particles : Particles
        Any particles (in-memory images are the usual case).
    mrcs_path : str or PathLike
        Stack to write (voxel size = the particles' pixel size).
    cs_path : str or PathLike, optional
        Also write a CryoSPARC ``.cs`` (``blob/path`` relative to its directory).
    extra : dict, optional
        Extra star columns (as in :func:`cryoclass.io.star.write_star`).
    chunk_size : int
        Images copied per step.

    Returns
    -------
    Particles
        The particles read back from ``star_path`` (images memory-mapped from ``mrcs_path``).
    """
    from .cryosparc import write_cs
    from .star import write_star

    star_path, mrcs_path = os.path.abspath(star_path), os.path.abspath(mrcs_path)
    _write_stack(mrcs_path, particles, chunk_size)
    n = len(particles)
    meta = particles.meta.copy()
    meta["image_path"] = mrcs_path
    meta["image_index"] = np.arange(n, dtype=np.int64)
    src = MrcsImageSource(np.full(n, mrcs_path), np.arange(n))
    written = Particles(
        meta, src, None, particles.source_format, particles.original, particles.optics
    )
    rel = os.path.relpath(mrcs_path, os.path.dirname(star_path))
    names = [f"{i + 1:06d}@{rel}" for i in range(n)]
    write_star(star_path, written, extra=extra, image_names=names)
    if cs_path is not None:
        cs_path = os.path.abspath(cs_path)
        cs_extra = None
        if particles.source_format == "cs":
            rel_cs = os.path.relpath(mrcs_path, os.path.dirname(cs_path))
            cs_extra = {
                "blob/path": np.full(n, rel_cs.encode()),
                "blob/idx": np.arange(n, dtype=np.uint32),
            }
        write_cs(cs_path, written, extra=cs_extra)
    return read_particles(star_path)
