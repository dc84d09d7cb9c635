"""Particle stores: where a :class:`~cryoclass.engine.problem.Problem` keeps its disc data.

The preprocessed particles (``X (N, M)`` complex64 recentred transforms and ``C (N, M)`` float32
CTFs on the classification disc) are the only per-particle data whose size grows with the box.
A store hands out rows for sorted particle indices, so the passes never need all of them at once:

* :class:`ArrayStore` — both arrays in memory (NumPy or CuPy): the default; a NumPy store built
  by :func:`~cryoclass.engine.problem.build_problem` keeps its rows in the passes' viewing-direction
  order (``order``), still indexed by particle;
* :class:`DiskStore` — an on-disk cache directory (``X.npy``, ``C.npy``, ``manifest.json``) read
  chunk by chunk through short-lived memory maps, so resident memory is bounded by the chunk, not
  by N; rows are moved to the device (``xp``) per chunk;
* :class:`ColumnView` — a subset of the disc columns of another store (the low-resolution
  problem used by initialisation), computed per chunk.

:func:`open_or_build_cache` finds a cache entry whose key — a hash of the particles (uids, image
files with their sizes and modification times, image indices, shifts and CTF parameters), the
box, pixel size, filter resolution and the cache format — matches, or builds one atomically
(written into a temporary directory, then renamed), removing stale entries of the same particles
at the same filter resolution.

Example
-------
>>> import numpy as np
>>> from cryoclass.engine.store import ArrayStore
>>> st = ArrayStore(np.ones((5, 3), np.complex64), np.ones((5, 3), np.float32))
>>> X, C = st.take(np.array([1, 3]))
>>> X.shape, st.columns(np.array([0, 2])).take(np.array([4]))[1].shape
((2, 3), (1, 2))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import get_array_module, to_device

__all__ = [
    "ParticleStore",
    "ArrayStore",
    "DiskStore",
    "ColumnView",
    "NpyWriter",
    "cache_key",
    "open_or_build_cache",
    "CACHE_FORMAT",
]

#: Version of the on-disk layout and of the preprocessing that fills it (part of every key).
CACHE_FORMAT = 1


class ParticleStore:
    """Rows of ``X (N, M)`` complex64 and ``C (N, M)`` float32 for particle indices.

    Subclasses implement :meth:`take`; ``n``, ``M`` and ``xp`` (the array module of the rows
    returned) are attributes.
    """

    n: int
    M: int
    xp: Any
    remote = False  # True for stores whose rows live on other processes (Dask shards)
    executor: Any = None  # runs the passes of a remote store

    def take(self, idx: Any) -> tuple[Any, Any]:
        """``(X[idx], C[idx])`` on ``xp`` for a 1D array of (sorted) particle indices."""
        raise NotImplementedError

    def rows(self, start: int, stop: int) -> tuple[Any, Any]:
        """``(X[start:stop], C[start:stop])``."""
        return self.take(np.arange(start, stop))

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """Iterate over all rows in order: ``(indices, X, C)``, ``size`` particles at a time."""
        for s in range(0, self.n, size):
            e = min(s + size, self.n)
            yield (np.arange(s, e), *self.rows(s, e))

    def columns(self, cols: np.ndarray) -> ParticleStore:
        """A store of the disc columns ``cols`` only (lazy)."""
        return ColumnView(self, np.asarray(cols, np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of all rows (8 + 4 per disc pixel and particle)."""
        return int(self.n) * int(self.M) * 12

    @property
    def X(self) -> Any:
        """All transforms (materialised; avoid in the engine, which works chunk by chunk)."""
        return self.rows(0, self.n)[0]

    @property
    def C(self) -> Any:
        return self.rows(0, self.n)[1]


class ArrayStore(ParticleStore):
    """Both arrays in memory on one device (``xp`` from the arrays).

    ``order`` (NumPy stores only): the particle index of each stored row, when the rows are
    kept in an order of their own — the passes' viewing-direction order
    (:func:`cryoclass.engine.problem.view_order`), so that a pass over all particles reads
    contiguous rows (views, no copy). Indices stay particle indices: :meth:`take` and
    :meth:`rows` return the rows of the particles asked for, in the order asked for; a run of
    consecutive stored rows comes back as views."""

    def __init__(self, X: Any, C: Any, order: np.ndarray | None = None):
        if X.shape != C.shape:
            raise ValueError(f"X {X.shape} and C {C.shape} must have the same shape")
        self._X, self._C = X, C
        self.n, self.M = int(X.shape[0]), int(X.shape[1])
        self.xp = get_array_module(X, C)
        self._order: np.ndarray | None = None
        self._pos: np.ndarray | None = None  # stored row of each particle
        if order is not None:
            order = np.asarray(order, np.int64)
            if self.xp is not np:
                raise ValueError("ArrayStore: a row order is for NumPy arrays only")
            if order.shape != (self.n,) or not np.array_equal(np.sort(order), np.arange(self.n)):
                raise ValueError(f"ArrayStore: order must be a permutation of 0..{self.n - 1}")
            self._order = order
            self._pos = np.empty(self.n, np.int64)
            self._pos[order] = np.arange(self.n, dtype=np.int64)

    @property
    def order(self) -> np.ndarray | None:
        """The particle index of each stored row (None: rows in particle order)."""
        return self._order

    def position(self, idx: Any) -> np.ndarray:
        """The stored row of each particle in ``idx``."""
        i = np.asarray(idx, np.int64)
        return i if self._pos is None else self._pos[i]

    def take(self, idx: Any) -> tuple[Any, Any]:
        if self._pos is None:
            i = self.xp.asarray(idx)
            return self._X[i], self._C[i]
        p = self._pos[np.asarray(idx, np.int64)]
        if len(p) and int(p[-1]) - int(p[0]) == len(p) - 1 and bool(np.all(np.diff(p) == 1)):
            return self._X[p[0] : p[-1] + 1], self._C[p[0] : p[-1] + 1]
        return self._X[p], self._C[p]

    def rows(self, start: int, stop: int) -> tuple[Any, Any]:
        if self._pos is None:
            return self._X[start:stop], self._C[start:stop]
        return self.take(np.arange(start, stop))

    def columns(self, cols: np.ndarray) -> ParticleStore:
        c = self.xp.asarray(
            cols
        )  # column gathers can come out non-C-ordered: the kernels need rows
        xp = self.xp
        return ArrayStore(
            xp.ascontiguousarray(self._X[:, c]), xp.ascontiguousarray(self._C[:, c]), self._order
        )

    @property
    def X(self) -> Any:
        return self._X if self._pos is None else self._X[self._pos]

    @property
    def C(self) -> Any:
        return self._C if self._pos is None else self._C[self._pos]


class ColumnView(ParticleStore):
    """The columns ``cols`` of ``base``, selected chunk by chunk."""

    def __init__(self, base: ParticleStore, cols: np.ndarray):
        self.base, self.cols = base, cols
        self.n, self.M, self.xp = base.n, int(cols.size), base.xp
        self._c = base.xp.asarray(cols)

    def take(self, idx: Any) -> tuple[Any, Any]:
        X, C = self.base.take(idx)
        return X[:, self._c], C[:, self._c]

    def rows(self, start: int, stop: int) -> tuple[Any, Any]:
        X, C = self.base.rows(start, stop)
        return X[:, self._c], C[:, self._c]

    def columns(self, cols: np.ndarray) -> ParticleStore:
        return ColumnView(self.base, self.cols[np.asarray(cols, np.int64)])


class DiskStore(ParticleStore):
    """A cache entry directory: ``X.npy`` (N, M) complex64, ``C.npy`` (N, M) float32.

    Every read opens a memory map, copies the requested rows and closes it, so pages of the
    cache never accumulate in the process's resident memory (the OS page cache still speeds up
    re-reads). Rows are returned on ``xp``.
    """

    def __init__(self, path: str | os.PathLike, xp: Any = np):
        self.path = Path(path)
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        self.n, self.M = int(self.manifest["n"]), int(self.manifest["M"])
        self.xp = xp

    def _read(self, name: str, sel: Any) -> np.ndarray:
        mm = np.load(self.path / f"{name}.npy", mmap_mode="r")
        try:
            return np.array(mm[sel])
        finally:
            del mm

    def take(self, idx: Any) -> tuple[Any, Any]:
        i = np.asarray(idx.get() if hasattr(idx, "get") else idx, np.int64)
        if i.size and i[-1] - i[0] + 1 == i.size and np.all(np.diff(i) == 1):
            return self.rows(int(i[0]), int(i[-1]) + 1)
        return to_device(self._read("X", i), self.xp), to_device(self._read("C", i), self.xp)

    def rows(self, start: int, stop: int) -> tuple[Any, Any]:
        s = slice(start, stop)
        return to_device(self._read("X", s), self.xp), to_device(self._read("C", s), self.xp)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["xp"] = None if self.xp is np else "cupy"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from ..backend import get_device_module

        xp = state.pop("xp")
        self.__dict__.update(state)
        self.xp = np if xp is None else get_device_module("gpu")

    def __repr__(self) -> str:
        return f"DiskStore({str(self.path)!r}, n={self.n}, M={self.M})"


class NpyWriter:
    """Write a 2D ``.npy`` file of known shape sequentially, row block by row block, with plain
    file writes (no memory map, so written pages are not held in the process)."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: Any):
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.f, {**header, "shape": shape})
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"block shape {block.shape} does not fit {self.shape}")
        self.f.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        self.f.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"wrote {self.rows} rows of {self.shape[0]}")


# --------------------------------------------------------------------------- cache keys
def _source_fingerprint(images: Any, h: Any) -> None:
    """Add what identifies the image data to the hash ``h``: the stack files (path, size,
    modification time) and indices for stacks on disk; the pixel bytes for images in memory."""
    from ..io.source import MrcsImageSource, SubsetImageSource

    src, sel = images, None
    while isinstance(src, SubsetImageSource):
        sel = src.indices if sel is None else src.indices[sel]
        src = src.parent
    if isinstance(src, MrcsImageSource):
        for f in src.files:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
        fo, ii = src.file_of, src.index_in_file
        if sel is not None:
            fo, ii = fo[sel], ii[sel]
        h.update(np.ascontiguousarray(fo).tobytes())
        h.update(np.ascontiguousarray(ii).tobytes())
        return
    for _, imgs in images.chunks(4096):  # in-memory images: hash the pixels
        h.update(np.ascontiguousarray(imgs, np.float32).tobytes())


_META_COLUMNS = (
    "uid",
    "shift_x_A",
    "shift_y_A",
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
    "bfactor_A2",
)


def cache_key(particles: Any, filter_res_A: float) -> tuple[str, str]:
    """``(key, uid_hash)`` of the preprocessed particles at ``filter_res_A``.

    ``key`` changes when anything that enters preprocessing changes (particles, image files,
    shifts, CTF, box, pixel size, filter resolution, cache format); ``uid_hash`` identifies the
    particle set alone (used to find stale entries).
    """
    from .. import __version__

    meta = particles.meta
    uid = hashlib.sha256(np.ascontiguousarray(meta["uid"].to_numpy(np.int64)).tobytes())
    h = hashlib.sha256(uid.digest())
    h.update(
        json.dumps(
            [CACHE_FORMAT, __version__, int(particles.box), float(particles.pixel_size_A)]
            + [float(filter_res_A), len(meta)]
        ).encode()
    )
    for c in _META_COLUMNS:
        h.update(np.ascontiguousarray(meta[c].to_numpy(np.float64)).tobytes())
    _source_fingerprint(particles.images, h)
    return h.hexdigest()[:24], uid.hexdigest()[:16]


def _remove_stale(root: Path, key: str, uid_hash: str, filter_res_A: float) -> None:
    for d in root.glob("particles-*"):
        man = d / "manifest.json"
        if d.name == f"particles-{key}" or not man.exists():
            continue
        try:
            m = json.loads(man.read_text())
        except (OSError, ValueError):
            continue
        if m.get("uid_hash") == uid_hash and m.get("filter_res_A") == float(filter_res_A):
            shutil.rmtree(d, ignore_errors=True)


def open_or_build_cache(
    particles: Any,
    filter_res_A: float,
    cache_dir: str | os.PathLike,
    n_pixels: int,
    fill: Callable[[Callable[[np.ndarray, np.ndarray, np.ndarray], None]], None],
    xp: Any = np,
) -> tuple[DiskStore, bool]:
    """Open the cache entry for these particles, or build it. Returns ``(store, reused)``.

    ``fill(write)`` must call ``write(idx, X_rows, C_rows)`` for consecutive row blocks covering
    all particles in order. The entry appears atomically (temporary directory + rename); a
    concurrent builder of the same entry loses the rename and uses the winner's.
    """
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    key, uid_hash = cache_key(particles, filter_res_A)
    final = root / f"particles-{key}"
    if (final / "manifest.json").exists():
        store = DiskStore(final, xp)
        if store.n == len(particles) and store.M == n_pixels:
            return store, True
        shutil.rmtree(final, ignore_errors=True)
    N = len(particles)
    tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        wx = NpyWriter(tmp / "X.npy", (N, n_pixels), np.complex64)
        wc = NpyWriter(tmp / "C.npy", (N, n_pixels), np.float32)
        expected = [0]

        def write(idx: np.ndarray, X: np.ndarray, C: np.ndarray) -> None:
            if idx.size and int(idx[0]) != expected[0]:
                raise RuntimeError("cache rows must be written in order")
            wx.write(X)
            wc.write(C)
            expected[0] += int(idx.size)

        fill(write)
        wx.close()
        wc.close()
        manifest = {
            "format": CACHE_FORMAT,
            "key": key,
            "uid_hash": uid_hash,
            "n": N,
            "M": int(n_pixels),
            "filter_res_A": float(filter_res_A),
            "box": int(particles.box),
            "pixel_size_A": float(particles.pixel_size_A),
            "source": particles.source_path,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale(root, key, uid_hash, filter_res_A)
    return DiskStore(final, xp), False
