"""CryoSPARC .cs reading and writing, and cross-format round trips."""

from __future__ import annotations

import numpy as np
import pytest
from test_io_helpers import APIX, BOX, make_dataset

from cryoclass.errors import InputFileError
from cryoclass.io import Particles, load_cs, read_particles, write_cs, write_star


@pytest.fixture
def ds(tmp_path):
    return make_dataset(tmp_path / "proj")


def test_read_cs_with_passthrough(ds):
    p = read_particles(ds.cs, passthrough=ds.cs_passthrough)
    t = ds.truth
    assert p.source_format == "cs" and len(p) == 12
    np.testing.assert_array_equal(p.meta["uid"].to_numpy().astype(np.uint64), t["uid"])
    np.testing.assert_allclose(p.rotations, t["A"], atol=2e-6)  # poses stored as float32
    for c in ("shift_x_A", "shift_y_A", "defocus_u_A", "defocus_v_A", "defocus_angle_deg", "scale"):
        np.testing.assert_allclose(p.meta[c], t[c], rtol=1e-6, atol=1e-4, err_msg=c)
    np.testing.assert_array_equal(p.meta["half_set"], t["half_set"])
    np.testing.assert_array_equal(p.meta["image_path"].to_numpy(), t["image_path"])
    np.testing.assert_array_equal(p.meta["image_index"], t["image_index"])
    assert p.box == BOX and p.pixel_size_A == pytest.approx(APIX)
    assert (p.meta["optics_group"] == 1).all()
    np.testing.assert_array_equal(p.images.read(np.arange(12)), ds.images)
    # passthrough fields were merged by uid, not by row
    np.testing.assert_array_equal(p.original["blob/idx"], t["image_index"])


def test_cs_round_trip_keeps_every_field(ds):
    p = read_particles(ds.cs, passthrough=ds.cs_passthrough)
    out = ds.root / "J5" / "out.cs"
    post = np.random.default_rng(1).dirichlet(np.ones(3), 12).astype(np.float32)
    extra = {
        "alignments3D/class": post.argmax(1).astype(np.uint32),
        "alignments3D/class_ess": (1 / (post**2).sum(1)).astype(np.float32),
        **{f"alignments_class3D_{k}/class_posterior": post[:, k] for k in range(3)},
        "alignments3D/alpha": np.full(12, 0.5, np.float32),  # overwrite an input field
    }
    write_cs(out, p, extra=extra)
    assert not out.with_suffix(".cs.npy").exists()
    arr = load_cs(out)
    for name in p.original.dtype.names:
        if name != "alignments3D/alpha":
            np.testing.assert_array_equal(arr[name], p.original[name], err_msg=name)
    np.testing.assert_array_equal(arr["alignments3D/alpha"], 0.5)
    np.testing.assert_array_equal(arr["alignments_class3D_2/class_posterior"], post[:, 2])
    back = read_particles(out)  # no passthrough needed: everything was kept
    np.testing.assert_array_equal(back.meta["uid"], p.meta["uid"])
    np.testing.assert_allclose(back.rotations, p.rotations)


def test_cryosparc_tools_reads_our_cs(ds):
    Dataset = pytest.importorskip("cryosparc.dataset").Dataset
    star = read_particles(ds.star31)
    out = ds.root / "from_star.cs"
    write_cs(out, star, extra={"alignments3D/class": np.arange(12, dtype=np.uint32) % 2})
    d = Dataset.load(str(out))
    ours = load_cs(out)
    assert set(d.fields()) == set(ours.dtype.names)
    for name in ours.dtype.names:
        if ours.dtype[name].kind == "S":
            assert list(d[name]) == [s.decode() for s in ours[name]]
        else:
            np.testing.assert_array_equal(d[name], ours[name], err_msg=name)
    assert list(d["blob/path"]) == [f"Extract/mic{i // 6}.mrcs" for i in range(12)]


def test_star_to_cs_to_star(ds):
    star = read_particles(ds.star31)
    cs_path = ds.root / "sub" / "conv.cs"
    write_cs(cs_path, star)
    via_cs = read_particles(cs_path)
    star2_path = ds.root / "conv.star"
    write_star(star2_path, via_cs)
    back = read_particles(star2_path)
    np.testing.assert_allclose(back.rotations, star.rotations, atol=2e-6)
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
        "scale",
        "phase_shift_deg",
        "bfactor_A2",
    ):
        np.testing.assert_allclose(back.meta[c], star.meta[c], rtol=1e-6, atol=1e-3, err_msg=c)
    for c in ("half_set", "optics_group", "uid", "image_index", "image_path", "box_px"):
        np.testing.assert_array_equal(back.meta[c], star.meta[c], err_msg=c)


def test_cs_to_star_to_cs_keeps_uid(ds):
    p = read_particles(ds.cs, passthrough=ds.cs_passthrough)
    star_path = ds.root / "from_cs.star"
    write_star(star_path, p)
    s = read_particles(star_path)
    np.testing.assert_array_equal(s.meta["uid"], p.meta["uid"])
    write_cs(ds.root / "again.cs", s)
    arr = load_cs(ds.root / "again.cs")
    np.testing.assert_array_equal(arr["uid"], p.original["uid"])
    np.testing.assert_allclose(arr["alignments3D/pose"], p.original["alignments3D/pose"], atol=1e-5)


def test_memory_particles_to_cs(ds):
    p = read_particles(ds.star31)
    mem = Particles(p.meta, p.images)
    out = ds.root / "mem.cs"
    write_cs(out, mem, relative_to=str(ds.root))
    back = read_particles(out, project_dir=str(ds.root))
    np.testing.assert_allclose(back.rotations, p.rotations, atol=2e-6)


# --------------------------------------------------------------------------- bad inputs
def _save(path, arr, allow_pickle=False):
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=allow_pickle)


def test_pickled_cs_is_refused(tmp_path):
    arr = np.zeros(2, dtype=[("uid", "<u8"), ("blob/path", "O")])
    _save(tmp_path / "evil.cs", arr, allow_pickle=True)
    with pytest.raises(InputFileError, match=r"evil\.cs: contains pickled Python objects"):
        read_particles(tmp_path / "evil.cs")


def test_not_structured_cs(tmp_path):
    _save(tmp_path / "plain.cs", np.zeros(4))
    with pytest.raises(InputFileError, match=r"plain\.cs: not a CryoSPARC dataset"):
        read_particles(tmp_path / "plain.cs")
    (tmp_path / "junk.cs").write_bytes(b"not numpy at all")
    with pytest.raises(InputFileError, match=r"junk\.cs: not a readable \.cs"):
        read_particles(tmp_path / "junk.cs")


def test_cs_without_pose(ds):
    arr = load_cs(ds.cs_passthrough)  # blobs and CTF only
    _save(ds.root / "nopose.cs", arr)
    with pytest.raises(InputFileError, match=r"nopose\.cs: no alignments3D/pose field"):
        read_particles(ds.root / "nopose.cs")


def test_cs_missing_fields_are_named(ds):
    with pytest.raises(
        InputFileError, match=r"J5_particles\.cs: missing required fields: blob/path"
    ):
        read_particles(ds.cs)  # the passthrough holds the blobs


def test_passthrough_uid_mismatch(ds):
    pt = load_cs(ds.cs_passthrough)
    pt["uid"][:3] += 1
    _save(ds.root / "pt_bad.cs", pt)
    with pytest.raises(InputFileError, match=r"pt_bad\.cs: uids do not match .*: 3 of 12"):
        read_particles(ds.cs, passthrough=ds.root / "pt_bad.cs")


def test_cs_non_finite_pose(ds):
    arr = load_cs(ds.cs)
    arr["alignments3D/pose"][[1, 4, 5], 0] = np.nan
    _save(ds.root / "J5" / "nan.cs", arr)
    with pytest.raises(
        InputFileError, match=r"nan\.cs: non-finite values: alignments3D/pose has 3"
    ):
        read_particles(ds.root / "J5" / "nan.cs", passthrough=ds.cs_passthrough)


def test_cs_missing_stack(ds, tmp_path):
    with pytest.raises(InputFileError, match="particle image stack 'Extract/mic0.mrcs' not found"):
        read_particles(ds.cs, passthrough=ds.cs_passthrough, project_dir=str(tmp_path / "empty"))


def test_cs_index_past_end(ds):
    pt = load_cs(ds.cs_passthrough)
    pt["blob/idx"][0] = 50
    _save(ds.root / "J5" / "pt.cs", pt)
    with pytest.raises(InputFileError) as err:
        read_particles(ds.cs, passthrough=ds.root / "J5" / "pt.cs")
    msg = str(err.value)
    assert "image 51" in msg and "mic1.mrcs" in msg and "J5_particles.cs" in msg


def test_cs_mixed_box(ds):
    pt = load_cs(ds.cs_passthrough)
    pt["blob/shape"][2] = 32
    _save(ds.root / "J5" / "pt.cs", pt)
    with pytest.raises(InputFileError, match="mixed box sizes"):
        read_particles(ds.cs, passthrough=ds.root / "J5" / "pt.cs")


def test_extra_with_wrong_length(ds):
    p = read_particles(ds.cs, passthrough=ds.cs_passthrough)
    with pytest.raises(ValueError, match="alignments3D/class"):
        write_cs(ds.root / "x.cs", p, extra={"alignments3D/class": np.zeros(3)})


def test_plain_pickle_is_refused(tmp_path):
    import pickle

    (tmp_path / "p.cs").write_bytes(pickle.dumps({"uid": [1, 2]}))
    with pytest.raises(InputFileError, match=r"p\.cs: is a Python pickle; refusing"):
        read_particles(tmp_path / "p.cs")
