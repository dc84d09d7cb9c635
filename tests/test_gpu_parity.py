"""The GPU path: its algorithm on NumPy (always), and CPU/GPU parity (only with a GPU).

On the GPU the engine runs the array-code kernels (``impl='xp'``: gathers and atomic scatter-adds
written once against ``xp``) with the whole loop on CuPy. CI has no GPU, so
``test_xp_kernels_job_equals_numba_job`` runs the complete job with those same array-code kernels
on NumPy (``CRYOCLASS_KERNEL_IMPL=xp``) and compares with the Numba path.

Tolerances: the two kernel families sum in different orders (float32 accumulations; the xp
back-projection scatters in another order), so statistics agree to ~1e-6 relative; after a
few EM iterations hard assignments must agree for ≥ 99 % of the particles, posteriors within
0.02 (mean absolute difference below 1e-3), class volumes within 1 % of their maximum.
"""

from __future__ import annotations

import numpy as np
import pytest

import cryoclass
from cryoclass import sim
from cryoclass.backend import cupy_available

FAST = dict(
    oem_epochs=1,
    max_fem_iters=2,
    oem_batch_size_per_class=100,
    pca_n_reconstructions=10,
    init_restarts=1,
)


@pytest.fixture(scope="module")
def ds():
    return sim.simulate(n_particles=240, box=24, pixel_size_A=8.0, snr=2.0, seed=3)


@pytest.fixture(scope="module")
def params():
    fields = cryoclass.ClassificationParams.__dataclass_fields__
    kw = {k: v for k, v in FAST.items() if k in fields}
    return cryoclass.ClassificationParams(n_classes=2, filter_res_A=20.0, seed=2, **kw)


@pytest.fixture(scope="module")
def cpu_result(ds, params):
    return cryoclass.Classification(ds.particles, params).run()


def _compare(a, b):
    agree = float(np.mean(a.hard == b.hard))
    assert agree >= 0.99, agree
    d = np.abs(a.posteriors - b.posteriors)
    assert d.max() < 0.02 and d.mean() < 1e-3, (d.max(), d.mean())
    scale = np.abs(a.volumes).max()
    np.testing.assert_allclose(a.volumes, b.volumes, rtol=0, atol=0.01 * scale)


def test_xp_kernels_job_equals_numba_job(ds, params, cpu_result, monkeypatch):
    monkeypatch.setenv("CRYOCLASS_KERNEL_IMPL", "xp")
    xp_result = cryoclass.Classification(ds.particles, params).run()
    _compare(cpu_result, xp_result)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and an NVIDIA GPU")
def test_gpu_job_equals_cpu_job(ds, params, cpu_result):  # pragma: no cover - GPU only
    gpu_result = cryoclass.Classification(ds.particles, params, device="gpu").run()
    _compare(cpu_result, gpu_result)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and an NVIDIA GPU")
def test_gpu_streams_from_the_cache(ds, params, tmp_path):  # pragma: no cover - GPU only
    a = cryoclass.Classification(ds.particles, params, device="gpu").run()
    b = cryoclass.Classification(ds.particles, params, device="gpu", cache_dir=str(tmp_path)).run()
    np.testing.assert_array_equal(a.hard, b.hard)
