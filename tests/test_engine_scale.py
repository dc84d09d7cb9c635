"""Per-particle scale: the sampling variance the shrinkage assumes is the true one, and the
empirical-Bayes estimate beats the raw per-image fit against ground truth."""

from __future__ import annotations

import numpy as np
import pytest

import cryoclass
from cryoclass import sim
from cryoclass.engine.em import noise_and_scale, shrink_scales
from cryoclass.io.source import ArrayImageSource


def test_shrinkage_beats_the_raw_fit_and_keeps_precise_ones():
    rng = np.random.default_rng(0)
    n = 20000
    s2 = rng.uniform(0.001, 0.1, n)  # per-image sampling variances, as at low SNR
    for tau in (0.0, 0.1, 0.3):  # true spread of the scales
        alpha = 1.0 + tau * rng.standard_normal(n)
        a_hat = alpha + np.sqrt(s2) * rng.standard_normal(n)
        eb = shrink_scales(a_hat, s2)
        mse_raw, mse_eb = np.mean((a_hat - alpha) ** 2), np.mean((eb - alpha) ** 2)
        # normal-normal posterior mean: MSE = mean(τ² s² / (τ² + s²)) ≤ min(τ², mean s²)
        expected = np.mean(tau**2 * s2 / (tau**2 + s2))
        assert mse_eb < mse_raw
        assert abs(mse_eb - expected) < 0.1 * expected + 2e-4, (tau, mse_eb, expected)
        # 5 % uninformative fits (CTF ~ 0: huge variance, fit 0) do not change the others
        bad = np.arange(n) % 20 == 0
        s2_b, a_b = np.where(bad, 1e30, s2), np.where(bad, 0.0, a_hat)
        eb_b = shrink_scales(a_b, s2_b)
        assert (
            np.mean((eb_b[~bad] - alpha[~bad]) ** 2)
            < 1.1 * np.mean((eb[~bad] - alpha[~bad]) ** 2) + 1e-5
        )
        assert np.all(np.isfinite(eb_b))
    # nearly noise-free measurements are kept as measured
    a = rng.uniform(0.5, 1.5, 100)
    np.testing.assert_allclose(shrink_scales(a, np.full(100, 1e-10)), a, atol=1e-6)


def test_sampling_variance_of_the_raw_fit_is_one_over_den():
    """α̂ from Hermitian-weighted sums of ``X = α P + n`` (pairs, weight 2; E|n|² = σ²) varies
    across images as ``1 / Σ spp/σ²``, the variance the shrinkage uses."""
    rng = np.random.default_rng(1)
    n, m, sigma2 = 4000, 300, 4.0
    P = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    noise = np.sqrt(sigma2 / 2) * (rng.standard_normal((n, m)) + 1j * rng.standard_normal((n, m)))
    X = P[None, :] + noise  # true α = 1 for every image
    w = 2.0
    sxx = (w * np.abs(X) ** 2).sum(1)[:, None]
    sxp = (w * (X.conj() * P).real).sum(1)[:, None]
    spp = np.full((n, 1), (w * np.abs(P) ** 2).sum())
    counts = np.array([w * m])
    sig2, a_hat = noise_and_scale(sxx, sxp, spp, counts, "optimal", None, 0.0, 10.0, shrink=False)
    assert sig2[0] == pytest.approx(sigma2, rel=0.02)
    den = spp[0, 0] / sig2[0]
    assert np.var(a_hat) == pytest.approx(1.0 / den, rel=0.1)
    _, eb = noise_and_scale(sxx, sxp, spp, counts, "optimal", None, 0.0, 10.0, shrink=True)
    assert np.mean((eb - 1.0) ** 2) < 0.1 * np.mean((a_hat - 1.0) ** 2)  # all true scales equal


def test_job_recovers_true_scales():
    """Images multiplied by known scales: the job's optimal scales follow them (up to the
    consensus' overall normalisation), and shrinkage does not flatten a real spread."""
    ds = sim.simulate(n_particles=400, box=32, pixel_size_A=6.0, snr=0.5, seed=4)
    true = np.linspace(0.6, 1.4, 400)
    np.random.default_rng(2).shuffle(true)
    imgs = ds.particles.images.read(np.arange(400)) * true[:, None, None].astype(np.float32)
    parts = cryoclass.Particles(ds.particles.meta, ArrayImageSource(imgs))
    p = cryoclass.ClassificationParams(
        n_classes=2, filter_res_A=14.0, oem_epochs=1, max_fem_iters=1
    )
    for shrink in (True, False):
        res = cryoclass.Classification(parts, p.replace(scale_shrinkage=shrink)).run()
        assert np.corrcoef(res.scale, true)[0, 1] > 0.9, shrink
        assert res.scale.std() / res.scale.mean() > 0.15  # true spread: 0.23 of the mean
