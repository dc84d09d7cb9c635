"""Fuzzing the parsers: malformed input must give InputFileError, never another exception.

(``tmp_path`` is shared by the examples of one test; each example overwrites its file.)"""

from __future__ import annotations

import mrcfile
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryoclass.errors import InputFileError
from cryoclass.io import mrc_info, open_stack, read_particles

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

STAR_LINES = [
    "data_particles",
    "data_optics",
    "data_",
    "loop_",
    "",
    "# comment",
    "_rlnImageName #1",
    "_rlnAngleRot #2",
    "_rlnAngleTilt #3",
    "_rlnAnglePsi #4",
    "_rlnDefocusU #5",
    "_rlnVoltage #6",
    "_rlnSphericalAberration #7",
    "_rlnAmplitudeContrast #8",
    "_rlnOpticsGroup #9",
    "_rlnImagePixelSize 1.5",
    "1@a.mrcs 1 2 3 10000 300 2.7 0.1 1",
    "x@ 1 2",
    "nan nan nan",
    "1 2 3 4 5 6 7 8 9",
    "000001@stack.mrcs\t0\t90\t0\t15000\t300\t2.7\t0.1\t2",
    "@@@",
    "\x00\x01",
    "é",
]


@FAST
@given(st.lists(st.sampled_from(STAR_LINES), max_size=25))
def test_fuzz_star(tmp_path, lines):
    path = tmp_path / "f.star"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        read_particles(path)
    except InputFileError as err:
        assert str(path) in str(err)


CS_FIELDS = {
    "uid": "<u8",
    "blob/path": "S8",
    "blob/idx": "<u4",
    "alignments3D/pose": ("<f4", (3,)),
    "alignments3D/shift": ("<f4", (2,)),
    "ctf/df1_A": "<f4",
    "ctf/accel_kv": "<f4",
    "ctf/cs_mm": "<f4",
    "ctf/amp_contrast": "<f4",
    "blob/psize_A": "<f4",
}


@FAST
@given(st.sets(st.sampled_from(sorted(CS_FIELDS))), st.integers(0, 4), st.binary(max_size=64))
def test_fuzz_cs(tmp_path, fields, n, junk):
    dtype = [
        (f, *CS_FIELDS[f]) if isinstance(CS_FIELDS[f], tuple) else (f, CS_FIELDS[f])
        for f in sorted(fields)
    ]
    path = tmp_path / "f.cs"
    if dtype:
        arr = np.zeros(n, dtype=dtype)
        if "blob/path" in fields:
            arr["blob/path"] = b"x.mrcs"
        with open(path, "wb") as f:
            np.save(f, arr)
    else:
        path.write_bytes(junk)
    try:
        read_particles(path)
    except InputFileError as err:
        assert str(path) in str(err)


@FAST
@given(st.integers(0, 1100), st.binary(min_size=1, max_size=8))
def test_fuzz_mrc_corruption(tmp_path, pos, garbage):
    path = tmp_path / "f.mrcs"
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ones((3, 8, 8), np.float32))
        m.set_image_stack()
    raw = bytearray(path.read_bytes())
    raw[pos : pos + len(garbage)] = garbage
    path.write_bytes(bytes(raw))
    try:
        info = mrc_info(path)
    except InputFileError as err:
        assert str(path) in str(err)
        return
    stack = open_stack(path)
    assert stack.shape == info.shape
