"""``run_model.star`` + ``run_data.star``: a classification as RELION's class selection opens it.

The model file's values are checked against the result they summarise, and RELION's own class
selection viewer (``relion_display --class``, what the Subset selection job runs) is shown to read
it: started in a virtual X server, it must display one image per class, in class order.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import starfile
from _followup_data import three_states

from cryoclass import Classification, ClassificationParams
from cryoclass.io.relion_model import DATA_NAME, MODEL_NAME, model_blocks


@pytest.fixture(scope="module")
def result():
    """K = 2 classification of 400 particles (closed / open), no outputs written."""
    ds = three_states()
    keep = np.nonzero(ds.labels < 2)[0][:400]
    params = ClassificationParams(n_classes=2, filter_res_A=12.0, max_fem_iters=2, seed=0)
    return Classification(ds.particles.subset(keep), params).run()


# --------------------------------------------------------------------------- the blocks
def test_model_blocks_values():
    fsc = np.array([[1.0, 0.9, 0.2], [1.0, 0.5, 0.0]])
    freq = np.array([0.0, 1 / 40, 2 / 40])  # box 10 px at 4 Å: shell i at i / 40 Å⁻¹
    b = model_blocks(
        ["a/class_00.mrc", "a/class_01.mrc"],
        class_distribution=np.array([0.25, 0.75]),
        resolution_A=np.array([25.0, np.inf]),
        fsc=fsc,
        fsc_freq_invA=freq,
        box_px=10,
        pixel_size_A=4.0,
        current_resolution_A=8.0,
        average_pmax=0.9,
        tau2_fudge=None,
    )
    assert list(b) == ["model_general", "model_classes", "model_class_1", "model_class_2"]
    g = b["model_general"]
    assert (g["rlnOriginalImageSize"], g["rlnPixelSize"], g["rlnNrClasses"]) == (10, 4.0, 2)
    assert "rlnTau2FudgeFactor" not in g  # FSC-filtered classes: no RELION regulariser
    c = b["model_classes"]
    assert list(c["rlnReferenceImage"]) == ["a/class_00.mrc", "a/class_01.mrc"]
    # a resolution that was never reached is RELION's 999
    np.testing.assert_array_equal(c["rlnEstimatedResolution"], [25.0, 999.0])
    s = b["model_class_2"]
    np.testing.assert_array_equal(s["rlnSpectralIndex"], [0, 1, 2])
    np.testing.assert_allclose(s["rlnAngstromResolution"], [999.0, 40.0, 20.0])
    np.testing.assert_array_equal(s["rlnGoldStandardFsc"], fsc[1])
    with_t = model_blocks(
        ["x.mrc"], np.ones(1), np.ones(1), fsc[:1], freq, 10, 4.0, 8.0, 1.0, tau2_fudge=4.0
    )
    assert with_t["model_general"]["rlnTau2FudgeFactor"] == 4.0


# --------------------------------------------------------------------------- the files
def test_written_model_summarises_the_result(result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the RELION project directory: map paths are relative to it
    out = tmp_path / "Class3D" / "run1"
    files = result.write(out)
    model, data = out / MODEL_NAME, out / DATA_NAME
    assert model in files and data in files
    blocks = starfile.read(model, always_dict=True)
    classes = blocks["model_classes"]
    K = result.n_classes
    assert list(classes["rlnReferenceImage"]) == [
        f"Class3D/run1/class_{k:02d}.mrc" for k in range(K)
    ]
    # RELION's pdf_class: the mean posterior of each class
    np.testing.assert_allclose(
        classes["rlnClassDistribution"], result.posteriors.mean(0), atol=1e-6
    )
    assert classes["rlnClassDistribution"].sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(
        classes["rlnEstimatedResolution"], result.class_table()["fsc_res_A"], rtol=1e-5
    )
    g = blocks["model_general"]
    assert g["rlnOriginalImageSize"] == result.box_c and g["rlnNrClasses"] == K
    assert g["rlnPixelSize"] == pytest.approx(result.pixel_size_A)
    assert g["rlnAveragePmax"] == pytest.approx(result.posteriors.max(1).mean(), rel=1e-6)
    for k in range(K):
        shells = blocks[f"model_class_{k + 1}"]
        np.testing.assert_allclose(shells["rlnGoldStandardFsc"], result.fsc[k], atol=1e-5)
        np.testing.assert_allclose(shells["rlnResolution"], result.fsc_freq_invA, rtol=1e-5)
    # run_data.star is particles.star (RELION finds it by the model file's name)
    assert data.is_symlink() and os.readlink(data) == "particles.star"
    assert data.read_bytes() == (out / "particles.star").read_bytes()


def test_rewriting_replaces_both_files(result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    result.write(out)
    first = (out / MODEL_NAME).read_text()
    result.write(out)  # e.g. a resumed run writing its outputs again
    assert (out / MODEL_NAME).read_text().split("\n", 1)[1] == first.split("\n", 1)[1]
    assert os.readlink(out / DATA_NAME) == "particles.star"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_project_dir_sets_the_map_paths(result, tmp_path):
    out = tmp_path / "proj" / "Class3D" / "job012"
    result.write(out, formats=("star",))
    result.write_relion_model(out, project_dir=tmp_path / "proj")
    refs = starfile.read(out / MODEL_NAME, always_dict=True)["model_classes"]["rlnReferenceImage"]
    assert list(refs) == [f"Class3D/job012/class_{k:02d}.mrc" for k in range(result.n_classes)]


def test_cli_project_dir_sets_the_map_paths(tmp_path, monkeypatch, capsys):
    """``cryoclass classify`` run outside the RELION project, given ``--project-dir``: the map
    paths are the project-relative ones RELION needs."""
    from cryoclass import sim
    from cryoclass.cli import main
    from cryoclass.io.particles import write_particles_with_images

    proj, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    ds = sim.simulate(n_particles=120, box=24, pixel_size_A=6.0, snr=1.0, seed=5)
    write_particles_with_images(proj / "particles.star", ds.particles, proj / "particles.mrcs")
    monkeypatch.chdir(elsewhere)
    argv = ["classify", str(proj / "particles.star"), "-K", "2", "--filter-res", "14"]
    argv += ["-o", str(proj / "Class3D" / "cc1"), "--project-dir", str(proj), "--quiet"]
    argv += ["--oem-epochs", "1", "--max-fem-iters", "1", "--init-restarts", "1"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out  # and it says how to open the run in RELION
    assert f"relion_display --gui --class --i {proj / 'Class3D' / 'cc1' / MODEL_NAME}" in out
    model = starfile.read(proj / "Class3D" / "cc1" / MODEL_NAME, always_dict=True)
    refs = list(model["model_classes"]["rlnReferenceImage"])
    assert refs == ["Class3D/cc1/class_00.mrc", "Class3D/cc1/class_01.mrc"]
    assert all((proj / r).is_file() for r in refs)


def test_no_star_output_no_model(result, tmp_path):
    out = tmp_path / "cs_only"
    result.write(out, formats=("cs",), per_class=False)
    assert not (out / MODEL_NAME).exists() and not (out / DATA_NAME).exists()


# --------------------------------------------------------------------------- RELION reads it
def _read_xwd(path: Path) -> np.ndarray:
    """An X window dump (what ``Xvfb -fbdir`` keeps its screen in) → (H, W, 3) uint8 RGB."""
    raw = path.read_bytes()
    h = struct.unpack(">25I", raw[:100])
    header_size, width, height = h[0], h[4], h[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = h[7], h[11], h[12], h[19]
    assert bits_per_pixel == 32, f"unexpected {bits_per_pixel} bits per pixel"
    offset = header_size + 12 * ncolors
    px = np.frombuffer(raw, np.uint8, count=bytes_per_line * height, offset=offset)
    px = px.reshape(height, bytes_per_line)[:, : width * 4].reshape(height, width, 4)
    return px[..., [2, 1, 0]] if byte_order == 0 else px[..., [1, 2, 3]]


def _tiles(screen: np.ndarray, box: int) -> list[np.ndarray]:
    """The images shown in the first row of RELION's display window (light grey, 192): the
    runs of non-grey columns one row into the images, each a box + 2 px framed tile."""
    grey = np.all(screen == 192, axis=-1)
    if grey.sum() < 10_000:
        return []
    ys, xs = np.nonzero(grey)
    top, left, right = ys.min(), xs.min(), xs.max()
    row = ~grey[top + 1 + box // 2, left : right + 1]
    edges = np.diff(np.r_[0, row.astype(np.int8), 0])
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [
        screen[top + 2 : top + 2 + box, left + s + 1 : left + s + 1 + box].mean(-1)
        for s, e in zip(starts, ends)
        if e - s >= box
    ]


def _need(program: str) -> str:
    exe = shutil.which(program)
    if exe is None:
        if os.environ.get("CRYOCLASS_REQUIRE_RELION") == "1":
            pytest.fail(f"{program} not found but CRYOCLASS_REQUIRE_RELION=1")
        pytest.skip(f"{program} not installed (Debian packages relion-gui, xvfb)")
    return exe


@pytest.mark.relion
def test_relion_class_selection_shows_our_classes(result, tmp_path, monkeypatch):
    display, xvfb = _need("relion_display"), _need("Xvfb")
    # class maps that tell themselves apart: a ball at a different place in each
    D, K = result.box_c, result.n_classes
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    where = [(-6, -5), (5, 6)]  # (y, x) offsets in px of each class's ball
    vols = np.stack(
        [((z**2 + (y - dy) ** 2 + (x - dx) ** 2) <= 9).astype(np.float32) for dy, dx in where]
    )
    res = dataclasses.replace(result, volumes=vols)
    monkeypatch.chdir(tmp_path)
    res.write("Class3D")

    fb = tmp_path / "fb"
    fb.mkdir()
    ready_r, ready_w = os.pipe()  # Xvfb picks a free display and writes its number here
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(ready_w), "-screen", "0", "800x600x24", "-fbdir", str(fb),
         "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(ready_w,),
    )  # fmt: skip
    os.close(ready_w)
    viewer = None
    try:
        with os.fdopen(ready_r) as ready:
            number = ready.readline().strip()
        assert number.isdigit(), "Xvfb did not start"
        screen_file = fb / "Xvfb_screen0"
        log = open(tmp_path / "display.log", "w")
        viewer = subprocess.Popen(
            [display, "--i", f"Class3D/{MODEL_NAME}", "--class", "--allow_save",
             "--fn_parts", "sel_particles.star", "--fn_imgs", "sel_classes.star"],
            env={**os.environ, "DISPLAY": f":{number}"}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        tiles: list[np.ndarray] = []
        for _ in range(150):  # up to 30 s
            time.sleep(0.2)
            if viewer.poll() is not None:
                break
            tiles = _tiles(_read_xwd(screen_file), D)
            if len(tiles) >= K:
                break
        text = (tmp_path / "display.log").read_text()
        assert viewer.poll() is None, f"relion_display exited: {text[-2000:]}"
        assert "ERROR" not in text, text[-2000:]
        assert len(tiles) == K, f"{len(tiles)} class images shown, expected {K}"
        # each image shows its class's ball, in class order (central section or projection
        # along z: either puts the ball at (D/2 + dy, D/2 + dx))
        for k, (tile, (dy, dx)) in enumerate(zip(tiles, where)):
            bright = tile > tile.min() + 0.5 * (tile.max() - tile.min())
            cy, cx = (np.mean(i) - D // 2 for i in np.nonzero(bright))
            assert abs(cy - dy) <= 1.5 and abs(cx - dx) <= 1.5, (k, cy, cx, dy, dx)
    finally:
        for proc in (viewer, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
