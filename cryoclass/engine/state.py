"""Mutable EM state and its checkpoint (atomic ``.npz`` + JSON in ``OUTDIR/checkpoint/``).

A checkpoint is written after every iteration; a killed run resumes from the last one with the
same result as an uninterrupted run (batch order and subsets derive from the seed and the
iteration index, not from a running random state).

Example
-------
>>> from cryoclass.engine.state import EMState
>>> EMState().phase
'consensus'
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import to_numpy
from .reconstruct import ClassStats

__all__ = ["EMState", "save_checkpoint", "load_checkpoint", "CHECKPOINT_DIR"]

CHECKPOINT_DIR = "checkpoint"
_ARRAYS = (
    "sig2",
    "alpha",
    "consensus",
    "consensus_fsc",
    "consensus_tau2",
    "solvent_mask",
    "focus_mask",
    "volumes",
    "prev_volumes",
    "tau2",
    "fsc",
    "log_prior",
    "r",
    "ess",
    "hard",
)
_SCALARS = ("phase", "iteration", "global_iteration", "converged", "reason", "beta0")


@dataclass
class EMState:
    phase: str = "consensus"  #: next phase to run: consensus, init, oem, fem, finish
    iteration: int = 0  #: next iteration within the phase
    global_iteration: int = 0
    converged: bool = False
    reason: str = ""
    beta0: float | None = None  #: auto-tuned class similarity (None = use the parameter)
    sig2: Any = None
    alpha: Any = None
    consensus: Any = None
    consensus_fsc: Any = None
    consensus_tau2: Any = None
    solvent_mask: Any = None
    focus_mask: Any = None
    volumes: Any = None
    prev_volumes: Any = None
    tau2: Any = None
    fsc: Any = None
    log_prior: Any = None
    r: Any = None
    ess: Any = None
    hard: Any = None
    stats: ClassStats | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(outdir: str | os.PathLike, st: EMState, fingerprint: str) -> None:
    """Write the state atomically: arrays first (new file name), then the JSON that points at
    them, so a kill at any moment leaves the previous checkpoint or the new one, never a mix."""
    d = Path(outdir) / CHECKPOINT_DIR
    d.mkdir(parents=True, exist_ok=True)
    gen = st.global_iteration
    name = f"state_{st.phase}_{gen:05d}.npz"
    arrays = {k: to_numpy(getattr(st, k)) for k in _ARRAYS if getattr(st, k) is not None}
    if st.stats is not None:
        arrays.update(
            stats_acc=to_numpy(st.stats.acc),
            stats_mass=np.asarray(st.stats.mass),
        )
    _atomic_write(d / name, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
    meta = {k: getattr(st, k) for k in _SCALARS}
    meta.update(arrays=name, records=st.records, log=st.log, fingerprint=fingerprint)
    _atomic_write(
        d / "state.json", lambda fh: fh.write(json.dumps(meta, default=_json_default).encode())
    )
    for old in d.glob("state_*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def load_checkpoint(outdir: str | os.PathLike, xp: Any = np) -> tuple[EMState, str] | None:
    """The last checkpoint in ``outdir`` as ``(state, fingerprint)``, or None if there is none."""
    d = Path(outdir) / CHECKPOINT_DIR
    if not (d / "state.json").exists():
        return None
    meta = json.loads((d / "state.json").read_text())
    st = EMState()
    for k in _SCALARS:
        setattr(st, k, meta[k])
    st.records, st.log = meta["records"], meta["log"]
    with np.load(d / meta["arrays"], allow_pickle=False) as z:
        for k in _ARRAYS:
            if k in z:
                setattr(st, k, z[k])
        if "stats_acc" in z:
            st.stats = ClassStats(xp.asarray(z["stats_acc"]), np.array(z["stats_mass"]))
    return st, meta["fingerprint"]
