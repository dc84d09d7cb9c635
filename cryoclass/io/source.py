"""Lazy, chunked access to particle images.

An :class:`ImageSource` hands out float32 images ``(n, D, D)`` for any list of particle indices,
without loading a whole dataset: :class:`MrcsImageSource` memory-maps the ``.mrcs`` stacks it needs
(headers are checked up front, data pages are read only when indexed), :class:`ArrayImageSource`
wraps images already in memory (the simulator uses it).

Example
-------
>>> import numpy as np
>>> from cryoclass.io.source import ArrayImageSource
>>> src = ArrayImageSource(np.zeros((10, 16, 16), np.float32))
>>> [idx.tolist() for idx, _ in src.chunks(4)]
[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import InputFileError
from .mrc import MrcInfo, _memmap, mrc_info

__all__ = ["ImageSource", "MrcsImageSource", "ArrayImageSource", "SubsetImageSource"]


class ImageSource:
    """Random access to a set of ``N`` particle images of box ``D``.

    Subclasses implement ``_read_sorted_unique`` (or override :meth:`read`); ``box`` and
    ``__len__`` come from the attributes ``_box`` and ``_n``.
    """

    _box: int
    _n: int

    @property
    def box(self) -> int:
        """Box size ``D`` in pixels."""
        return self._box

    def __len__(self) -> int:
        return self._n

    def _check_indices(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1D array of integers, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            bad = idx[(idx < 0) | (idx >= self._n)][0]
            raise IndexError(f"particle index {bad} out of range for {self._n} particles")
        return idx

    def read(self, indices: Any) -> np.ndarray:
        """Images of the given particles.

        Parameters
        ----------
        indices : array_like of int, shape (n,)
            Particle indices (0-based), any order, duplicates allowed.

        Returns
        -------
        numpy.ndarray, float32, shape (n, D, D)
        """
        idx = self._check_indices(indices)
        if idx.size == 0:
            return np.zeros((0, self._box, self._box), np.float32)
        uniq, inverse = np.unique(idx, return_inverse=True)
        imgs = self._read_sorted_unique(uniq)
        if uniq.size == idx.size and np.array_equal(uniq, idx):
            return imgs
        return imgs[inverse.reshape(-1)]

    def _read_sorted_unique(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over all particles in order, ``size`` at a time.

        Yields
        ------
        indices : numpy.ndarray, int64, shape (m,)
        images : numpy.ndarray, float32, shape (m, D, D)
        """
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        for start in range(0, self._n, size):
            idx = np.arange(start, min(start + size, self._n), dtype=np.int64)
            yield idx, self.read(idx)

    def subset(self, indices: Any) -> ImageSource:
        """A source over ``indices`` of this one (no data is read)."""
        return SubsetImageSource(self, self._check_indices(indices))

    def release(self) -> None:
        """Drop cached file mappings (their pages leave the process's resident memory); the
        source stays usable and re-opens files on the next read. No-op for in-memory sources."""


class ArrayImageSource(ImageSource):
    """Images held in memory.

    Parameters
    ----------
    images : numpy.ndarray, shape (N, D, D)
        Real images (kept as given; returned as float32).
    """

    def __init__(self, images: np.ndarray):
        arr = np.asarray(images)
        if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
            raise ValueError(f"images must have shape (N, D, D), got {arr.shape}")
        self.images = arr
        self._n, self._box = int(arr.shape[0]), int(arr.shape[1])

    def _read_sorted_unique(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.images[idx], dtype=np.float32)

    def __repr__(self) -> str:
        return f"ArrayImageSource(n={self._n}, box={self._box})"


class SubsetImageSource(ImageSource):
    """The particles ``indices`` of a parent source, in that order."""

    def __init__(self, parent: ImageSource, indices: np.ndarray):
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64)
        self._n, self._box = int(self.indices.size), parent.box

    def read(self, indices: Any) -> np.ndarray:
        return self.parent.read(self.indices[self._check_indices(indices)])

    def subset(self, indices: Any) -> ImageSource:
        return SubsetImageSource(self.parent, self.indices[self._check_indices(indices)])

    def release(self) -> None:
        self.parent.release()

    def __repr__(self) -> str:
        return f"SubsetImageSource(n={self._n}, parent={self.parent!r})"


class MrcsImageSource(ImageSource):
    """Particle images stored in MRC stacks, memory-mapped on demand.

    Every stack's header is read when the source is created, so a bad index or a mixed box size
    fails at once with a message naming the file; image data are read only by :meth:`read`.

    Parameters
    ----------
    paths : sequence of str, length N
        Stack file of each particle (absolute, or relative to the current directory).
    indices : array_like of int, shape (N,)
        0-based index of each particle's image in its stack.
    max_open : int
        Most stacks kept memory-mapped at once (least recently used are closed).
    """

    def __init__(self, paths: Sequence[str] | np.ndarray, indices: Any, max_open: int = 128):
        paths_arr = np.asarray(paths, dtype=object)
        idx = np.asarray(indices)
        if paths_arr.ndim != 1 or idx.shape != paths_arr.shape:
            raise ValueError(
                f"paths and indices must be 1D of equal length, got {paths_arr.shape} "
                f"and {idx.shape}"
            )
        uniq, file_of = np.unique(paths_arr.astype(str), return_inverse=True)
        self.files = [os.path.abspath(p) for p in uniq]
        self.file_of = file_of.reshape(-1).astype(np.int64)
        self.index_in_file = idx.astype(np.int64)
        self.infos = [mrc_info(p) for p in self.files]
        self._validate()
        self._n = int(idx.size)
        self._box = int(self.infos[0].shape[1]) if self.infos else 0
        self.max_open = max_open
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _validate(self) -> None:
        boxes: dict[tuple[int, int], str] = {}
        for info in self.infos:
            boxes.setdefault(info.shape[1:], info.path)
        if len(boxes) > 1:
            desc = ", ".join(f"{ny}x{nx} in {p}" for (ny, nx), p in boxes.items())
            raise InputFileError(
                self.infos[0].path, f"image stacks have different box sizes: {desc}"
            )
        if len(boxes) == 1:
            ny, nx = next(iter(boxes))
            if ny != nx:
                raise InputFileError(self.infos[0].path, f"images are not square ({ny}x{nx})")
        n_in = np.array([info.n_images for info in self.infos], dtype=np.int64)
        if self.file_of.size:
            bad = (self.index_in_file < 0) | (self.index_in_file >= n_in[self.file_of])
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                info = self.infos[self.file_of[first]]
                raise InputFileError(
                    info.path,
                    f"particle {first} refers to image {self.index_in_file[first] + 1} (1-based) "
                    f"but the stack has only {info.n_images} images "
                    f"({int(bad.sum())} particles out of range)",
                )

    def _stack(self, f: int) -> np.ndarray:
        with self._lock:
            mm = self._open.get(f)
            if mm is not None:
                self._open.move_to_end(f)
                return mm
            mm = _memmap(self.infos[f])
            self._open[f] = mm
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
            return mm

    def _read_sorted_unique(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((idx.size, self._box, self._box), dtype=np.float32)
        files = self.file_of[idx]
        for f in np.unique(files):
            where = np.flatnonzero(files == f)
            local = self.index_in_file[idx[where]]
            stack = self._stack(int(f))
            lo, hi = int(local.min()), int(local.max()) + 1
            if hi - lo == local.size and np.all(np.diff(local) == 1):  # contiguous run
                w0, w1 = int(where[0]), int(where[-1]) + 1
                info = self.infos[int(f)]
                if w1 - w0 == where.size and info.dtype == np.dtype(np.float32):
                    _read_into(info, lo, out[w0:w1])  # one read() into place: no page faults
                else:
                    out[where] = stack[lo:hi]
            else:
                out[where] = stack[local]
        return out

    def release(self) -> None:
        with self._lock:
            self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # never pickle memory maps (Dask workers re-open them)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MrcsImageSource(n={self._n}, box={self._box}, files={len(self.files)})"


def _read_into(info: MrcInfo, first: int, out: np.ndarray) -> None:
    """Read images ``first, first + 1, …`` of a native float32 stack straight into ``out``
    (C-contiguous float32 ``(n, D, D)``) with plain ``read`` calls: copying from a fresh memory
    map costs a page fault per 4 KiB (measured 0.24 s vs 0.05 s for 20 000 images of 64²)."""
    start = info.offset + first * out[0].nbytes
    buf = out.data.cast("B")
    with open(info.path, "rb", buffering=0) as fh:
        fh.seek(start)
        done = 0
        while done < buf.nbytes:
            n = fh.readinto(buf[done:])
            if not n:
                raise InputFileError(
                    info.path,
                    f"file ends {buf.nbytes - done} bytes early while reading images "
                    f"{first + 1}–{first + len(out)} (1-based): truncated stack",
                )
            done += n


def stack_infos(source: ImageSource) -> list[MrcInfo]:
    """Headers of the stacks behind a source (empty for in-memory sources)."""
    while isinstance(source, SubsetImageSource):
        source = source.parent
    return list(source.infos) if isinstance(source, MrcsImageSource) else []
