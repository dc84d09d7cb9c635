"""Re-classify a subset of classes: the right particles, clean class columns, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from _followup_data import small_classification, three_states

from cryoclass.errors import InputFileError, ParameterError
from cryoclass.followup import (
    load_result,
    reclassify,
    select_classes,
    select_particles,
    subset_particles,
)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return small_classification(str(tmp_path_factory.getbasetemp()))


def test_load_result(parent):
    res = load_result(parent)
    assert res.n_classes == 2 and res.volumes.shape == (2, 22, 22, 22)
    assert res.posteriors is not None and res.posteriors.shape == (600, 2)
    assert res.labels.tolist() == np.argmax(res.posteriors, 1).tolist()
    assert res.solvent_mask is not None and res.params["n_classes"] == 2
    assert res.command.startswith("cryoclass classify")
    with pytest.raises(InputFileError, match="not a directory"):
        load_result(parent / "params.yaml")


def test_subset_has_exactly_the_particles_of_the_classes(parent):
    res = load_result(parent)
    for classes in ([0], [1], [0, 1]):
        sub = subset_particles(res, classes)
        expect = res.particles.meta["uid"].to_numpy()[np.isin(res.labels, classes)]
        assert sub.meta["uid"].tolist() == expect.tolist()
        cols = [c for c in sub.original.columns if c.startswith("rlnClass")]
        assert cols == []  # the parent's class columns are dropped
    sizes = np.bincount(res.labels, minlength=2)
    big = int(np.argmax(sizes))
    assert len(subset_particles(parent, min_size=sizes.max())) == sizes.max()
    assert select_classes(res.labels, 2, min_size=sizes.max()) == [big]
    kept = subset_particles(res, [0], keep_class_columns=True)
    assert "rlnClassPosterior02" in kept.original.columns


def test_subset_bad_selections(parent):
    res = load_result(parent)
    with pytest.raises(ParameterError, match="classes"):
        subset_particles(res)
    with pytest.raises(ParameterError, match="class 5 does not exist"):
        subset_particles(res, [5])
    with pytest.raises(ParameterError, match="no particles"):
        subset_particles(res, [0], min_size=10**6)


def test_subset_and_reclassify_keep_only_confident_particles(parent, tmp_path):
    res = load_result(parent)
    confident = (res.labels == 1) & (res.posteriors[:, 1] >= 0.95)
    assert 0 < confident.sum() < (res.labels == 1).sum()
    uid = res.particles.meta["uid"].to_numpy()
    sub = subset_particles(parent, [1], min_probability=0.95)
    assert sub.meta["uid"].tolist() == uid[confident].tolist()
    job = reclassify(parent, [1], min_probability=0.95, n_classes=2, outdir=tmp_path / "r")
    assert job.provenance["min_probability"] == 0.95
    assert job.provenance["n_particles"] == int(confident.sum())
    with pytest.raises(ParameterError, match="no class posteriors"):  # explicit labels only
        subset_particles(res.particles, [1], labels=res.labels, min_probability=0.5)
    res.posteriors = np.full_like(res.posteriors, 0.5)  # nobody is sure of anything
    with pytest.raises(ParameterError, match="no particle of classes"):
        subset_particles(res, [1], min_probability=0.6)
    with pytest.raises(ParameterError, match="no particle of classes"):
        select_particles(res, [1], min_probability=0.6)


def test_subset_of_in_memory_particles_with_labels():
    ds = three_states()
    sub = subset_particles(ds.particles, [2], labels=ds.labels)
    assert len(sub) == int((ds.labels == 2).sum())


def test_reclassify_writes_provenance(parent, tmp_path):
    res = load_result(parent)
    out = tmp_path / "sub"
    job = reclassify(parent, [1], n_classes=3, max_fem_iters=1, oem_epochs=1, outdir=out)
    assert job.params.n_classes == 3
    assert job.params.filter_res_A == res.params["filter_res_A"]  # inherited from the parent
    result = job.run()
    assert result is not None and result.posteriors.shape == (int((res.labels == 1).sum()), 3)
    doc = yaml.safe_load((out / "params.yaml").read_text())
    prov = doc["provenance"]
    assert prov["parent_outdir"] == str(parent.resolve())
    assert prov["parent_command"] == res.command
    assert prov["classes"] == [1]
    assert prov["n_particles"] == int((res.labels == 1).sum())
    again = load_result(out)  # the new OUTDIR holds 3 classes, no stale parent columns
    assert again.posteriors.shape[1] == 3
    assert set(again.particles.meta["uid"]) == set(
        res.particles.meta["uid"].to_numpy()[res.labels == 1]
    )


def test_cli_reclassify_and_reconstruct(parent, tmp_path, capsys):
    from cryoclass.cli import main

    out = tmp_path / "cli_sub"
    argv = ["reclassify", str(parent), "--classes", "0", "1", "-K", "2", "--filter-res", "16"]
    argv += ["--max-fem-iters", "1", "--oem-epochs", "1", "-o", str(out), "--quiet"]
    assert main(argv) == 0
    doc = yaml.safe_load((out / "params.yaml").read_text())
    assert doc["provenance"]["classes"] == [0, 1]
    assert doc["params"]["filter_res_A"] == 16.0
    assert doc["command"].startswith("cryoclass reclassify")
    assert main(["reclassify", str(parent), "-K", "2", "-o", str(tmp_path / "x")]) == 2
    assert "classes" in capsys.readouterr().err
    hr_out = tmp_path / "hr"
    assert main(["reconstruct", str(parent / "particles.star"), "-o", str(hr_out), "--quiet"]) == 0
    assert (hr_out / "class_01_half_B.mrc").exists() and (hr_out / "fsc.csv").exists()
