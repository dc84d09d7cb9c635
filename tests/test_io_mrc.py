"""MRC read/write/mmap and bad MRC files."""

from __future__ import annotations

import os

import mrcfile
import numpy as np
import pytest

from cryoclass.errors import InputFileError
from cryoclass.io import mrc_info, open_stack, read_mrc, write_mrc


def test_volume_round_trip(tmp_path):
    vol = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    path = tmp_path / "v.mrc"
    write_mrc(path, vol, pixel_size_A=1.234)
    out, apix = read_mrc(path)
    assert out.dtype == np.float32 and out.shape == (10, 12, 14)
    np.testing.assert_array_equal(out, vol)
    assert apix == pytest.approx(1.234, rel=1e-6)
    with mrcfile.open(path) as m:  # independent reader agrees (z, y, x) and it is a volume
        np.testing.assert_array_equal(m.data, vol)
        assert m.is_volume()
    assert os.listdir(tmp_path) == ["v.mrc"]  # no temporary file left behind


def test_stack_and_image(tmp_path):
    stack = np.arange(3 * 8 * 8, dtype=np.float64).reshape(3, 8, 8)
    write_mrc(tmp_path / "s.mrcs", stack, 2.0)
    with mrcfile.open(tmp_path / "s.mrcs") as m:
        assert m.is_image_stack()
    mm = open_stack(tmp_path / "s.mrcs")
    assert isinstance(mm, np.memmap) and mm.shape == (3, 8, 8) and not mm.flags.writeable
    np.testing.assert_array_equal(mm[1], stack[1])
    write_mrc(tmp_path / "i.mrc", stack[0], 2.0)
    img, apix = read_mrc(tmp_path / "i.mrc")
    assert img.shape == (8, 8) and apix == 2.0
    assert open_stack(tmp_path / "i.mrc").shape == (1, 8, 8)


def test_int16_stack_read_as_float32(tmp_path):
    data = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4)
    with mrcfile.new(tmp_path / "i16.mrcs") as m:
        m.set_data(data)
    out, _ = read_mrc(tmp_path / "i16.mrcs")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)


def test_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / "v.mrc"
    write_mrc(path, np.ones((4, 4, 4)), 1.0)
    with pytest.raises(ValueError):
        write_mrc(path, np.ones((2, 2, 2, 2)), 1.0)
    np.testing.assert_array_equal(read_mrc(path)[0], 1.0)
    assert os.listdir(tmp_path) == ["v.mrc"]


def test_missing_mrc(tmp_path):
    with pytest.raises(InputFileError, match=r"none\.mrc: file not found"):
        read_mrc(tmp_path / "none.mrc")


def test_truncated_mrc(tmp_path):
    path = tmp_path / "t.mrcs"
    write_mrc(path, np.ones((5, 16, 16)), 1.0)
    path.write_bytes(path.read_bytes()[:-100])
    for fn in (read_mrc, open_stack, mrc_info):
        with pytest.raises(InputFileError, match=r"t\.mrcs: file is truncated"):
            fn(path)


def test_garbage_mrc(tmp_path):
    path = tmp_path / "g.mrc"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(InputFileError, match=r"g\.mrc: not a readable MRC file"):
        read_mrc(path)


def test_complex_mode_refused(tmp_path):
    path = tmp_path / "c.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((4, 4), np.complex64))
    with pytest.raises(InputFileError, match=r"c\.mrc: unsupported MRC mode 4"):
        read_mrc(path)


def test_written_files_get_umask_permissions(tmp_path):
    write_mrc(tmp_path / "v.mrc", np.ones((4, 4, 4)), 1.0)
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "v.mrc").stat().st_mode & 0o777 == 0o666 & ~umask


def test_text_file_is_not_an_mrc(tmp_path):
    """A non-MRC file long enough to hold a header (e.g. a .star given as a mask) is named as
    such, not reported as an unsupported mode with a nonsense number."""
    path = tmp_path / "mask.star"
    path.write_text("data_\n\nloop_\n_rlnImageName #1\n" + "000001@particles.mrcs\n" * 100)
    with pytest.raises(InputFileError, match=r"mask\.star: not an MRC file \(no 'MAP ' stamp"):
        read_mrc(path)


def test_old_mrc_without_stamp_still_reads(tmp_path):
    """Pre-2014 files lack the 'MAP ' stamp; a valid mode still reads."""
    path = tmp_path / "old.mrc"
    write_mrc(path, np.arange(64, dtype=np.float32).reshape(4, 4, 4), 1.5)
    raw = bytearray(path.read_bytes())
    raw[208:212] = bytes(4)
    path.write_bytes(bytes(raw))
    data, apix = read_mrc(path)
    assert data.shape == (4, 4, 4) and data[3, 3, 3] == 63.0 and apix == pytest.approx(1.5)
