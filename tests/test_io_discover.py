"""Finding particle files in a project by their headers (the dashboard's suggestions)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from test_io_helpers import make_dataset

from cryoclass.io.discover import find_particle_files, particle_file_kind

MODEL_STAR = """
data_model_classes

loop_
_rlnReferenceImage #1
_rlnClassDistribution #2
Class3D/job012/run_it025_class001.mrc 1.0
"""
MICROGRAPHS_STAR = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnMicrographPixelSize #2
1 1.0

data_micrographs

loop_
_rlnMicrographName #1
MotionCorr/job002/Movies/a.mrc
"""


@pytest.fixture
def project(tmp_path):
    """A RELION/CryoSPARC-like project: particle files among decoys."""
    ds = make_dataset(tmp_path / "proj")
    root = ds.root
    refine = root / "Refine3D" / "job010"
    refine.mkdir(parents=True)
    shutil.copy(ds.star31, refine / "run_data.star")
    (refine / "run_model.star").write_text(MODEL_STAR)
    (refine / "job.star").write_text("data_job\n\n_rlnJobTypeLabel relion.refine3d\n")
    (root / "micrographs_ctf.star").write_text(MICROGRAPHS_STAR)
    exposures = np.zeros(3, dtype=[("uid", "<u8"), ("micrograph_blob/path", "O")])
    with open(root / "J3_exposures.cs", "wb") as fh:
        np.save(fh, exposures, allow_pickle=True)
    (root / "broken.cs").write_bytes(b"not a numpy file")
    (root / ".hidden").mkdir()
    shutil.copy(ds.star31, root / ".hidden" / "particles.star")
    os.symlink("particles31.star", root / "link_data.star")
    deep = root / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    shutil.copy(ds.star31, deep / "too_deep.star")
    return ds


def test_finds_particles_and_passthrough_by_header(project):
    root = project.root
    found = find_particle_files(root)
    cs, pt = (os.path.relpath(f, root) for f in (project.cs, project.cs_passthrough))
    assert (cs, pt) == ("J5/J5_particles.cs", "J5/J5_passthrough_particles.cs")
    assert found["particles"] == sorted(
        [cs, "Refine3D/job010/run_data.star", "particles30.star", "particles31.star"]
    )
    assert found["passthrough"] == [pt]
    assert particle_file_kind(root / "Refine3D" / "job010" / "run_model.star") is None
    assert particle_file_kind(root / "micrographs_ctf.star") is None
    assert particle_file_kind(root / "J3_exposures.cs") is None
    assert particle_file_kind(root / "broken.cs") is None
    assert particle_file_kind(root / "missing.star") is None
    # a deeper search reaches a/b/c/d (depth 4)
    assert "a/b/c/d/too_deep.star" in find_particle_files(root, max_depth=4)["particles"]


def test_the_walk_is_bounded(project):
    assert sum(map(len, find_particle_files(project.root, max_files=2).values())) == 2
    assert find_particle_files(project.root, max_entries=1) == {
        "particles": [],
        "passthrough": [],
    }
    assert find_particle_files(project.root / "no_such_dir") == {
        "particles": [],
        "passthrough": [],
    }
