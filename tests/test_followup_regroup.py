"""Regroup an over-classified dataset (30 classes of 3 true states) back into 3 superclasses.

Fast tests build the 30 class maps by reconstructing 10 random subsets (~100 particles each)
of each true state (an over-classification whose every class is pure); the slow test runs a
real K = 30 classification. ARI (adjusted Rand index) of the per-particle superclasses against
the true states must be ≥ 0.9.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _followup_data import STATES, small_classification, three_states

from cryoclass.demo import adjusted_rand_index
from cryoclass.errors import ParameterError
from cryoclass.followup import reconstruct_classes, regroup
from cryoclass.followup.superclasses import CS_FIELD, STAR_COLUMN, class_correlation


@pytest.fixture(scope="module")
def over_classified():
    ds = three_states()
    rng = np.random.default_rng(0)
    labels = ds.labels * 10 + rng.integers(0, 10, len(ds.labels))
    return ds, labels, reconstruct_classes(ds.particles, labels)


@pytest.mark.parametrize(
    "method,backend",
    [("hierarchical", "auto"), ("spectral", "sklearn"), ("spectral", "numpy")],
)
def test_regroups_to_the_true_states(over_classified, method, backend):
    ds, labels, hr = over_classified
    rg = regroup(hr, 3, method=method, spectral_backend=backend)
    ari = adjusted_rand_index(ds.labels, rg.labels)
    assert ari >= 0.9, (method, backend, ari, rg.superclass_of_class)
    # every true state's 10 classes land in one superclass
    sup = rg.superclass_of_class.reshape(3, 10)
    assert all(len(set(row)) == 1 for row in sup)
    assert rg.labels.tolist() == rg.superclass_of_class[labels].tolist()


def test_mass_weighted_volumes_and_plot_data(over_classified):
    _, labels, hr = over_classified
    rg = regroup(hr, 3)
    sizes = np.bincount(labels, minlength=30)
    j = rg.superclass_of_class[0]
    ks = np.nonzero(rg.superclass_of_class == j)[0]
    expect = np.tensordot(sizes[ks] / sizes[ks].sum(), hr.volumes[ks], axes=1)
    np.testing.assert_allclose(rg.volumes[j], expect, rtol=1e-4, atol=1e-6)
    assert rg.superclass_sizes().sum() == len(labels)
    assert np.all(np.diff(rg.superclass_sizes()) <= 0)  # numbered by decreasing size
    assert rg.linkage.shape == (29, 4)
    # 'auto' low-pass: the coarsest FSC = 0.5 resolution of the 30 class maps
    assert 8.0 < rg.lowpass_A == pytest.approx(np.nanmax(hr.resolution_A(threshold=0.5)))
    assert sorted(int(k) for k in rg.dendrogram["ivl"]) == list(range(30))
    assert {"icoord", "dcoord", "leaves", "color_list"} <= set(rg.dendrogram)
    c = rg.correlation
    assert c.shape == (30, 30) and np.allclose(c, c.T) and np.allclose(np.diag(c), 1)


def test_min_class_size_and_exclude(over_classified):
    ds, labels, hr = over_classified
    sizes = np.bincount(labels, minlength=30)
    small = int(np.argmin(sizes))
    rg = regroup(hr, 3, min_class_size=sizes[small] + 1, exclude=[4, 17])
    left_out = {small, 4, 17}
    assert set(np.nonzero(rg.superclass_of_class < 0)[0]) == left_out
    assert np.all(rg.labels[np.isin(labels, list(left_out))] == -1)
    kept = rg.labels >= 0
    assert adjusted_rand_index(ds.labels[kept], rg.labels[kept]) >= 0.9
    assert rg.class_table().loc[4, "left_out"] == "excluded"
    assert rg.linkage.shape == (30 - len(left_out) - 1, 4)
    with pytest.raises(ParameterError, match="exclude"):
        regroup(hr, 3, exclude=[30])
    with pytest.raises(ParameterError, match="n_superclasses"):
        regroup(hr, 28, exclude=range(5))
    with pytest.raises(ParameterError, match="method"):
        regroup(hr, 3, method="kmeans")
    with pytest.raises(ParameterError, match="lowpass_A"):
        regroup(hr, 3, lowpass_A="fine")


def test_bare_volumes_and_correlation():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 12, 12, 12))
    vols = np.concatenate([base[0] + 0.1 * rng.standard_normal((4, 12, 12, 12)),
                           base[1] + 0.1 * rng.standard_normal((3, 12, 12, 12))])  # fmt: skip
    vols = np.concatenate([vols, np.zeros((1, 12, 12, 12))])  # an empty class map
    rg = regroup(vols.astype(np.float32), 2)
    assert rg.superclass_of_class.tolist() == [0, 0, 0, 0, 1, 1, 1, -1]
    assert rg.reasons == {7: "empty map"}
    assert rg.labels is None and rg.lowpass_A is None  # no FSC known: no low-pass
    # a tiny anti-correlated class: its own branch, but too small to be a superclass
    odd = np.concatenate([vols[:7], -(base[:1] + base[1:])]).astype(np.float32)
    sizes = [100] * 7 + [5]
    plain = regroup(odd, 2, sizes=sizes, min_superclass_fraction=0.0)
    assert plain.superclass_of_class.tolist() == [0] * 7 + [1]
    sup = regroup(odd, 2, sizes=sizes).superclass_of_class
    assert sup[:4].tolist() == [0] * 4 and sup[4:7].tolist() == [1] * 3 and sup[7] in (0, 1)
    c = class_correlation(np.stack([base[0], 2 * base[0] + 1, -base[0]]), np.ones((12,) * 3))
    np.testing.assert_allclose(c, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)


def test_write(over_classified, tmp_path):
    from cryoclass.io import read_particles
    from cryoclass.io.mrc import read_mrc

    ds, labels, hr = over_classified
    rg = regroup(hr, 3, exclude=[0])
    rg.write(tmp_path)
    corr = pd.read_csv(tmp_path / "correlation.csv", index_col=0)
    assert corr.shape == (30, 30) and corr.columns[0] == "class_00"
    assert len(pd.read_csv(tmp_path / "linkage.csv")) == 28
    assert json.loads((tmp_path / "dendrogram.json").read_text())["ivl"]
    for j in range(3):
        assert read_mrc(tmp_path / f"superclass_{j:02d}.mrc")[0].shape == (32, 32, 32)
        star = read_particles(tmp_path / f"superclass_{j:02d}.star")
        assert len(star) == int((rg.labels == j).sum())
        assert set(star.original[STAR_COLUMN]) == {j}
        cs = read_particles(tmp_path / f"superclass_{j:02d}.cs")
        assert set(cs.original[CS_FIELD].tolist()) == {j}
        uid = set(ds.particles.meta["uid"][rg.labels == j])
        assert set(star.meta["uid"]) == uid == set(cs.meta["uid"])
    assign = pd.read_csv(tmp_path / "assignments.csv")
    assert assign["superclass"].tolist() == rg.labels.tolist()


def test_cli_on_a_classification_outdir(tmp_path_factory, tmp_path, capsys):
    from cryoclass.cli import main

    parent = small_classification(str(tmp_path_factory.getbasetemp()))
    out = tmp_path / "rg"
    assert main(["regroup", str(parent), "-n", "2", "-o", str(out), "--exclude", "1"]) == 2
    assert "n_superclasses" in capsys.readouterr().err
    assert main(["regroup", str(parent), "-n", "1", "-o", str(out), "--method", "spectral"]) == 0
    assert (out / "superclass_00.star").exists() and (out / "summary.yaml").exists()


@pytest.mark.slow
def test_real_k30_classification_regroups_to_three_states():
    """A real K = 30 classification (≈ 1–3 min on 2 cores) at SNR 1, whose classes are ~99 %
    pure (so the ARI ceiling of any regrouping is ~0.98)."""
    from cryoclass import Classification, ClassificationParams, sim

    ds = sim.simulate(n_particles=6000, box=32, pixel_size_A=4.0, snr=1.0, states=STATES, seed=7)
    params = ClassificationParams(n_classes=30, filter_res_A=8.0, seed=0)
    res = Classification(ds.particles, params).run()
    assert res is not None
    for method in ("hierarchical", "spectral"):
        rg = regroup(res, 3, method=method)
        assert adjusted_rand_index(ds.labels, rg.labels) >= 0.9, method
        rg = regroup(res, 3, method=method, min_class_size=50)
        kept = rg.labels >= 0
        assert kept.mean() >= 0.9
        assert adjusted_rand_index(ds.labels[kept], rg.labels[kept]) >= 0.9, method
