"""Generate the corpus of tricky real-world input variants used by ``test_reliability_inputs``.

Run ``python tests/corpus/make_corpus.py [OUTDIR]`` (default: this folder). Every file is small
(< 50 KB) and deterministic, so the committed copies can be checked against a fresh generation.
``manifest.json`` lists each case: its file(s), whether it is valid, the values a reader must
find (valid cases) or a fragment the :class:`~cryoclass.errors.InputFileError` message must
contain (malformed cases).

Example
-------
>>> from make_corpus import make_corpus          # doctest: +SKIP
>>> manifest = make_corpus("/tmp/corpus")        # doctest: +SKIP
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

N_IMG, BOX, APIX = 4, 16, 2.0

# ----------------------------------------------------------------------------- shared pieces


def stack_data() -> np.ndarray:
    """The images of every valid stack: a deterministic (4, 16, 16) float32 pattern."""
    return np.random.default_rng(0).normal(size=(N_IMG, BOX, BOX)).astype(np.float32)


def _no_labels(raw: bytes) -> bytes:
    """MRC bytes without the header labels (mrcfile stamps them with the time of writing)."""
    return raw[:220] + bytes(1024 - 220) + raw[1024:]


def _write_stack(path: Path) -> None:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(stack_data())
        m.set_image_stack()
        m.voxel_size = APIX
    path.write_bytes(_no_labels(path.read_bytes()))


#: per-particle values (rows 0, 1) shared by the star and cs cases
ROWS = [
    dict(rot=10.0, tilt=20.0, psi=30.0, ox=1.5, oy=-2.0, du=15000.0, dv=14000.0, ang=45.0),
    dict(rot=-110.0, tilt=95.0, psi=170.0, ox=0.0, oy=4.0, du=22000.0, dv=21500.0, ang=-10.0),
]

OPTICS_31 = """data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnAmplitudeContrast #3
_rlnSphericalAberration #4
_rlnVoltage #5
_rlnImagePixelSize #6
_rlnImageSize #7
_rlnImageDimensionality #8
1 opticsGroup1 0.1 2.7 300.0 2.0 16 2
"""

PART_LABELS_31 = [
    "rlnImageName",
    "rlnMicrographName",
    "rlnAngleRot",
    "rlnAngleTilt",
    "rlnAnglePsi",
    "rlnOriginXAngst",
    "rlnOriginYAngst",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnOpticsGroup",
]


def _loop(block: str, labels: list[str], rows: list[list[Any]], sep: str = " ") -> str:
    out = [f"data_{block}", "", "loop_"]
    out += [f"_{lab} #{i + 1}" for i, lab in enumerate(labels)]
    out += [sep.join(str(v) for v in r) for r in rows]
    return "\n".join(out) + "\n"


def _rows_31(mic: tuple[str, str] = ("mic_a.mrc", "mic_b.mrc")) -> list[list[Any]]:
    return [
        [
            f"{i + 1:06d}@stack.mrcs",
            mic[i],
            r["rot"],
            r["tilt"],
            r["psi"],
            r["ox"],
            r["oy"],
            r["du"],
            r["dv"],
            r["ang"],
            1,
        ]
        for i, r in enumerate(ROWS)
    ]


def _expect(voltage: float = 300.0, apix: float = APIX, origin_px: bool = False) -> dict:
    """What a valid 2-particle file must read as (checked value by value by the test)."""
    return {
        "n": 2,
        "angles_deg": [[r["rot"], r["tilt"], r["psi"]] for r in ROWS],
        "shift_A": [
            [r["ox"] * (apix if origin_px else 1.0), r["oy"] * (apix if origin_px else 1.0)]
            for r in ROWS
        ],
        "defocus_u_A": [r["du"] for r in ROWS],
        "defocus_v_A": [r["dv"] for r in ROWS],
        "defocus_angle_deg": [r["ang"] for r in ROWS],
        "voltage_kV": [voltage, voltage],
        "pixel_size_A": [apix, apix],
        "box_px": BOX,
        "image_index": [0, 1],
    }


# ----------------------------------------------------------------------------- STAR
def star_cases() -> dict[str, tuple[str, dict]]:
    """name → (text, manifest entry)."""
    c: dict[str, tuple[str, dict]] = {}
    rel31 = OPTICS_31 + "\n" + _loop("particles", PART_LABELS_31, _rows_31())
    c["relion31.star"] = (rel31, {"valid": True, "expect": _expect()})

    # RELION 3.0: one unnamed block, optics columns per particle, origins in pixels
    labels30 = [
        "rlnImageName",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnOriginX",
        "rlnOriginY",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnDetectorPixelSize",
        "rlnMagnification",
    ]
    rows30 = [
        [f"{i + 1:06d}@stack.mrcs", r["rot"], r["tilt"], r["psi"], r["ox"], r["oy"]]
        + [r["du"], r["dv"], r["ang"], 300.0, 2.7, 0.1, 5.0, 25000.0]
        for i, r in enumerate(ROWS)
    ]
    rel30 = "\n" + _loop("", labels30, rows30, sep="\t")
    c["relion30.star"] = (rel30, {"valid": True, "expect": _expect(origin_px=True)})

    # RELION 5: '# version 50001' lines, more optics/particle columns (kept), other column order
    opt5 = OPTICS_31.replace(
        "_rlnImageDimensionality #8\n1 opticsGroup1 0.1 2.7 300.0 2.0 16 2",
        "_rlnImageDimensionality #8\n_rlnCtfDataAreCtfPremultiplied #9\n"
        "_rlnMicrographOriginalPixelSize #10\n1 opticsGroup1 0.1 2.7 300.0 2.0 16 2 0 0.5",
    )
    labels5 = PART_LABELS_31[::-1] + ["rlnRandomSubset", "rlnClassNumber", "rlnNormCorrection"]
    rows5 = [r[::-1] + [1 + i, 1, 1.0] for i, r in enumerate(_rows_31())]
    rel5 = "\n# version 50001\n\n" + opt5 + "\n\n# version 50001\n\n"
    rel5 += _loop("particles", labels5, rows5)
    e5 = _expect()
    e5["half_set"] = [0, 1]
    c["relion5.star"] = (rel5, {"valid": True, "expect": e5})

    commented = (
        "# a comment before anything\n\n"
        + OPTICS_31.replace("data_optics", "data_optics\n# comment after the block name")
        + "\n   # indented comment\n"
        + _loop("particles", PART_LABELS_31, _rows_31(), sep=" \t  ").replace(
            "\n000002", "\n\n# comment between rows\n000002"
        )
        + "\n\n# trailing comment\n"
    )
    c["comments_whitespace.star"] = (commented, {"valid": True, "expect": _expect()})

    quoted = (
        OPTICS_31
        + "\n"
        + _loop("particles", PART_LABELS_31, _rows_31(('"mic one.mrc"', "'mic two.mrc'")))
    )
    eq = _expect()
    eq["columns"] = {"rlnMicrographName": ["mic one.mrc", "mic two.mrc"]}
    c["quoted_strings.star"] = (quoted, {"valid": True, "expect": eq})
    c["crlf_line_endings.star"] = (
        rel31.replace("\n", "\r\n"),
        {"valid": True, "expect": _expect()},
    )
    c["no_final_newline.star"] = (rel31.rstrip("\n"), {"valid": True, "expect": _expect()})
    c["utf8_bom.star"] = ("\ufeff" + rel31, {"valid": True, "expect": _expect()})
    kv = (
        "data_optics\n\n_rlnOpticsGroup 1\n_rlnOpticsGroupName opticsGroup1\n"
        "_rlnAmplitudeContrast 0.1\n_rlnSphericalAberration 2.7\n_rlnVoltage 300.0\n"
        "_rlnImagePixelSize 2.0\n_rlnImageSize 16\n\n"
    )
    c["keyvalue_optics.star"] = (
        kv + _loop("particles", PART_LABELS_31, _rows_31()),
        {"valid": True, "expect": _expect()},
    )
    two = OPTICS_31.replace(
        "1 opticsGroup1 0.1 2.7 300.0 2.0 16 2",
        "1 opticsGroup1 0.1 2.7 300.0 2.0 16 2\n2 opticsGroup2 0.1 2.7 200.0 2.0 16 2",
    )
    rows2 = _rows_31()
    rows2[1][-1] = 2
    e2 = _expect()
    e2["voltage_kV"] = [300.0, 200.0]
    c["two_optics_groups.star"] = (
        two + "\n" + _loop("particles", PART_LABELS_31, rows2),
        {"valid": True, "expect": e2},
    )

    # ---- malformed
    def bad(text: str, fragment: str) -> tuple[str, dict]:
        return text, {"valid": False, "error": fragment}

    def edit_row(col: int, value: Any, row: int = 1, labels: list[str] | None = None) -> str:
        rows = _rows_31()
        rows[row][col] = value
        return OPTICS_31 + "\n" + _loop("particles", labels or PART_LABELS_31, rows)

    c["empty.star"] = bad("", "no data loop")
    c["only_comments.star"] = bad("# nothing here\n# at all\n", "no data loop")
    c["header_only.star"] = bad(OPTICS_31 + "\n" + _loop("particles", PART_LABELS_31, []), "empty")
    drop = [lab for lab in PART_LABELS_31 if lab != "rlnAngleTilt"]
    rows_drop = [[v for j, v in enumerate(r) if j != 3] for r in _rows_31()]
    c["missing_column.star"] = bad(
        OPTICS_31 + "\n" + _loop("particles", drop, rows_drop), "rlnAngleTilt"
    )
    c["non_numeric_value.star"] = bad(edit_row(7, "15000abc"), "rlnDefocusU")
    c["nan_angle.star"] = bad(edit_row(2, "nan"), "rlnAngleRot")
    c["inf_defocus.star"] = bad(edit_row(8, "1e400"), "rlnDefocusV")
    short = rel31.rstrip("\n").rsplit(" ", 1)[0] + "\n"  # last row lacks its optics group
    c["short_row.star"] = bad(short, "rlnOpticsGroup")
    c["long_row.star"] = bad(rel31.rstrip("\n") + " 42\n", "not a readable STAR file")
    c["bad_image_name.star"] = bad(edit_row(0, "0@stack.mrcs"), "rlnImageName")
    c["image_index_past_end.star"] = bad(edit_row(0, "000009@stack.mrcs"), "stack")
    c["missing_stack.star"] = bad(edit_row(0, "000001@nowhere.mrcs"), "not found")
    c["unknown_optics_group.star"] = bad(edit_row(10, 7), "rlnOpticsGroup")
    c["duplicate_label.star"] = bad(
        OPTICS_31 + "\n" + _loop("particles", PART_LABELS_31[:-1] + ["rlnDefocusU"], _rows_31()),
        "more than once",
    )
    c["image_size_mismatch.star"] = bad(rel31.replace(" 2.0 16 2", " 2.0 32 2"), "rlnImageSize")
    loop = _loop("particles", PART_LABELS_31, _rows_31())
    c["ambiguous_blocks.star"] = bad(
        OPTICS_31
        + loop.replace("data_particles", "data_a")
        + loop.replace("data_particles", "data_b"),
        "cannot tell",
    )
    c["voltage_zero.star"] = bad(rel31.replace("2.7 300.0 2.0", "2.7 0 2.0"), "voltage_kV")
    c["amplitude_contrast_2.star"] = bad(
        rel31.replace("0.1 2.7 300.0", "2 2.7 300.0"), "amplitude_contrast"
    )
    c["pixel_size_negative.star"] = bad(
        rel31.replace("300.0 2.0 16", "300.0 -2.0 16"), "pixel_size_A"
    )
    bf = PART_LABELS_31 + ["rlnCtfBfactor"]
    rows_bf = [r + [-1e7] for r in _rows_31()]
    c["bfactor_overflow.star"] = bad(OPTICS_31 + "\n" + _loop("particles", bf, rows_bf), "bfactor")
    rows_na = [r + ["<NA>"] for r in _rows_31()]
    c["na_bfactor.star"] = bad(OPTICS_31 + "\n" + _loop("particles", bf, rows_na), "bfactor")
    return c


# ----------------------------------------------------------------------------- CryoSPARC .cs
def _cs_full(n: int = 2) -> np.ndarray:
    from cryoclass.conventions import euler_to_matrix, matrix_to_cryosparc_pose

    dt = [
        ("uid", "<u8"),
        ("blob/path", "S24"),
        ("blob/idx", "<u4"),
        ("blob/shape", "<u4", (2,)),
        ("blob/psize_A", "<f4"),
        ("alignments3D/split", "<u4"),
        ("alignments3D/shift", "<f4", (2,)),
        ("alignments3D/pose", "<f4", (3,)),
        ("alignments3D/psize_A", "<f4"),
        ("ctf/accel_kv", "<f4"),
        ("ctf/cs_mm", "<f4"),
        ("ctf/amp_contrast", "<f4"),
        ("ctf/df1_A", "<f4"),
        ("ctf/df2_A", "<f4"),
        ("ctf/df_angle_rad", "<f4"),
    ]
    a = np.zeros(n, dtype=dt)
    a["uid"] = [9876543210123, 42][:n]
    a["blob/path"] = b"stack.mrcs"
    a["blob/idx"] = np.arange(n)
    a["blob/shape"] = BOX
    a["blob/psize_A"] = APIX
    a["alignments3D/split"] = np.arange(n) % 2
    a["alignments3D/psize_A"] = APIX
    a["ctf/accel_kv"], a["ctf/cs_mm"], a["ctf/amp_contrast"] = 300.0, 2.7, 0.1
    for i, r in enumerate(ROWS[:n]):
        A = euler_to_matrix(r["rot"], r["tilt"], r["psi"])
        a["alignments3D/pose"][i] = matrix_to_cryosparc_pose(A[None])[0]
        a["alignments3D/shift"][i] = [r["ox"] / APIX, r["oy"] / APIX]
        a["ctf/df1_A"][i], a["ctf/df2_A"][i] = r["du"], r["dv"]
        a["ctf/df_angle_rad"][i] = np.deg2rad(r["ang"])
    return a


def _npy_bytes(arr: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    if version is None:
        np.save(buf, arr, allow_pickle=False)
    else:
        np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)
    return buf.getvalue()


def _fields(arr: np.ndarray, keep: list[str]) -> np.ndarray:
    out = np.zeros(len(arr), dtype=[(n, arr.dtype.fields[n][0]) for n in keep])
    for n in keep:
        out[n] = arr[n]
    return out


class _Marker:
    """An object whose unpickling would create a file (proves no code runs on load)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def cs_cases() -> dict[str, tuple[bytes, dict]]:
    c: dict[str, tuple[bytes, dict]] = {}
    full = _cs_full()
    exp = _expect()
    exp["uid"] = [9876543210123, 42]
    exp["half_set"] = [0, 1]
    c["cryosparc_v4.cs"] = (_npy_bytes(full), {"valid": True, "expect": exp})
    c["npy_format_v2.cs"] = (_npy_bytes(full, (2, 0)), {"valid": True, "expect": exp})
    be = full.astype(full.dtype.newbyteorder(">"))
    c["big_endian_fields.cs"] = (_npy_bytes(be), {"valid": True, "expect": exp})
    imp = full.copy()
    imp["blob/path"] = b">stack.mrcs"
    c["imported_blob_path.cs"] = (_npy_bytes(imp), {"valid": True, "expect": exp})
    # passthrough: particles without CTF, passthrough with CTF in another row order + extra rows
    names = list(full.dtype.names)
    main = _fields(full, [n for n in names if not n.startswith("ctf/")])
    pt_full = np.concatenate([_cs_full(2)[::-1], _cs_full(1)])
    pt_full["uid"][-1] = 7  # a particle the main file does not have
    pt = _fields(pt_full, ["uid"] + [n for n in names if n.startswith("ctf/")])
    c["J1_passthrough_particles.cs"] = (_npy_bytes(pt), {"valid": None})
    c["J1_particles.cs"] = (
        _npy_bytes(main),
        {"valid": True, "expect": exp, "passthrough": "J1_passthrough_particles.cs"},
    )

    def bad(data: bytes, fragment: str, **extra: Any) -> tuple[bytes, dict]:
        return data, {"valid": False, "error": fragment, **extra}

    obj = np.empty(2, dtype=[("uid", "<u8"), ("blob/path", "O")])
    obj["uid"] = [1, 2]
    obj["blob/path"] = [_Marker("PICKLE_RAN_obj"), "x"]
    import io

    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    c["pickled_object_array.cs"] = bad(buf.getvalue(), "pickle")
    c["raw_pickle.cs"] = bad(pickle.dumps({"x": _Marker("PICKLE_RAN_raw")}), "pickle")
    c["text_file.cs"] = bad(b"uid,blob/path\n1,stack.mrcs\n", "no NumPy .npy header")
    c["truncated.cs"] = bad(_npy_bytes(full)[:-20], "truncated")
    hdr = {
        "descr": np.lib.format.dtype_to_descr(full.dtype),
        "fortran_order": False,
        "shape": (10**12,),
    }
    hb = io.BytesIO()
    np.lib.format.write_array_header_1_0(hb, hdr)
    c["huge_shape_header.cs"] = bad(hb.getvalue() + _npy_bytes(full)[128:], "truncated")
    c["malformed_header.cs"] = bad(
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 22) + b"{'descr': __import__(\n", "malformed"
    )
    c["plain_2d_array.cs"] = bad(_npy_bytes(np.zeros((3, 3))), "1D structured")
    c["no_pose.cs"] = bad(
        _npy_bytes(_fields(full, [n for n in names if "pose" not in n])), "alignments3D/pose"
    )
    c["missing_ctf.cs"] = bad(_npy_bytes(main), "ctf/")
    nan = full.copy()
    nan["alignments3D/pose"][1, 0] = np.nan
    c["nan_pose.cs"] = bad(_npy_bytes(nan), "alignments3D/pose")
    split = full.copy()
    split["alignments3D/split"][1] = 7
    c["bad_split.cs"] = bad(_npy_bytes(split), "half_set")
    past = full.copy()
    past["blob/idx"][1] = 99
    c["blob_idx_past_end.cs"] = bad(_npy_bytes(past), "stack")
    c["empty_dataset.cs"] = bad(_npy_bytes(full[:0]), "no particles")
    utf = full.copy()
    utf["blob/path"][1] = b"\xff\xfestack.mrcs"
    c["non_utf8_blob_path.cs"] = bad(_npy_bytes(utf), "blob/path")
    other = pt.copy()
    other["uid"] = [1, 2, 3]
    c["J2_passthrough_particles.cs"] = (_npy_bytes(other), {"valid": None})
    c["J2_particles.cs"] = bad(
        _npy_bytes(main),
        "uids do not match",
        passthrough="J2_passthrough_particles.cs",
        error_file="J2_passthrough_particles.cs",
    )
    return c


# ----------------------------------------------------------------------------- MRC
def _mrc_bytes(
    data: np.ndarray, *, stack: bool = True, mode_dtype: Any = None, ext: int = 0
) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.mrc"
        with mrcfile.new(p, overwrite=True) as m:
            m.set_data(data if mode_dtype is None else data.astype(mode_dtype))
            if stack:
                m.set_image_stack()
            else:
                m.header.ispg = 1
            if ext:
                m.set_extended_header(np.zeros(ext, dtype="V1"))
            m.voxel_size = APIX
        return _no_labels(p.read_bytes())


def _patch(raw: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(raw)
    b[offset : offset + len(value)] = value
    return bytes(b)


def mrc_cases() -> dict[str, tuple[bytes, dict]]:
    c: dict[str, tuple[bytes, dict]] = {}
    pattern = (np.arange(3 * 8 * 8) % 97 - 40).reshape(3, 8, 8)

    def good(
        raw: bytes, values: np.ndarray, mode: int, shape: tuple[int, ...]
    ) -> tuple[bytes, dict]:
        return raw, {
            "valid": True,
            "expect": {
                "shape": list(shape),
                "mode": mode,
                "pixel_size_A": APIX,
                "sum": float(values.astype(np.float64).sum()),
                "first": [float(v) for v in values.ravel()[:8]],
            },
        }

    c["mode0_int8.mrcs"] = good(_mrc_bytes(pattern.astype(np.int8)), pattern, 0, (3, 8, 8))
    c["mode1_int16.mrcs"] = good(
        _mrc_bytes(pattern.astype(np.int16) * 300), pattern * 300, 1, (3, 8, 8)
    )
    f32 = stack_data()[:3, :8, :8]
    c["mode2_float32.mrcs"] = good(_mrc_bytes(f32), f32, 2, (3, 8, 8))
    u16 = np.abs(pattern).astype(np.uint16) * 600
    c["mode6_uint16.mrcs"] = good(_mrc_bytes(u16), u16, 6, (3, 8, 8))
    f16 = (pattern / 8).astype(np.float16)
    c["mode12_float16.mrcs"] = good(_mrc_bytes(f16), f16, 12, (3, 8, 8))
    be = f32.astype(">f4")
    raw_be = _mrc_bytes(be)
    c["big_endian_float32.mrcs"] = good(raw_be, f32, 2, (3, 8, 8))
    c["big_endian_no_machine_stamp.mrcs"] = good(
        _patch(raw_be, 212, b"\0\0\0\0"), f32, 2, (3, 8, 8)
    )
    c["extended_header.mrcs"] = good(_mrc_bytes(f32, ext=512), f32, 2, (3, 8, 8))
    c["no_MAP_word.mrcs"] = good(_patch(_mrc_bytes(f32), 208, b"XXXX"), f32, 2, (3, 8, 8))
    vol = np.random.default_rng(1).normal(size=(8, 8, 8)).astype(np.float32)
    c["volume.mrc"] = good(_mrc_bytes(vol, stack=False), vol, 2, (8, 8, 8))

    def bad(raw: bytes, fragment: str) -> tuple[bytes, dict]:
        return raw, {"valid": False, "error": fragment}

    ok = _mrc_bytes(f32)
    c["mode4_complex.mrcs"] = bad(_mrc_bytes(f32.astype(np.complex64)), "unsupported MRC mode")
    c["mode3_complex_int.mrcs"] = bad(_patch(ok, 12, struct.pack("<i", 3)), "unsupported MRC mode")
    c["mode101_packed.mrcs"] = bad(_patch(ok, 12, struct.pack("<i", 101)), "MRC")
    c["truncated_data.mrcs"] = bad(ok[:-100], "truncated")
    c["short_header.mrc"] = bad(ok[:100], "not a readable MRC")
    c["header_only.mrcs"] = bad(ok[:1024], "truncated")
    c["ext_header_too_big.mrcs"] = bad(_patch(ok, 92, struct.pack("<i", 10**9)), "truncated")
    c["ext_header_negative.mrcs"] = bad(_patch(ok, 92, struct.pack("<i", -64)), "MRC")
    c["zero_sections.mrcs"] = bad(_patch(ok, 8, struct.pack("<i", 0)), "dimensions")
    c["huge_dimensions.mrcs"] = bad(_patch(ok, 0, struct.pack("<i", 2**31 - 1)), "truncated")
    c["text_file.mrc"] = bad(b"this is not an MRC file\n" * 60, "MRC")
    c["empty.mrc"] = bad(b"", "MRC")
    return c


# ----------------------------------------------------------------------------- driver
def make_corpus(outdir: str | Path) -> dict[str, dict]:
    """Write every case under ``outdir`` (``star/``, ``cs/``, ``mrc/`` + ``manifest.json``)."""
    out = Path(outdir)
    manifest: dict[str, dict] = {}
    for kind, cases in (("star", star_cases()), ("cs", cs_cases()), ("mrc", mrc_cases())):
        d = out / kind
        d.mkdir(parents=True, exist_ok=True)
        if kind in ("star", "cs"):
            _write_stack(d / "stack.mrcs")
        for name, (content, entry) in cases.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            (d / name).write_bytes(data)
            manifest[f"{kind}/{name}"] = {"kind": kind, **entry}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    m = make_corpus(target)
    print(f"{len(m)} cases written to {target}")
