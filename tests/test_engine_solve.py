"""The fused Numba M-step solve equals the array-code solve (the GPU's algorithm) it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass.core.slices import SliceGeometry
from cryoclass.engine.reconstruct import ClassStats, ConsensusPrior, reconstruct


def _stats(D: int, K: int, seed: int) -> ClassStats:
    g = SliceGeometry(D, 2)
    rng = np.random.default_rng(seed)
    st = ClassStats.zeros(g, K)
    st.acc[...] = rng.standard_normal(st.acc.shape).astype(np.float32)
    st.acc[..., 2] = 10 * np.abs(st.acc[..., 2])
    st.mass[:] = 100.0
    return st


@pytest.mark.parametrize("D,K", [(16, 1), (24, 3), (20, 5)])
@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("tau_given", [False, True])
def test_fused_solve_matches_array_code(monkeypatch, D, K, with_prior, tau_given):
    g = SliceGeometry(D, 2)
    st = _stats(D, K, seed=D + K)
    rng = np.random.default_rng(1)
    mask = np.ones((D,) * 3, np.float32)
    tau = np.full((K, g.n_shells), 0.5) if tau_given else None
    prior = None
    if with_prior:
        cons = rng.standard_normal((D, D, D)).astype(np.float32)
        prior = ConsensusPrior(cons, local_sigma_px=1.5)
    out = {}
    for impl in ("auto", "xp"):
        monkeypatch.setenv("CRYOCLASS_KERNEL_IMPL", impl)
        out[impl] = reconstruct(st, g, mask, tau2_prev=tau, prior=prior, keep_halves=True)
    a, b = out["auto"], out["xp"]
    scale = np.abs(b.volumes).max()
    # float32 sums in a different order: agreement to a few float32 ulps of the largest value
    np.testing.assert_allclose(a.volumes, b.volumes, atol=1e-5 * scale)
    for h in (0, 1):
        np.testing.assert_allclose(a.halves[h], b.halves[h], atol=1e-5 * np.abs(b.halves[h]).max())
    np.testing.assert_allclose(a.fsc, b.fsc, atol=1e-5)
    # τ² ∝ SSNR ≈ 2·FSC where the (random) data give FSC ≈ 0: absolute, not relative, agreement
    np.testing.assert_allclose(a.tau2, b.tau2, rtol=1e-4, atol=1e-6 * b.tau2.max())


@pytest.mark.parametrize("D,K", [(16, 1), (24, 3)])
def test_fused_volumes_to_grid_matches_array_code(monkeypatch, D, K):
    from cryoclass.core.slices import volumes_to_grid

    g = SliceGeometry(D, 2)
    v = np.random.default_rng(D).standard_normal((K, D, D, D)).astype(np.float32)
    out = {}
    for impl in ("auto", "xp"):
        monkeypatch.setenv("CRYOCLASS_KERNEL_IMPL", impl)
        out[impl] = volumes_to_grid(v, g)
    np.testing.assert_allclose(out["auto"], out["xp"], atol=1e-5 * np.abs(out["xp"]).max())


@pytest.mark.parametrize("P,D", [(32, 16), (40, 20), (24, 24)])
def test_irfftn_crop_equals_full_transform_then_crop(P, D):
    from cryoclass.backend import irfftn, irfftn_crop

    rng = np.random.default_rng(P)
    F = rng.standard_normal((2, P, P, P // 2 + 1)) + 1j * rng.standard_normal((2, P, P, P // 2 + 1))
    s = P // 2 - D // 2
    full = irfftn(F, s=(P, P, P), axes=(1, 2, 3))[:, s : s + D, s : s + D, s : s + D]
    np.testing.assert_allclose(irfftn_crop(F, P, D), full, atol=1e-12 * np.abs(full).max() * P**3)
    # overwrite: the same result from a scratch copy (which the first pass may consume)
    scratch = F.astype(np.complex64)
    want = irfftn_crop(F.astype(np.complex64), P, D)
    np.testing.assert_array_equal(irfftn_crop(scratch, P, D, overwrite=True), want)


@pytest.mark.parametrize("P,D", [(96, 48), (40, 20), (32, 14), (24, 24)])
def test_rfftn_centred_equals_the_padded_transform(P, D):
    """The transform of the centrally zero-padded box, lines of zeros skipped, equals SciPy's
    ``rfftn`` of the padded array: the same lines through the same transforms, in the axis
    order ``rfftn`` takes them, so bit for bit on this SciPy; float32 rounding at most."""
    import scipy.fft

    from cryoclass.backend import rfftn_centred

    box = np.random.default_rng(P + D).standard_normal((2, D, D, D)).astype(np.float32)
    s = P // 2 - D // 2
    padded = np.zeros((2, P, P, P), np.float32)
    padded[:, s : s + D, s : s + D, s : s + D] = box
    want = scipy.fft.rfftn(padded, axes=(1, 2, 3))
    got = rfftn_centred(box, P)
    assert got.shape == want.shape and got.dtype == want.dtype == np.complex64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    if scipy.__version__.startswith("1.17."):  # the version the claim was checked on
        np.testing.assert_array_equal(got, want)


def test_statistics_scale_equals_numpy():
    """The parallel in-place scale of the O-EM statistics is NumPy's float32 product, bit for
    bit (the factor is rounded to float32 first, as ``acc *= np.float32(f)`` does)."""
    st = ClassStats.zeros(SliceGeometry(16, 2), K=3)
    st.acc[:] = np.random.default_rng(1).standard_normal(st.acc.shape).astype(np.float32)
    st.mass = np.array([1.0, 2.0, 3.0])
    want = st.acc * np.float32(0.7071067811865476)
    st.scale_(0.7071067811865476)
    np.testing.assert_array_equal(st.acc, want)
    np.testing.assert_allclose(st.mass, [0.7071067811865476, 1.4142135623730951, 2.121320343])
    st.scale_(0.0)
    assert not st.acc.any() and not st.mass.any()
