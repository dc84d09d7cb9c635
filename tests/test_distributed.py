"""Dask scale-out: a LocalCluster of 2 worker processes gives the single-process result.

Tolerance: shards accumulate their partial statistics separately and the driver adds them, so the
class statistics differ from one process only by float32 summation order (relative ~1e-6); hard
assignments must be identical and posteriors equal within 1e-3 (absolute).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import cryoclass
from cryoclass import sim

distributed = pytest.importorskip("dask.distributed")

FAST = dict(oem_epochs=2, max_fem_iters=3, oem_batch_size_per_class=100, pca_n_reconstructions=20)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def ds():
    return sim.simulate(n_particles=300, box=32, pixel_size_A=6.0, snr=1.0, seed=2)


def test_sharded_run_equals_one_process(ds, client, tmp_path):
    p = cryoclass.ClassificationParams(n_classes=3, filter_res_A=14.0, seed=4, **FAST)
    one = cryoclass.Classification(ds.particles, p).run()
    events: list = []
    two = cryoclass.Classification(ds.particles, p, client=client).run([events.append])
    assert one is not None and two is not None
    np.testing.assert_array_equal(one.hard, two.hard)
    np.testing.assert_allclose(one.posteriors, two.posteriors, atol=1e-3)
    np.testing.assert_allclose(
        one.volumes, two.volumes, rtol=0, atol=1e-3 * np.abs(one.volumes).max()
    )
    assert any(type(e).__name__ == "IterationFinished" for e in events)
    # the shards are released on the workers (the scheduler learns it asynchronously)
    for _ in range(100):
        if not [k for k in client.who_has() if "cryoclass-shard" in str(k)]:
            break
        time.sleep(0.1)
    assert not [k for k in client.who_has() if "cryoclass-shard" in str(k)]


def test_sharded_run_through_the_cache(ds, client, tmp_path):
    p = cryoclass.ClassificationParams(
        n_classes=2, filter_res_A=14.0, seed=1, cache_dir=str(tmp_path), **FAST
    )
    one = cryoclass.Classification(ds.particles, p.replace(cache_dir="")).run()
    two = cryoclass.Classification(ds.particles, p, client=client).run()
    assert one is not None and two is not None
    np.testing.assert_array_equal(one.hard, two.hard)
    assert len(list(tmp_path.glob("particles-*"))) == 2  # one cache entry per shard
