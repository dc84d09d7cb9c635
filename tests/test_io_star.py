"""RELION .star reading and writing."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import starfile
from test_io_helpers import APIX, BOX, make_dataset, write_stack

from cryoclass.conventions import matrix_to_euler
from cryoclass.errors import InputFileError
from cryoclass.io import CANONICAL_COLUMNS, Particles, read_mrc, read_particles, write_star
from cryoclass.io.star import read_star, write_star_subsets


@pytest.fixture
def ds(tmp_path):
    return make_dataset(tmp_path / "proj")


def check_truth(p: Particles, truth, rtol=1e-9, atol=1e-6):
    m = p.meta
    assert list(m.columns) == list(CANONICAL_COLUMNS)
    np.testing.assert_allclose(p.rotations, truth["A"], atol=atol)
    for col in ("shift_x_A", "shift_y_A", "defocus_u_A", "defocus_v_A", "defocus_angle_deg"):
        np.testing.assert_allclose(m[col], truth[col], rtol=rtol, atol=atol, err_msg=col)
    np.testing.assert_allclose(m["scale"], truth["scale"], rtol=1e-6)
    np.testing.assert_array_equal(m["half_set"], truth["half_set"])
    np.testing.assert_array_equal(m["image_path"].to_numpy(), truth["image_path"])
    np.testing.assert_array_equal(m["image_index"], truth["image_index"])
    assert (m["voltage_kV"] == 300).all() and (m["cs_mm"] == 2.7).all()
    assert np.allclose(m["amplitude_contrast"], 0.1) and (m["optics_group"] == 1).all()
    assert (m["phase_shift_deg"] == 0).all() and (m["bfactor_A2"] == 0).all()
    assert (m["box_px"] == BOX).all()
    assert p.box == BOX and p.pixel_size_A == pytest.approx(APIX)


def test_read_star31(ds):
    p = read_particles(ds.star31)
    assert p.source_format == "star" and p.source_path == str(ds.star31)
    assert len(p) == 12 and p.optics is not None
    check_truth(p, ds.truth)
    np.testing.assert_array_equal(p.meta["uid"], np.arange(12))
    np.testing.assert_array_equal(p.images.read(np.arange(12)), ds.images)
    assert list(p.original.columns)[0] == "rlnImageName"


@pytest.mark.parametrize("source", ["star31", "star30"])
def test_star_subsets_equal_star_of_subset(ds, source):
    """Per-class files copied as rows of the full file are what write_star of the subset
    writes, byte for byte after starfile's time-stamped first line (a RELION 3.0 input is
    converted in both). An empty class keeps the optics table (write_star of an empty RELION
    3.0 subset has no optics rows to derive it from)."""
    p = read_particles(getattr(ds, source))
    extra = {"rlnClassNumber": np.arange(12) % 3 + 1, "rlnPost": np.linspace(0, 1, 12)}
    full = ds.root / "all.star"
    write_star(full, p, extra=extra)
    subsets = {k: np.nonzero(np.arange(12) % 3 == k)[0] for k in range(3)}
    subsets[3] = np.array([], dtype=np.int64)  # an empty class
    write_star_subsets(full, {str(ds.root / f"fast_{k}.star"): i for k, i in subsets.items()})

    def body(path):
        return path.read_text().split("\n", 1)[1]

    for k, idx in subsets.items():
        fast = ds.root / f"fast_{k}.star"
        if not idx.size:
            blocks = read_star(fast)
            assert len(blocks["particles"]) == 0 and len(blocks["optics"]) == 1
            continue
        ref = ds.root / f"ref_{k}.star"
        write_star(ref, p.subset(idx), extra={c: np.asarray(v)[idx] for c, v in extra.items()})
        assert body(fast) == body(ref), k
    assert len(read_particles(ds.root / "fast_1.star")) == 4
    with pytest.raises(IndexError):
        write_star_subsets(full, {str(ds.root / "bad.star"): np.array([12])})
    assert not (ds.root / "bad.star").exists()


def test_star30_and_star31_give_same_meta(ds):
    p30, p31 = read_particles(ds.star30), read_particles(ds.star31)
    assert p30.optics is None
    check_truth(p30, ds.truth)
    pd.testing.assert_frame_equal(p30.meta, p31.meta, check_exact=False, rtol=1e-9, atol=1e-9)


def test_star_round_trip_keeps_every_column(ds, tmp_path):
    p = read_particles(ds.star31)
    out = ds.root / "out.star"
    write_star(out, p, extra={"rlnClassNumber": np.arange(12) % 3 + 1, "rlnNew": np.ones(12)})
    blocks = read_star(out)
    orig = read_star(ds.star31)
    pd.testing.assert_frame_equal(blocks["optics"], orig["optics"])
    parts = blocks["particles"]
    assert set(orig["particles"].columns) | {"rlnNew"} == set(parts.columns)
    for c in orig["particles"].columns:
        if c != "rlnClassNumber":
            pd.testing.assert_series_equal(parts[c], orig["particles"][c], check_exact=False)
    np.testing.assert_array_equal(parts["rlnClassNumber"], np.arange(12) % 3 + 1)
    # image names unchanged (they still resolve from the same directory), and re-reading works
    assert (parts["rlnImageName"] == orig["particles"]["rlnImageName"]).all()
    pd.testing.assert_frame_equal(read_particles(out).meta, p.meta)
    assert not [f for f in os.listdir(ds.root) if f.endswith(".tmp") or f.startswith(".out")]


def test_star_written_elsewhere_rewrites_image_paths(ds, tmp_path):
    p = read_particles(ds.star31)
    out = tmp_path / "elsewhere" / "deep" / "x.star"
    write_star(out, p)
    names = read_star(out)["particles"]["rlnImageName"]
    assert names.str.contains(r"\.\./").all()
    pd.testing.assert_frame_equal(read_particles(out).meta, p.meta)


def test_star30_written_as_31(ds):
    p30 = read_particles(ds.star30)
    out = ds.root / "conv.star"
    write_star(out, p30)
    blocks = read_star(out)
    assert "optics" in blocks and "rlnOriginXAngst" in blocks["particles"]
    assert "rlnOriginX" not in blocks["particles"] and "rlnVoltage" not in blocks["particles"]
    assert "rlnMicrographName" in blocks["particles"]
    pd.testing.assert_frame_equal(read_particles(out).meta, p30.meta, check_exact=False)


def test_subset_keeps_original_rows(ds):
    p = read_particles(ds.star31)
    sub = p.subset([5, 2, 2])
    assert len(sub) == 3 and list(sub.original.index) == [0, 1, 2]
    assert (
        sub.original["rlnImageName"].tolist() == p.original["rlnImageName"].iloc[[5, 2, 2]].tolist()
    )
    np.testing.assert_array_equal(sub.images.read([0, 1]), ds.images[[5, 2]])
    out = ds.root / "sub.star"
    write_star(out, sub)
    np.testing.assert_allclose(read_particles(out).rotations, p.rotations[[5, 2, 2]])


def test_memory_particles_to_star(ds, tmp_path):
    p = read_particles(ds.star31)
    mem = Particles.from_arrays(ds.images, p.meta.drop(columns=["image_path"]))
    with pytest.raises(ValueError, match="no image files"):
        write_star(tmp_path / "m.star", mem)
    meta = p.meta.copy()
    meta["uid"] = np.arange(12) + 100
    mem = Particles(meta, p.images)  # memory format, metadata-built columns
    out = ds.root / "built.star"
    write_star(out, mem)
    back = read_particles(out)
    check_truth(back, ds.truth)
    np.testing.assert_array_equal(back.meta["uid"], np.arange(12) + 100)
    rot, tilt, psi = matrix_to_euler(ds.truth["A"])
    np.testing.assert_allclose(read_star(out)["particles"]["rlnAngleTilt"], tilt, atol=1e-9)


# --------------------------------------------------------------------------- bad inputs
def _edit_star(src, dst, fn):
    blocks = starfile.read(src, always_dict=True)
    fn(blocks)
    starfile.write(blocks, dst, float_format="%.10g")


def test_missing_star_file(tmp_path):
    with pytest.raises(InputFileError, match="nope.star: file not found"):
        read_particles(tmp_path / "nope.star")


def test_unknown_extension(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputFileError, match=r"x\.txt: unknown particle file type '\.txt'"):
        read_particles(tmp_path / "x.txt")


def _drop_tilt_defocus(blocks):
    blocks["particles"] = blocks["particles"].drop(columns=["rlnAngleTilt", "rlnDefocusU"])


def test_missing_columns_are_named(ds):
    bad = ds.root / "bad.star"
    _edit_star(ds.star31, bad, _drop_tilt_defocus)
    with pytest.raises(
        InputFileError, match="bad.star: missing required columns: rlnAngleTilt, rlnDefocusU"
    ):
        read_particles(bad)


def test_index_past_end_of_stack(ds):
    bad = ds.root / "bad.star"

    def edit(b):
        b["particles"].loc[3, "rlnImageName"] = "000099@Extract/mic0.mrcs"

    _edit_star(ds.star31, bad, edit)
    with pytest.raises(InputFileError) as err:
        read_particles(bad)
    msg = str(err.value)
    assert "mic0.mrcs" in msg and "image 99" in msg and "only 8 images" in msg and "bad.star" in msg


def test_missing_stack_is_named(ds):
    bad = ds.root / "bad.star"

    def edit(b):
        b["particles"].loc[0, "rlnImageName"] = "000001@Extract/gone.mrcs"

    _edit_star(ds.star31, bad, edit)
    with pytest.raises(
        InputFileError, match=r"bad\.star: particle image stack 'Extract/gone.mrcs' not found"
    ):
        read_particles(bad)


def test_mixed_box_sizes(ds):
    write_stack(ds.root / "Extract" / "big.mrcs", np.zeros((3, 24, 24)))
    bad = ds.root / "bad.star"

    def edit(b):
        b["particles"].loc[0, "rlnImageName"] = "000001@Extract/big.mrcs"

    _edit_star(ds.star31, bad, edit)
    with pytest.raises(InputFileError) as err:
        read_particles(bad)
    msg = str(err.value)
    assert "different box sizes" in msg and "big.mrcs" in msg and "mic0.mrcs" in msg


@pytest.mark.parametrize("column", ["rlnAngleRot", "rlnOriginXAngst", "rlnDefocusU"])
def test_non_finite_values(ds, column):
    bad = ds.root / "bad.star"

    def edit(b):
        b["particles"].loc[[2, 7], column] = [np.nan, np.inf]

    _edit_star(ds.star31, bad, edit)
    with pytest.raises(
        InputFileError, match=rf"bad\.star: non-finite values: {column}\w* has 2 rows"
    ):
        read_particles(bad)


def test_bad_image_name(ds):
    bad = ds.root / "bad.star"

    def edit(b):
        b["particles"].loc[1, "rlnImageName"] = "x@Extract/mic0.mrcs"

    _edit_star(ds.star31, bad, edit)
    with pytest.raises(
        InputFileError, match=r"bad\.star: rlnImageName 'x@Extract/mic0.mrcs' \(row 1\)"
    ):
        read_particles(bad)


def test_truncated_stack_via_star(ds):
    stack = ds.stacks[1]
    raw = stack.read_bytes()
    stack.write_bytes(raw[: len(raw) - 500])
    with pytest.raises(InputFileError) as err:
        read_particles(ds.star31)
    assert "mic1.mrcs" in str(err.value) and "truncated" in str(err.value)
    assert "particles31.star" in str(err.value)


def test_garbage_star(tmp_path):
    bad = tmp_path / "g.star"
    bad.write_text("data_particles\n\nloop_\n_rlnImageName #1\n")
    with pytest.raises(InputFileError, match="g.star"):
        read_particles(bad)


# --------------------------------------------------------------------------- RELION itself
def _relion(program: str) -> str:
    exe = shutil.which(program)
    if exe is None:
        if os.environ.get("CRYOCLASS_REQUIRE_RELION") == "1":
            pytest.fail(f"{program} not found but CRYOCLASS_REQUIRE_RELION=1")
        pytest.skip("RELION binaries not installed")
    return exe


@pytest.mark.relion
def test_relion_reads_our_star(ds, tmp_path):
    exe = _relion("relion_star_handler")
    p = read_particles(ds.cs, passthrough=ds.cs_passthrough)  # cs input: columns built from meta
    ours = ds.root / "ours.star"
    write_star(ours, p, extra={"rlnClassNumber": np.arange(12) % 2 + 1})
    out = ds.root / "relion_out.star"
    run = subprocess.run(
        [exe, "--i", str(ours), "--o", str(out)],
        cwd=ds.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    back = read_particles(out)
    np.testing.assert_allclose(back.rotations, p.rotations, atol=1e-5)
    for c in (
        "shift_x_A",
        "shift_y_A",
        "defocus_u_A",
        "defocus_v_A",
        "defocus_angle_deg",
        "voltage_kV",
        "cs_mm",
        "amplitude_contrast",
        "pixel_size_A",
        "half_set",
        "scale",
    ):
        np.testing.assert_allclose(back.meta[c], p.meta[c], rtol=1e-5, atol=1e-4, err_msg=c)
    np.testing.assert_array_equal(back.meta["uid"], p.meta["uid"])
    np.testing.assert_array_equal(
        read_star(out)["particles"]["rlnClassNumber"], np.arange(12) % 2 + 1
    )


@pytest.mark.relion
def test_relion_reconstruct_reads_our_images(tmp_path):
    """Simulator path: in-memory particles → .mrcs + star → relion_reconstruct runs on them."""
    from cryoclass.conventions import euler_to_matrix
    from cryoclass.io import write_particles_with_images

    exe = _relion("relion_reconstruct")
    rng = np.random.default_rng(0)
    n = 40
    A = euler_to_matrix(
        rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)
    )
    meta = {"rotations": A, "pixel_size_A": 2.0, "defocus_u_A": rng.uniform(1e4, 2e4, n)}
    p = Particles.from_arrays(rng.normal(size=(n, 20, 20)).astype(np.float32), meta)
    job = tmp_path / "job"
    write_particles_with_images(job / "p.star", p, tmp_path / "Extract" / "p.mrcs")
    run = subprocess.run(
        [exe, "--i", "p.star", "--o", "rec.mrc", "--ctf"],
        cwd=job,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    vol, apix = read_mrc(job / "rec.mrc")
    assert vol.shape == (20, 20, 20) and apix == pytest.approx(2.0) and np.isfinite(vol).all()


def test_image_names_relative_to_project_dir(ds, monkeypatch, tmp_path):
    """RELION resolves image names against the project directory (cwd), not the star's folder."""
    job = ds.root / "Class3D" / "job001"
    job.mkdir(parents=True)
    shutil.copy(ds.star31, job / "run_data.star")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFileError, match="'Extract/mic0.mrcs' not found"):
        read_particles(job / "run_data.star")
    p = read_particles(job / "run_data.star", project_dir=str(ds.root))
    np.testing.assert_array_equal(p.meta["image_path"].to_numpy(), ds.truth["image_path"])
    monkeypatch.chdir(ds.root)
    q = read_particles(job / "run_data.star")
    pd.testing.assert_frame_equal(p.meta, q.meta)
    write_star(job / "out.star", q)  # names still resolve from the project dir: kept as they are
    assert read_star(job / "out.star")["particles"]["rlnImageName"].str.startswith("0").all()
    assert not read_star(job / "out.star")["particles"]["rlnImageName"].str.contains(r"\.\.").any()
