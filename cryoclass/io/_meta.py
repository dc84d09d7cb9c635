"""Canonical particle metadata: column names, defaults, checks and shared helpers.

Every reader (RELION ``.star``, CryoSPARC ``.cs``, in-memory) produces one ``pandas.DataFrame`` with
the columns :data:`CANONICAL_COLUMNS`, index ``0..N-1``; every writer builds its format from it.

Example
-------
>>> import numpy as np
>>> from cryoclass.io._meta import rotation_columns, default_half_sets
>>> rotation_columns()[:2]
['rotation_00', 'rotation_01']
>>> default_half_sets(np.arange(6, dtype=np.int64)).tolist()
[1, 0, 0, 1, 0, 0]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputFileError

__all__ = [
    "CANONICAL_COLUMNS",
    "ROTATION_COLUMNS",
    "rotation_columns",
    "rotations_from_meta",
    "rotations_to_columns",
    "default_half_sets",
    "check_finite",
    "check_meta",
    "group_ids",
    "resolve_paths",
    "finalize_meta",
]


def rotation_columns() -> list[str]:
    """``rotation_00`` … ``rotation_22``: the RELION matrix ``A`` in row-major order."""
    return [f"rotation_{i}{j}" for i in range(3) for j in range(3)]


ROTATION_COLUMNS = rotation_columns()

#: Canonical columns and their dtypes (units in the names; see ``cryoclass.conventions``).
CANONICAL_COLUMNS: dict[str, str] = {
    **{c: "float64" for c in ROTATION_COLUMNS},
    "shift_x_A": "float64",
    "shift_y_A": "float64",
    "defocus_u_A": "float64",
    "defocus_v_A": "float64",
    "defocus_angle_deg": "float64",
    "voltage_kV": "float64",
    "cs_mm": "float64",
    "amplitude_contrast": "float64",
    "phase_shift_deg": "float64",
    "bfactor_A2": "float64",
    "pixel_size_A": "float64",
    "box_px": "int64",
    "optics_group": "int64",
    "half_set": "int64",
    "scale": "float64",
    "uid": "int64",
    "image_path": "str",
    "image_index": "int64",
}

#: Optional columns and the value used when a file does not give them.
DEFAULTS: dict[str, Any] = {
    "shift_x_A": 0.0,
    "shift_y_A": 0.0,
    "defocus_angle_deg": 0.0,
    "phase_shift_deg": 0.0,
    "bfactor_A2": 0.0,
    "scale": 1.0,
    "optics_group": 1,
}


def rotations_from_meta(meta: pd.DataFrame) -> np.ndarray:
    """RELION matrices ``A`` of shape ``(N, 3, 3)`` float64 from the ``rotation_ij`` columns."""
    return meta[ROTATION_COLUMNS].to_numpy(dtype=np.float64).reshape(-1, 3, 3)


def rotations_to_columns(A: np.ndarray) -> dict[str, np.ndarray]:
    """``(N, 3, 3)`` matrices → ``{'rotation_ij': (N,) array}``."""
    flat = np.asarray(A, dtype=np.float64).reshape(-1, 9)
    return {c: flat[:, k] for k, c in enumerate(ROTATION_COLUMNS)}


def default_half_sets(uid: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random half-set (0/1) per particle, from a hash of its uid.

    A particle keeps its half-set whatever the file order or subset.
    """
    x = np.asarray(uid).astype(np.uint64)
    with np.errstate(over="ignore"):  # splitmix64 finaliser; uint64 arithmetic wraps
        x = x * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(63)).astype(np.int64)


def check_finite(path: str, columns: Mapping[str, Any]) -> None:
    """Raise :class:`InputFileError` naming every column with NaN/inf values and the row count."""
    problems = []
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(v.reshape(v.shape[0], -1) if v.ndim > 1 else v[:, None])
        bad_rows = np.asarray(bad.any(axis=1))
        n_bad = int(bad_rows.sum())
        if n_bad:
            first = int(np.flatnonzero(bad_rows)[0])
            problems.append(f"{name} has {n_bad} rows with NaN/inf (first: row {first})")
    if problems:
        raise InputFileError(path, "non-finite values: " + "; ".join(problems))


def check_meta(path: str, meta: pd.DataFrame) -> pd.DataFrame:
    """Check canonical metadata for values that would turn into NaN/inf later; return it.

    Every numeric column must be finite; pixel size and voltage positive; amplitude contrast in
    [0, 1]; a negative CTF B-factor must not amplify Nyquist by more than e^60. Raises
    :class:`InputFileError` naming the file, the column and the first bad row.
    """
    numeric = [c for c, t in CANONICAL_COLUMNS.items() if t in ("float64", "int64")]
    check_finite(path, {c: meta[c].to_numpy() for c in numeric})
    apix = meta["pixel_size_A"].to_numpy(np.float64)
    nyquist_u2 = 1.0 / np.maximum(2.0 * apix, 1e-30) ** 2
    rules = {
        "pixel_size_A": (apix <= 0, "must be > 0"),
        "voltage_kV": (meta["voltage_kV"].to_numpy() <= 0, "must be > 0"),
        "amplitude_contrast": (
            ~meta["amplitude_contrast"].between(0.0, 1.0).to_numpy(),
            "must be in [0, 1]",
        ),
        "bfactor_A2": (
            -meta["bfactor_A2"].to_numpy() / 4.0 * nyquist_u2 > 60.0,
            "is so negative that the CTF envelope overflows (exp(-B/4·|ξ|²) > e^60 at Nyquist)",
        ),
        "half_set": (~meta["half_set"].isin((0, 1)).to_numpy(), "must be 0 or 1"),
    }
    problems = []
    for name, (bad, what) in rules.items():
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0])
            value = meta[name].iloc[row]
            problems.append(f"{name} {what} ({int(np.sum(bad))} rows; first: row {row}, {value!r})")
    if problems:
        raise InputFileError(path, "invalid values: " + "; ".join(problems))
    return meta


def group_ids(keys: Sequence[Any]) -> np.ndarray:
    """1-based group number of each row from the unique combinations of ``keys`` (in order of
    first appearance)."""
    table = pd.DataFrame({f"k{i}": np.asarray(k) for i, k in enumerate(keys)})
    codes = table.groupby(list(table.columns), sort=False, dropna=False).ngroup()
    return codes.to_numpy(dtype=np.int64) + 1


def resolve_paths(source: str, names: Iterable[str], bases: Sequence[str]) -> dict[str, str]:
    """Absolute path of each distinct stack name, trying ``bases`` in order.

    Absolute names are used as they are. Raises :class:`InputFileError` naming the first missing
    stack and where it was looked for.
    """
    found: dict[str, str] = {}
    hit: str | None = None
    for name in dict.fromkeys(str(n) for n in names):
        if os.path.isabs(name):
            candidates = [name]
        else:
            order = ([hit] if hit else []) + [b for b in bases if b != hit]
            candidates = [os.path.join(b, name) for b in order]
        for cand in candidates:
            if os.path.isfile(cand):
                found[name] = os.path.abspath(cand)
                if not os.path.isabs(name):
                    hit = cand[: len(cand) - len(name)].rstrip(os.sep) or os.sep
                break
        else:
            where = ", ".join(dict.fromkeys(os.path.dirname(c) or "." for c in candidates))
            raise InputFileError(
                source, f"particle image stack {name!r} not found (looked in: {where})"
            )
    return found


def finalize_meta(columns: dict[str, Any], n: int) -> pd.DataFrame:
    """Build the canonical DataFrame: fill defaults, cast dtypes, order columns.

    ``defocus_v_A`` defaults to ``defocus_u_A``; ``uid`` to ``0..N-1``; ``half_set`` to
    :func:`default_half_sets` of the uids.
    """
    cols = dict(columns)
    for name, value in DEFAULTS.items():
        if cols.get(name) is None:
            cols[name] = np.full(n, value)
    if cols.get("defocus_v_A") is None:
        cols["defocus_v_A"] = cols["defocus_u_A"]
    if cols.get("uid") is None:
        cols["uid"] = np.arange(n, dtype=np.int64)
    if cols.get("half_set") is None:
        cols["half_set"] = default_half_sets(np.asarray(cols["uid"]))
    missing = [c for c in CANONICAL_COLUMNS if cols.get(c) is None]
    if missing:
        raise ValueError(f"particle metadata lacks the columns {missing}")
    data = {}
    for name, dtype in CANONICAL_COLUMNS.items():
        v = np.asarray(cols[name])
        if v.ndim == 0:
            v = np.full(n, v[()])
        if v.shape != (n,):
            raise ValueError(f"column {name!r} has shape {v.shape}, expected ({n},)")
        data[name] = v.astype(dtype)
    return pd.DataFrame(data, index=pd.RangeIndex(n))
