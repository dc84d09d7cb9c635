"""MRC maps and image stacks: read, write (atomically) and memory-map.

Volumes are ``(z, y, x)`` float32 arrays, images ``(y, x)`` and stacks ``(n, y, x)``, as ``mrcfile``
returns them. Pixel sizes are in Å (the header's voxel size along x).

Example
-------
>>> import numpy as np, tempfile, os
>>> from cryoclass.io.mrc import read_mrc, write_mrc
>>> path = os.path.join(tempfile.mkdtemp(), "vol.mrc")
>>> write_mrc(path, np.ones((8, 8, 8), np.float32), pixel_size_A=1.5)
>>> vol, apix = read_mrc(path)
>>> vol.shape, apix
((8, 8, 8), 1.5)
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mrcfile
import numpy as np

from ..errors import InputFileError

__all__ = ["MrcInfo", "read_mrc", "write_mrc", "open_stack", "mrc_info", "atomic_path"]

#: MRC modes we can read as real images: int8, int16, float32, uint16, float16.
_REAL_MODES = {0, 1, 2, 6, 12}
#: every mode of the MRC2014 standard (3, 4: complex; 101: packed 4-bit)
_KNOWN_MODES = _REAL_MODES | {3, 4, 101}
_HEADER_BYTES = 1024
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@dataclass(frozen=True)
class MrcInfo:
    """What the header of an MRC file says about its data.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    shape : tuple of int
        ``(nz, ny, nx)``: for a stack ``nz`` is the number of images.
    dtype : numpy.dtype
        Data type on disk (byte order included).
    offset : int
        Byte offset of the data (1024 + extended header).
    pixel_size_A : float
        Voxel size along x in Å (0.0 when the header does not set it).
    is_volume : bool
        True for a 3D map (space group ≠ 0 and nz > 1), False for an image or a stack.
    """

    path: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    offset: int
    pixel_size_A: float
    is_volume: bool

    @property
    def n_images(self) -> int:
        """Number of sections (images of a stack)."""
        return self.shape[0]


def mrc_info(path: str | os.PathLike) -> MrcInfo:
    """Read and check an MRC header without touching the data.

    Raises
    ------
    InputFileError
        If the file is missing, not an MRC file, uses a complex or packed mode, or is shorter than
        its header says (truncated).
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise InputFileError(path, "file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
                header = mrc.header
                mode = int(header.mode)
                nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
                nsymbt = int(header.nsymbt)
                stamp = bytes(header.map)
                ispg = int(header.ispg)
                apix = float(mrc.voxel_size.x)
                dtype = (
                    mrcfile.utils.data_dtype_from_header(header) if mode in _REAL_MODES else None
                )
    except (ValueError, OSError, EOFError) as exc:
        raise InputFileError(path, f"not a readable MRC file ({exc})") from None
    if dtype is None and mode not in _KNOWN_MODES and stamp != b"MAP ":
        # no MRC2014 stamp and a mode no MRC writer uses: some other file (a text file, a
        # .star given as a mask...) that merely has 1 024 bytes to read as a header
        raise InputFileError(
            path, f"not an MRC file (no 'MAP ' stamp at byte 208 and header mode {mode})"
        )
    if dtype is None:
        raise InputFileError(
            path,
            f"unsupported MRC mode {mode} (only real modes 0, 1, 2, 6, 12 can be read as images)",
        )
    if min(nx, ny, nz) <= 0:
        raise InputFileError(path, f"invalid dimensions in MRC header (nx={nx}, ny={ny}, nz={nz})")
    offset = _HEADER_BYTES + max(nsymbt, 0)
    need = offset + nx * ny * nz * dtype.itemsize
    size = os.path.getsize(path)
    if size < need:
        raise InputFileError(
            path,
            f"file is truncated: header announces {nz} x {ny} x {nx} mode-{mode} values "
            f"({need} bytes) but the file has {size} bytes",
        )
    return MrcInfo(path, (nz, ny, nx), dtype, offset, apix, is_volume=ispg != 0 and nz > 1)


def open_stack(path: str | os.PathLike) -> np.ndarray:
    """Memory-map an MRC image stack read-only.

    Parameters
    ----------
    path : str or PathLike
        ``.mrcs`` stack (or a single-image ``.mrc``).

    Returns
    -------
    numpy.memmap
        Shape ``(n, ny, nx)`` in the file's own dtype; nothing is read until it is indexed.
        Convert slices with ``np.asarray(stack[i:j], dtype=np.float32)``.

    Raises
    ------
    InputFileError
        Missing, unreadable, truncated or wrong-mode file.
    """
    info = mrc_info(path)
    return _memmap(info)


def _memmap(info: MrcInfo) -> np.ndarray:
    try:
        return np.memmap(
            info.path, dtype=info.dtype, mode="r", offset=info.offset, shape=info.shape
        )
    except (ValueError, OSError) as exc:
        raise InputFileError(info.path, f"cannot memory-map the data ({exc})") from None


def read_mrc(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a whole MRC file into memory.

    Parameters
    ----------
    path : str or PathLike
        ``.mrc`` volume, single image or ``.mrcs`` stack.

    Returns
    -------
    data : numpy.ndarray, float32
        ``(z, y, x)`` volume or stack, or ``(y, x)`` for a single image.
    pixel_size_A : float
        Voxel size in Å from the header (0.0 when unset).
    """
    info = mrc_info(path)
    data = np.array(_memmap(info), dtype=np.float32)
    if info.shape[0] == 1:
        data = data[0]
    return data, info.pixel_size_A


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was. Temporary
    names are ``.NAME.XXXXXXXX<suffix>.tmp`` (hidden, and always ending in ``.tmp``), so a
    process killed mid-write leaves nothing that a glob for ``*.star``/``*.mrc`` would pick up.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    prefix = "." + os.path.basename(path) + "."
    if not suffix.endswith(".tmp"):
        suffix += ".tmp"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files; give the usual umask permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_mrc(
    path: str | os.PathLike,
    data: np.ndarray,
    pixel_size_A: float,
    *,
    stack: bool | None = None,
) -> None:
    """Write a volume, image or image stack as float32 MRC, atomically.

    Parameters
    ----------
    path : str or PathLike
        Output file; written to a temporary file in the same directory, then renamed.
    data : numpy.ndarray
        ``(z, y, x)`` volume, ``(n, y, x)`` stack or ``(y, x)`` image; stored as float32.
    pixel_size_A : float
        Voxel size in Å written to the header.
    stack : bool, optional
        Mark a 3D array as an image stack (space group 0). Default: True for ``.mrcs`` files.
    """
    arr = np.ascontiguousarray(data, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"write_mrc: data must be 2D or 3D, got shape {arr.shape}")
    if stack is None:
        stack = os.fspath(path).endswith(".mrcs")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)
            if stack and arr.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size_A)
            mrc.update_header_stats()
