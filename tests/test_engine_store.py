"""Particle stores: the on-disk cache is reused, invalidated, streamed, gives the same result."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import cryoclass
from cryoclass import sim
from cryoclass.engine.problem import build_problem, lowres_problem
from cryoclass.engine.store import ArrayStore, DiskStore, cache_key
from cryoclass.errors import ParameterError
from cryoclass.io.particles import read_particles, write_particles_with_images

FAST = dict(oem_epochs=1, max_fem_iters=2, oem_batch_size_per_class=100, pca_n_reconstructions=20)


@pytest.fixture(scope="module")
def ds():
    return sim.simulate(n_particles=300, box=32, pixel_size_A=6.0, snr=1.0, seed=5)


def _entries(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("particles-"))


def test_disk_store_rows_equal_memory(ds, tmp_path):
    mem = build_problem(ds.particles, 14.0, chunk_size=64)
    disk = build_problem(ds.particles, 14.0, chunk_size=64, cache_dir=tmp_path)
    assert isinstance(mem.store, ArrayStore) and isinstance(disk.store, DiskStore)
    idx = np.array([0, 3, 4, 5, 100, 299])
    for a, b in zip(mem.take(idx), disk.take(idx)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mem.take(np.arange(10, 20))[1], disk.take(np.arange(10, 20))[1])
    lm, cols = lowres_problem(mem, 30.0)
    ld, _ = lowres_problem(disk, 30.0)
    assert ld.store.M == cols.size < disk.store.M
    np.testing.assert_array_equal(lm.take(idx)[1], ld.take(idx)[1])


def test_cache_is_reused_and_invalidated(ds, tmp_path):
    build_problem(ds.particles, 14.0, cache_dir=tmp_path)
    (entry,) = _entries(tmp_path)
    X = tmp_path / entry / "X.npy"
    mtime = X.stat().st_mtime_ns
    calls = []
    build_problem(ds.particles, 14.0, cache_dir=tmp_path, progress=lambda d, n: calls.append(d))
    assert _entries(tmp_path) == [entry] and X.stat().st_mtime_ns == mtime  # reused
    assert calls == [len(ds.particles)]
    build_problem(ds.particles, 20.0, cache_dir=tmp_path)  # other filter res: a second entry
    assert len(_entries(tmp_path)) == 2
    changed = ds.particles.subset(np.arange(len(ds.particles)))
    changed.meta.loc[0, "defocus_u_A"] += 100.0  # the data changed: stale entry replaced
    build_problem(changed, 14.0, cache_dir=tmp_path)
    names = _entries(tmp_path)
    assert len(names) == 2 and entry not in names
    man = json.loads((tmp_path / names[0] / "manifest.json").read_text())
    assert man["n"] == len(ds.particles) and not list(tmp_path.glob(".tmp-*"))


def test_key_follows_image_files(ds, tmp_path):
    star, mrcs = tmp_path / "p.star", tmp_path / "p.mrcs"
    write_particles_with_images(star, ds.particles, mrcs)
    k1, u1 = cache_key(read_particles(star), 14.0)
    assert (k1, u1) == cache_key(read_particles(star), 14.0)
    st = mrcs.stat()
    os.utime(mrcs, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the stack was rewritten
    k2, u2 = cache_key(read_particles(star), 14.0)
    assert k2 != k1 and u2 == u1


def test_streamed_job_equals_in_memory_job(ds, tmp_path):
    p = cryoclass.ClassificationParams(n_classes=3, filter_res_A=14.0, seed=1, **FAST)
    a = cryoclass.Classification(ds.particles, p).run()
    b = cryoclass.Classification(ds.particles, p, cache_dir=str(tmp_path)).run()
    assert isinstance(b, cryoclass.ClassificationResult)
    np.testing.assert_array_equal(a.hard, b.hard)
    # in memory the passes visit particles in viewing-direction order, streamed in file order:
    # the statistics are the same sums in another order (float32 rounding)
    np.testing.assert_allclose(a.posteriors, b.posteriors, atol=1e-4)


def test_memory_limit(ds, tmp_path):
    p = cryoclass.ClassificationParams(n_classes=2, filter_res_A=14.0, memory_limit_GB=1e-4)
    with pytest.raises(ParameterError, match="cache_dir"):
        cryoclass.Classification(ds.particles, p).run()
    job = cryoclass.Classification(ds.particles, p.replace(**FAST), outdir=tmp_path / "out")
    job.run()
    assert isinstance(job.problem.store, DiskStore)
    assert _entries(tmp_path / "out" / "particle_cache")


def _ordered_store(n=7, M=3, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, M)) + 1j * rng.standard_normal((n, M))).astype(np.complex64)
    C = rng.random((n, M)).astype(np.float32)
    order = rng.permutation(n)  # stored row r holds particle order[r]
    return X, C, order, ArrayStore(X[order], C[order], order)


def test_array_store_with_a_row_order_answers_in_particle_indices():
    X, C, order, st = _ordered_store()
    np.testing.assert_array_equal(st.order, order)
    np.testing.assert_array_equal(st.position(order), np.arange(7))
    for idx in (np.array([4, 0, 6]), np.arange(7), np.array([2])):
        x, c = st.take(idx)
        np.testing.assert_array_equal(x, X[idx])
        np.testing.assert_array_equal(c, C[idx])
    np.testing.assert_array_equal(st.rows(2, 5)[0], X[2:5])
    np.testing.assert_array_equal(st.X, X)
    np.testing.assert_array_equal(st.C, C)
    # particles whose rows are consecutive in the store come back as views, without a copy
    x, c = st.take(order[2:6])
    assert np.shares_memory(x, st._X) and np.shares_memory(c, st._C)
    assert not np.shares_memory(st.take(np.array([order[0], order[3]]))[0], st._X)
    # a column subset keeps the order
    sub = st.columns(np.array([0, 2]))
    np.testing.assert_array_equal(sub.order, order)
    np.testing.assert_array_equal(sub.take(np.array([5, 1]))[0], X[[5, 1]][:, [0, 2]])


@pytest.mark.parametrize("bad", [np.array([0, 1, 1, 2, 3, 4, 5]), np.arange(6)])
def test_array_store_rejects_an_order_that_is_not_a_permutation(bad):
    X, C, _, _ = _ordered_store()
    with pytest.raises(ValueError, match="permutation"):
        ArrayStore(X, C, bad)


def test_in_memory_problem_stores_rows_in_viewing_order(ds, tmp_path):
    """Rows kept in the passes' viewing-direction order: a full pass reads contiguous views,
    and every particle's row is still the one the disk cache (particle order) holds."""
    from cryoclass.engine.passes import view_order
    from cryoclass.engine.problem import subset_problem

    mem = build_problem(ds.particles, 14.0, chunk_size=64)
    disk = build_problem(ds.particles, 14.0, chunk_size=64, cache_dir=tmp_path)
    np.testing.assert_array_equal(mem.store.order, view_order(mem.A))
    np.testing.assert_array_equal(mem.store.X, disk.store.X)
    np.testing.assert_array_equal(mem.store.C, disk.store.C)
    head = mem.store.order[:50]
    assert np.shares_memory(mem.take(head)[1], mem.store._X)
    idx = np.sort(np.random.default_rng(3).choice(len(ds.particles), 80, replace=False))
    sub = subset_problem(mem, idx)
    assert sub.store.order is not None
    for a, b in zip(sub.take(np.arange(80)), mem.take(idx)):
        np.testing.assert_array_equal(a, b)
    assert getattr(disk.store, "order", None) is None  # the disk cache streams particle order
