"""CryoSPARC ``.cs`` particle files (NumPy structured arrays with ``group/field`` columns).

Reading refuses pickled (object) arrays, merges an optional passthrough file by ``uid`` and gives
the canonical metadata of :mod:`cryoclass.io._meta`; writing keeps every field of a ``.cs`` input
and builds the CryoSPARC fields from the metadata otherwise. ``blob/path`` is relative to the
CryoSPARC project directory: it is resolved against ``project_dir`` if given, else the ``.cs``
file's directory and its parents.

Example
-------
>>> from cryoclass.io import read_particles, write_cs                  # doctest: +SKIP
>>> parts = read_particles("J42/J42_particles.cs",
...                        passthrough="J42/J42_passthrough_particles.cs")  # doctest: +SKIP
>>> write_cs("out.cs", parts, extra={"alignments3D/class": labels})    # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..conventions import cryosparc_pose_to_matrix, matrix_to_cryosparc_pose
from ..errors import InputFileError
from ._meta import (
    check_finite,
    check_meta,
    finalize_meta,
    group_ids,
    resolve_paths,
    rotations_from_meta,
    rotations_to_columns,
)
from .mrc import atomic_path
from .source import MrcsImageSource

if TYPE_CHECKING:
    from .particles import Particles

__all__ = ["load_cs", "read_cs_particles", "write_cs", "merge_passthrough", "CsData"]

REQUIRED = (
    "uid",
    "blob/path",
    "blob/idx",
    "ctf/df1_A",
    "ctf/accel_kv",
    "ctf/cs_mm",
    "ctf/amp_contrast",
)


def load_cs(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.cs`` file as a structured array, refusing pickles and object fields.

    The ``.npy`` header is parsed and checked first (1D structured array, no object fields, data
    size consistent with the file size), so a hostile header can neither run code nor make NumPy
    allocate more memory than the file holds.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileError(path, "file not found")
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic[:1] == b"\x80":
            raise InputFileError(
                path, "is a Python pickle; refusing to load it (not a CryoSPARC .cs)"
            )
        if magic != b"\x93NUMPY":
            raise InputFileError(path, "not a readable .cs file (no NumPy .npy header)")
        f.seek(0)
        shape, dtype, data_offset = _npy_header(path, f)
    _check_npy_header(path, shape, dtype, data_offset)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise InputFileError(
                path, "contains pickled Python objects; refusing to load it (not a CryoSPARC .cs)"
            ) from None
        raise InputFileError(path, f"not a readable .cs (NumPy) file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InputFileError(path, f"not a readable .cs (NumPy) file ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None or arr.ndim != 1:
        raise InputFileError(path, "not a CryoSPARC dataset (expected a 1D structured array)")
    return arr


def _npy_header(path: str, f: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` from an open ``.npy`` file (any malformed header →
    :class:`InputFileError`; NumPy parses it with ``ast.literal_eval``, never ``eval``)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:  # noqa: BLE001 - ValueError, SyntaxError, TokenError, ...
        problem = f"not a readable .cs file (malformed NumPy header: {type(exc).__name__}: {exc})"
        raise InputFileError(path, problem) from None
    return tuple(shape), np.dtype(dtype), int(f.tell())


def _check_npy_header(path: str, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    if dtype.hasobject:
        raise InputFileError(
            path, "contains pickled Python objects; refusing to load it (not a CryoSPARC .cs)"
        )
    if dtype.names is None or len(shape) != 1:
        raise InputFileError(path, "not a CryoSPARC dataset (expected a 1D structured array)")
    need = offset + shape[0] * dtype.itemsize
    size = os.path.getsize(path)
    if size < need:
        raise InputFileError(
            path,
            f"file is truncated: its header announces {shape[0]} rows of {dtype.itemsize} bytes "
            f"({need} bytes) but the file has {size} bytes",
        )


def _with_fields(arr: np.ndarray, fields: dict[str, np.ndarray]) -> np.ndarray:
    """Copy of a structured array with fields added or replaced (new dtype where needed)."""
    names = [n for n in arr.dtype.names or () if n not in fields]
    descr: list[Any] = [(n, arr.dtype.fields[n][0]) for n in names]  # type: ignore[index]
    for name, values in fields.items():
        v = np.asarray(values)
        if v.dtype.kind == "O":
            raise TypeError(f"field {name!r}: object arrays cannot be stored in a .cs file")
        if v.dtype.kind == "U":
            v = np.char.encode(v, "utf-8")
        fields[name] = v
        descr.append((name, v.dtype, v.shape[1:]) if v.ndim > 1 else (name, v.dtype))
    out = np.empty(len(arr), dtype=descr)
    for n in names:
        out[n] = arr[n]
    for name, v in fields.items():
        out[name] = v
    return out


def merge_passthrough(main: np.ndarray, passthrough: np.ndarray, pt_path: str) -> np.ndarray:
    """Add the passthrough fields that ``main`` lacks, matching rows by ``uid``."""
    if "uid" not in (passthrough.dtype.names or ()):
        raise InputFileError(pt_path, "passthrough file has no uid field")
    order = np.argsort(passthrough["uid"], kind="stable")
    sorted_uid = passthrough["uid"][order]
    pos = np.clip(np.searchsorted(sorted_uid, main["uid"]), 0, max(len(sorted_uid) - 1, 0))
    found = (sorted_uid[pos] == main["uid"]) if len(sorted_uid) else np.zeros(len(main), bool)
    if not found.all():
        raise InputFileError(
            pt_path,
            f"uids do not match the particle file: {int((~found).sum())} of {len(main)} "
            "particles are not in the passthrough file",
        )
    rows = passthrough[order[pos]]
    new = {n: rows[n] for n in passthrough.dtype.names or () if n not in (main.dtype.names or ())}
    return _with_fields(main, new) if new else main


@dataclass
class CsData:
    """What :func:`read_cs_particles` returns (see :class:`cryoclass.io.Particles`)."""

    meta: pd.DataFrame
    original: np.ndarray
    images: MrcsImageSource


def _stack_bases(path: str, project_dir: str | None) -> list[str]:
    if project_dir:
        return [os.path.abspath(project_dir)]
    bases, d = [], os.path.dirname(path)
    while True:
        bases.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            return bases
        d = parent


def read_cs_particles(
    path: str | os.PathLike,
    passthrough: str | os.PathLike | list[str | os.PathLike] | None = None,
    project_dir: str | None = None,
) -> CsData:
    """Read a CryoSPARC particle ``.cs`` (and passthrough files) into canonical metadata."""
    path = os.path.abspath(os.fspath(path))
    arr = load_cs(path)
    pts = [] if passthrough is None else passthrough
    for pt in [pts] if isinstance(pts, str | os.PathLike) else pts:
        arr = merge_passthrough(arr, load_cs(pt), os.fspath(pt))
    fields = set(arr.dtype.names or ())
    if "alignments3D/pose" not in fields:
        raise InputFileError(
            path,
            "no alignments3D/pose field: these particles have no 3D poses (use the particles of a "
            "refinement job, or pass its passthrough file)",
        )
    missing = [f for f in REQUIRED if f not in fields]
    if missing:
        raise InputFileError(path, f"missing required fields: {', '.join(missing)}")
    if len(arr) == 0:
        raise InputFileError(path, "the dataset has no particles")
    try:
        raw = np.char.decode(np.asarray(arr["blob/path"]).astype(bytes), "utf-8")
    except (UnicodeDecodeError, TypeError, ValueError) as exc:
        raise InputFileError(path, f"blob/path is not UTF-8 text ({exc})") from None
    names = np.char.lstrip(raw, ">")  # CryoSPARC marks imported (symlinked) blobs with '>'
    resolved = resolve_paths(path, np.unique(names), _stack_bases(path, project_dir))
    image_path = np.array([resolved[s] for s in names])
    index = arr["blob/idx"].astype(np.int64)
    try:
        images = MrcsImageSource(image_path, index)
    except InputFileError as exc:
        raise InputFileError(exc.path, f"{exc.problem} (referenced by {path})") from None
    meta = _cs_meta(path, arr, images)
    meta["image_path"] = image_path
    meta["image_index"] = index
    return CsData(meta, arr, images)


def _cs_meta(path: str, arr: np.ndarray, images: MrcsImageSource) -> pd.DataFrame:
    fields = set(arr.dtype.names or ())

    def get(name: str, dtype: Any = np.float64) -> Any:
        return np.asarray(arr[name], dtype=dtype) if name in fields else None

    if "blob/shape" in fields:
        shapes = np.unique(arr["blob/shape"].reshape(len(arr), -1), axis=0)
        if len(shapes) > 1 or np.any(shapes[0] != images.box):
            raise InputFileError(
                path,
                f"blob/shape values {shapes.tolist()} differ from the stacks' box {images.box} "
                "(mixed box sizes)",
            )
    apix = get("blob/psize_A")
    if apix is None:
        if images.infos[0].pixel_size_A <= 0:
            raise InputFileError(path, "no blob/psize_A field and the stacks set no pixel size")
        apix = np.full(len(arr), images.infos[0].pixel_size_A)
    shift_apix = get("alignments3D/psize_A")
    shift_apix = apix if shift_apix is None else shift_apix
    pose, shift = get("alignments3D/pose"), get("alignments3D/shift")
    du, dv, dang = get("ctf/df1_A"), get("ctf/df2_A"), get("ctf/df_angle_rad")
    finite = {"alignments3D/pose": pose, "ctf/df1_A": du, "blob/psize_A": apix}
    finite.update(
        {
            k: v
            for k, v in (
                ("alignments3D/shift", shift),
                ("ctf/df2_A", dv),
                ("ctf/df_angle_rad", dang),
            )
            if v is not None
        }
    )
    check_finite(path, finite)
    shift_A = None if shift is None else shift.reshape(len(arr), 2) * shift_apix[:, None]
    volt, cs, ac = get("ctf/accel_kv"), get("ctf/cs_mm"), get("ctf/amp_contrast")
    exp_group = get("ctf/exp_group_id", np.int64)
    group = group_ids([volt, cs, ac, apix] + ([exp_group] if exp_group is not None else []))
    scale = get("alignments3D/alpha")
    phase = get("ctf/phase_shift_rad")
    columns: dict[str, Any] = {
        **rotations_to_columns(cryosparc_pose_to_matrix(pose.reshape(len(arr), 3))),
        "shift_x_A": None if shift_A is None else shift_A[:, 0],
        "shift_y_A": None if shift_A is None else shift_A[:, 1],
        "defocus_u_A": du,
        "defocus_v_A": dv,
        "defocus_angle_deg": None if dang is None else np.rad2deg(dang),
        "voltage_kV": volt,
        "cs_mm": cs,
        "amplitude_contrast": ac,
        "phase_shift_deg": None if phase is None else np.rad2deg(phase),
        "bfactor_A2": get("ctf/bfactor"),
        "pixel_size_A": apix,
        "box_px": images.box,
        "optics_group": group,
        "half_set": get("alignments3D/split", np.int64),
        "scale": scale if scale is not None else get("ctf/scale"),
        "uid": arr["uid"].astype(np.int64),
        "image_path": "",
        "image_index": 0,
    }
    return check_meta(path, finalize_meta(columns, len(arr)))


# --------------------------------------------------------------------------- writing
def cs_fields_from_meta(meta: pd.DataFrame, base: str) -> dict[str, np.ndarray]:
    """CryoSPARC fields built from canonical metadata; ``blob/path`` relative to ``base``."""
    n = len(meta)
    paths = meta["image_path"].astype(str).to_numpy()
    if np.any(paths == ""):
        raise ValueError(
            "these particles have no image files (in-memory images); write them with "
            "write_particles_with_images first"
        )
    rel = {p: os.path.relpath(p, base) for p in np.unique(paths)}
    apix = meta["pixel_size_A"].to_numpy(np.float64)
    box = meta["box_px"].to_numpy(np.uint32)
    f32 = lambda c: meta[c].to_numpy(np.float32)  # noqa: E731
    shift = np.stack([meta["shift_x_A"], meta["shift_y_A"]], axis=1) / apix[:, None]
    return {
        "uid": meta["uid"].to_numpy().astype(np.uint64),
        "blob/path": np.array([rel[p] for p in paths]).astype(bytes),
        "blob/idx": meta["image_index"].to_numpy(np.uint32),
        "blob/shape": np.stack([box, box], axis=1),
        "blob/psize_A": apix.astype(np.float32),
        "alignments3D/split": meta["half_set"].to_numpy(np.uint32),
        "alignments3D/shift": shift.astype(np.float32),
        "alignments3D/pose": matrix_to_cryosparc_pose(rotations_from_meta(meta)).astype(np.float32),
        "alignments3D/psize_A": apix.astype(np.float32),
        "alignments3D/alpha": f32("scale"),
        "ctf/exp_group_id": meta["optics_group"].to_numpy(np.uint32),
        "ctf/accel_kv": f32("voltage_kV"),
        "ctf/cs_mm": f32("cs_mm"),
        "ctf/amp_contrast": f32("amplitude_contrast"),
        "ctf/df1_A": f32("defocus_u_A"),
        "ctf/df2_A": f32("defocus_v_A"),
        "ctf/df_angle_rad": np.deg2rad(meta["defocus_angle_deg"].to_numpy()).astype(np.float32),
        "ctf/phase_shift_rad": np.deg2rad(meta["phase_shift_deg"].to_numpy()).astype(np.float32),
        "ctf/scale": np.ones(n, np.float32),
        "ctf/bfactor": f32("bfactor_A2"),
    }


def write_cs(
    path: str | os.PathLike,
    particles: Particles,
    extra: dict[str, np.ndarray] | None = None,
    *,
    relative_to: str | None = None,
) -> None:
    """Write particles as a CryoSPARC ``.cs`` file (atomically).

    Parameters
    ----------
    path : str or PathLike
        Output file (written as ``.npy`` data to a temporary file, then renamed).
    particles : Particles
        From a ``.cs`` file: every field (passthrough included) and the uids are kept. From a star
        file or memory: the CryoSPARC fields are built from the metadata.
    extra : dict of str to ndarray, optional
        Fields to add or overwrite, first dimension N, e.g. ``alignments3D/class`` (int),
        ``alignments3D/class_ess``, ``alignments_class3D_{k}/class_posterior`` (float32).
    relative_to : str, optional
        Directory that new ``blob/path`` values are relative to (default: the output's directory;
        pass the CryoSPARC project directory for files imported into CryoSPARC).
    """
    path = os.path.abspath(os.fspath(path))
    n = len(particles)
    if particles.source_format == "cs" and isinstance(particles.original, np.ndarray):
        arr = particles.original
    else:
        base = os.path.abspath(relative_to) if relative_to else os.path.dirname(path)
        fields = cs_fields_from_meta(particles.meta, base)
        arr = _with_fields(np.empty(n, dtype=[("uid", "<u8")]), fields)
    if extra:
        for name, values in extra.items():
            if np.shape(values)[:1] != (n,):
                raise ValueError(
                    f"extra field {name!r} has shape {np.shape(values)}, expected ({n}, ...)"
                )
        arr = _with_fields(arr, dict(extra))
    with atomic_path(path, suffix=".cs") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
