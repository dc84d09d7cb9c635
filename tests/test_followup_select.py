"""``cryoclass select``: the particles of chosen classes, optionally only the confident ones,
written as the parent's rows (every column) with image paths valid from the new directory."""

from __future__ import annotations

import numpy as np
import pytest
import starfile
import yaml
from _followup_data import small_classification

from cryoclass import read_particles
from cryoclass.cli import main
from cryoclass.errors import InputFileError, ParameterError
from cryoclass.followup import load_result, select_particles
from cryoclass.followup.select import selection_rows


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return small_classification(str(tmp_path_factory.getbasetemp()))


# --------------------------------------------------------------------------- the rule
POST = np.array(
    [
        [0.95, 0.05, 0.00],  # sure of class 0
        [0.50, 0.10, 0.40],  # class 0, but split with class 2
        [0.30, 0.20, 0.50],  # class 2, split with class 0
        [0.10, 0.80, 0.10],  # class 1
        [0.40, 0.35, 0.25],  # class 0, unsure
    ]
)


def test_rule_hard_class_then_summed_posterior():
    lab = POST.argmax(1)
    assert selection_rows(lab, POST, [0]).tolist() == [0, 1, 4]  # P = 0: the class as is
    assert selection_rows(lab, POST, [0], 0.9).tolist() == [0]
    # merging classes 0 and 2: a particle split between them belongs to the merged set
    assert selection_rows(lab, POST, [0, 2], 0.8).tolist() == [0, 1, 2]
    # the most likely class decides membership even where the set's sum would pass
    assert selection_rows(lab, POST, [1, 2], 0.5).tolist() == [2, 3]
    assert selection_rows(lab, POST, [0, 1, 2], 1.0).tolist() == [0, 1, 2, 3, 4]  # sums to 1


@pytest.mark.parametrize("p", [-0.1, 1.01, float("nan")])
def test_rule_refuses_a_probability_outside_0_1(p):
    with pytest.raises(ParameterError, match="between 0 and 1"):
        selection_rows(POST.argmax(1), POST, [0], p)


def test_rule_needs_posteriors_for_a_threshold():
    lab = POST.argmax(1)
    assert selection_rows(lab, None, [1]).tolist() == [3]
    with pytest.raises(ParameterError, match="no class posteriors"):
        selection_rows(lab, None, [1], 0.5)


# --------------------------------------------------------------------------- on a real OUTDIR
def test_selected_files_hold_exactly_the_parents_rows(parent, tmp_path, monkeypatch):
    res = load_result(parent)
    sel = select_particles(res, [1], min_probability=0.9)
    out = tmp_path / "deeper" / "sel"
    files = sel.write(out, command="cryoclass select test")
    assert [f.name for f in files] == ["selected.star", "selected.cs", "selection.yaml"]

    # expected rows, from the parent's particles.star read independently (RELION numbering)
    tab = starfile.read(parent / "particles.star")["particles"]
    want = (tab["rlnClassNumber"] == 2) & (tab["rlnClassPosterior02"] >= 0.9)
    assert 0 < want.sum() < (tab["rlnClassNumber"] == 2).sum()  # the threshold bites
    got = starfile.read(out / "selected.star")["particles"]
    cols = [c for c in tab.columns if c != "rlnImageName"]
    assert got[cols].reset_index(drop=True).equals(tab.loc[want, cols].reset_index(drop=True))

    cs_parent = np.load(parent / "particles.cs")
    cs = np.load(out / "selected.cs")
    assert cs.dtype.names == cs_parent.dtype.names
    keep = np.isin(cs_parent["uid"], got["cryoclassUid"].to_numpy().astype(np.uint64))
    for name in ("uid", "alignments3D/class", "alignments_class3D_1/class_posterior"):
        assert np.array_equal(cs[name], cs_parent[name][keep]), name

    doc = yaml.safe_load((out / "selection.yaml").read_text())
    assert doc["n_selected"] == int(want.sum()) == len(sel.rows)
    assert doc["classes"] == [1] and doc["min_probability"] == 0.9
    assert doc["per_class"] == [
        {
            "class": 1,
            "particles": int((tab["rlnClassNumber"] == 2).sum()),
            "selected": int(want.sum()),
        }
    ]
    # both files read back from anywhere, their images found from the new directory
    monkeypatch.chdir(tmp_path)
    for name in ("selected.star", "selected.cs"):
        p = read_particles(out / name)
        assert len(p) == want.sum()
        assert np.array_equal(p.images.read(np.arange(2)), res.particles.images.read(sel.rows[:2]))


def test_selection_errors_name_the_problem(parent):
    with pytest.raises(ParameterError, match="class 7 does not exist"):
        select_particles(parent, [7])
    with pytest.raises(ParameterError, match="classes"):
        select_particles(parent)
    with pytest.raises(ParameterError, match="no particles"):
        select_particles(parent, [0], min_size=10**6)
    with pytest.raises(ParameterError, match="the classification itself"):
        select_particles(parent, [0]).write(parent)


def test_cli_select(parent, tmp_path, capsys):
    out = tmp_path / "sel"
    assert (
        main(["select", str(parent), "--classes", "0", "1", "-o", str(out), "--formats", "star"])
        == 0
    )
    text = capsys.readouterr().out
    n = len(load_result(parent).labels)
    assert f"selected {n} of {n} particles (classes 0 1)" in text
    assert sorted(p.name for p in out.iterdir()) == ["selected.star", "selection.yaml"]
    assert main(["select", str(parent), "--classes", "9", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cryoclass select: error: parameter 'classes': class 9 does not exist (0..1)"]


def test_result_write_classes_keeps_confident_particles(tmp_path):
    from cryoclass import Classification, ClassificationParams, sim

    ds = sim.simulate(n_particles=240, box=24, pixel_size_A=6.0, snr=0.05, seed=3)
    params = ClassificationParams(
        n_classes=2, filter_res_A=14.0, oem_epochs=1, max_fem_iters=2, init_restarts=1
    )
    res = Classification(ds.particles, params).run()
    uid = res.particles.meta["uid"].to_numpy()
    p = 0.9
    res.write_classes(tmp_path, [0, 1], formats=("star",), min_probability=p)
    for k in (0, 1):
        want = (res.hard == k) & (res.posteriors[:, k] >= p)
        got = starfile.read(tmp_path / f"class_{k:02d}.star")["particles"]["cryoclassUid"]
        assert got.tolist() == uid[want].tolist()
    ambiguous = int(((res.posteriors.max(1)) < p).sum())
    assert ambiguous > 0  # the threshold bites per class …
    selected = starfile.read(tmp_path / "selected.star")["particles"]
    assert len(selected) == len(uid)  # … but both classes together hold every particle
    with pytest.raises(ParameterError, match="between 0 and 1"):
        res.write_classes(tmp_path / "x", [0], min_probability=2.0)
    assert not (tmp_path / "x").exists()  # checked before anything is written


def test_cs_rows_are_matched_by_uid(parent, tmp_path):
    import shutil

    copy = tmp_path / "parent"
    shutil.copytree(parent, copy)
    cs = np.load(copy / "particles.cs")
    with open(copy / "particles.cs", "wb") as fh:  # CryoSPARC rows in another order
        np.save(fh, cs[::-1])
    sel = select_particles(copy, [0])
    sel.write(tmp_path / "sel", formats=("cs",))
    got = np.load(tmp_path / "sel" / "selected.cs")
    want_uid = sel.parent.particles.meta["uid"].to_numpy()[sel.rows].astype(np.uint64)
    assert got["uid"].tolist() == want_uid.tolist()
    by_uid = {int(u): r for u, r in zip(cs["uid"], cs["alignments3D/class"])}
    assert got["alignments3D/class"].tolist() == [by_uid[int(u)] for u in want_uid]
    with open(copy / "particles.cs", "wb") as fh:  # a selected particle missing from the .cs
        np.save(fh, cs[1:])
    with pytest.raises(InputFileError, match="uids are missing"):
        select_particles(copy, [0, 1]).write(tmp_path / "sel2", formats=("cs",))


def test_follow_ups_find_project_relative_images_with_project_dir(tmp_path, monkeypatch, capsys):
    # a RELION-style project: image names relative to the project directory, where it ran
    from cryoclass import sim
    from cryoclass.io.particles import write_particles_with_images

    proj = tmp_path / "project"
    proj.mkdir()
    ds = sim.simulate(n_particles=120, box=24, pixel_size_A=6.0, snr=1.0, seed=5)
    write_particles_with_images(proj / "particles.star", ds.particles, proj / "particles.mrcs")
    monkeypatch.chdir(proj)
    argv = ["classify", "particles.star", "-K", "2", "--filter-res", "14", "-o", "class3d"]
    argv += ["--oem-epochs", "1", "--max-fem-iters", "1", "--init-restarts", "1", "--quiet"]
    assert main(argv) == 0
    names = starfile.read(proj / "class3d" / "particles.star")["particles"]["rlnImageName"]
    assert names.iloc[0].endswith("@particles.mrcs")  # relative to the project, not class3d/
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    cmd = ["select", str(proj / "class3d"), "--classes", "0", "-o", "sel"]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert "particles.mrcs" in err and "not found" in err and len(err.strip().splitlines()) == 1
    assert main([*cmd, "--project-dir", str(proj)]) == 0
    sel = read_particles(elsewhere / "sel" / "selected.star", project_dir=str(proj))
    assert len(sel) == int((load_result(proj / "class3d", str(proj)).labels == 0).sum())
