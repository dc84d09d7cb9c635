"""Particle and volume I/O: RELION ``.star``/``.mrcs``, CryoSPARC ``.cs``, MRC maps.

Example
-------
>>> from cryoclass.io import read_particles, write_star, write_cs   # doctest: +SKIP
>>> parts = read_particles("J12/J12_particles.cs",
...                        passthrough="J12/J12_passthrough_particles.cs")  # doctest: +SKIP
>>> for idx, imgs in parts.images.chunks(1000):                   # doctest: +SKIP
...     ...                                                        # (m, D, D) float32
>>> write_star("particles.star", parts)                            # doctest: +SKIP
"""

from __future__ import annotations

from ._meta import CANONICAL_COLUMNS
from .cryosparc import load_cs, write_cs
from .mrc import MrcInfo, mrc_info, open_stack, read_mrc, write_mrc
from .particles import Particles, read_particles, write_particles_with_images
from .source import ArrayImageSource, ImageSource, MrcsImageSource, SubsetImageSource
from .star import read_star, write_star

__all__ = [
    "CANONICAL_COLUMNS",
    "Particles",
    "read_particles",
    "write_particles_with_images",
    "ImageSource",
    "MrcsImageSource",
    "ArrayImageSource",
    "SubsetImageSource",
    "read_star",
    "write_star",
    "load_cs",
    "write_cs",
    "read_mrc",
    "write_mrc",
    "open_stack",
    "mrc_info",
    "MrcInfo",
]
