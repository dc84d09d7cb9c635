"""Find the particle files in a project directory (the dashboard's suggestions).

A RELION or CryoSPARC project holds many ``.star`` and ``.cs`` files; only some are particle
sets. Each candidate is recognised by its header, never by its name, and never read whole:

- ``.star``: a ``data_particles`` block (RELION 3.1+) or an ``_rlnImageName`` label (RELION 3.0)
  within the first 64 KiB; models, optimisers, micrograph lists, ``job.star`` and pipelines are
  left out.
- ``.cs`` (NumPy ``.npy`` structured arrays): particle fields (``blob/path``, ``alignments3D/*``,
  ``ctf/*``) make it a particle file, and a passthrough one when its name says so, as CryoSPARC
  names them (``J10_passthrough_particles.cs``: the upstream fields, merged by ``uid``). Exposure
  and other ``.cs`` files are left out.

The walk is bounded (depth, entries looked at, files returned) so a project with millions of
movie frames does not stall a notebook.

Example
-------
>>> from cryoclass.io.discover import find_particle_files      # doctest: +SKIP
>>> find_particle_files(".")                                    # doctest: +SKIP
{'particles': ['Refine3D/job010/run_data.star', ...], 'passthrough': [...]}
"""

from __future__ import annotations

import os
from typing import Literal

__all__ = ["find_particle_files", "particle_file_kind"]

Kind = Literal["particles", "passthrough"]

#: Directories never entered: environments, caches, version control.
_SKIP_DIRS = {"node_modules", "__pycache__", "site-packages", "venv", "env"}
_STAR_HEAD_BYTES = 64 * 1024


def _star_kind(path: str) -> Kind | None:
    with open(path, "rb") as fh:
        head = fh.read(_STAR_HEAD_BYTES)
    if b"data_particles" in head or b"_rlnImageName" in head:
        return "particles"
    return None


def _cs_kind(path: str) -> Kind | None:
    from .cryosparc import _npy_header  # the .cs reader's header parser (no data read)

    with open(path, "rb") as fh:
        _, dtype, _ = _npy_header(path, fh)
    names = dtype.names or ()
    if not ("blob/path" in names or any(n.startswith(("alignments3D/", "ctf/")) for n in names)):
        return None
    return "passthrough" if "passthrough" in os.path.basename(path) else "particles"


def particle_file_kind(path: str | os.PathLike) -> Kind | None:
    """``"particles"``, ``"passthrough"`` (a CryoSPARC ``.cs`` named as its passthrough files
    are) or None, from the file's header; None also for a file that cannot be read or parsed."""
    p = os.fspath(path)
    try:
        if p.endswith(".star"):
            return _star_kind(p)
        if p.endswith(".cs"):
            return _cs_kind(p)
    except Exception:  # unreadable, not an .npy file, a malformed header: not a candidate
        return None
    return None


def find_particle_files(
    root: str | os.PathLike = ".",
    max_depth: int = 3,
    max_entries: int = 20_000,
    max_files: int = 300,
) -> dict[str, list[str]]:
    """Particle and passthrough files under ``root``, as paths relative to it (sorted).

    ``max_depth``: directory levels below ``root`` that are searched (RELION's
    ``Refine3D/job010/run_data.star`` is at depth 2). Hidden directories, symbolic links and
    environment/cache directories are skipped. The walk stops after ``max_entries`` directory
    entries or ``max_files`` files found.
    """
    root = os.fspath(root)
    found: dict[str, list[str]] = {"particles": [], "passthrough": []}
    seen = 0
    stack: list[tuple[str, int]] = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            seen += 1
            if seen > max_entries:
                stack.clear()
                break
            if e.name.startswith("."):
                continue
            try:
                if e.is_symlink():  # e.g. run_data.star → particles.star: listed once
                    continue
                if e.is_dir():
                    if depth < max_depth and e.name not in _SKIP_DIRS:
                        stack.append((e.path, depth + 1))
                    continue
            except OSError:
                continue
            if not e.name.endswith((".star", ".cs")):
                continue
            kind = particle_file_kind(e.path)
            if kind is not None:
                found[kind].append(os.path.relpath(e.path, root))
                if sum(map(len, found.values())) >= max_files:
                    stack.clear()
                    break
    return {k: sorted(v) for k, v in found.items()}
