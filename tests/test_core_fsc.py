"""Tests of cryoclass.core.fsc: shells, Hermitian counting, FSC, resolution and weights."""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass.core.fsc import (
    fsc,
    fsc_batched,
    fsc_fourier,
    fsc_weight,
    resolution_at,
    shell_counts,
    shell_frequencies,
    shell_index,
    shell_index_2d,
    shell_sum,
    spectrum_by_shell,
    ssnr_from_fsc,
)

BOXES = [15, 16]


def _rfftn(v):
    return np.fft.rfftn(np.fft.ifftshift(v))


@pytest.mark.parametrize("D", BOXES)
def test_shell_index_matches_full_space_radius(D):
    idx = shell_index(D)
    assert idx.shape == (D, D, D // 2 + 1)
    k = np.fft.fftfreq(D, 1.0 / D)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    full = np.rint(np.sqrt(kz**2 + ky**2 + kx**2)).astype(int)
    np.testing.assert_array_equal(idx, full[:, :, : D // 2 + 1])
    assert idx[0, 0, 0] == 0 and idx.max() == int(np.rint(np.sqrt(3) * (D // 2)))
    assert shell_index_2d(D).shape == (D, D // 2 + 1)


@pytest.mark.parametrize("D", BOXES)
def test_hermitian_counting_is_parseval_exact(D):
    rng = np.random.default_rng(1)
    v = rng.standard_normal((D, D, D))
    F = _rfftn(v)
    idx = shell_index(D)
    n_all = int(idx.max()) + 1
    # Parseval: Σ over the full transform of |F|² = D³ Σ v²
    total = shell_sum(np.abs(F) ** 2, idx, n_all).sum()
    assert total == pytest.approx(D**3 * np.sum(v**2), rel=1e-10)
    counts = shell_counts(idx, n_all)
    assert counts.sum() == pytest.approx(D**3)
    # full-space count of each shell agrees with a brute-force count
    k = np.fft.fftfreq(D, 1.0 / D)
    r = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2))
    np.testing.assert_array_equal(counts, np.bincount(r.astype(int).ravel(), minlength=n_all))
    # white noise of unit variance: mean power D³ in every well-populated shell
    p = spectrum_by_shell(F, idx, D // 2 + 1)
    assert np.all(np.abs(p[3:] / D**3 - 1) < 0.35)


def test_shell_sum_2d_and_batch():
    D = 12
    rng = np.random.default_rng(2)
    imgs = rng.standard_normal((3, D, D))
    F = np.fft.rfft2(np.fft.ifftshift(imgs, axes=(-2, -1)))
    idx = shell_index_2d(D)
    s = shell_sum(np.abs(F) ** 2, idx, int(idx.max()) + 1)
    assert s.shape == (3, int(idx.max()) + 1)
    np.testing.assert_allclose(s.sum(axis=1), D**2 * (imgs**2).sum(axis=(1, 2)), rtol=1e-10)


@pytest.mark.parametrize("D", BOXES)
def test_fsc_with_itself_is_one(D):
    v = np.random.default_rng(3).standard_normal((D, D, D)).astype(np.float32)
    freq, c = fsc(v, v, pixel_size_A=1.5)
    assert freq.shape == c.shape == (D // 2 + 1,)
    np.testing.assert_allclose(c, 1.0, atol=1e-6)
    assert freq[-1] == pytest.approx((D // 2) / (D * 1.5))
    np.testing.assert_allclose(freq, shell_frequencies(D, 1.5))


@pytest.mark.parametrize("D", [47, 48])
def test_fsc_of_independent_noise_is_zero(D):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, D, D, D))
    _, c = fsc(a, b)
    n_full = shell_counts(shell_index(D), D // 2 + 1)
    # half of a shell's full-space voxels are independent (Hermitian): σ(FSC) = 1/sqrt(n/2)
    sigma = 1.0 / np.sqrt(n_full / 2)
    assert np.all(np.abs(c[4:]) < 3 * sigma[4:])
    # voxel-weighted mean over shells: σ = 1/sqrt(Σ n/2)
    n = n_full[4:]
    assert abs(np.sum(n * c[4:]) / n.sum()) < 3.0 / np.sqrt(n.sum() / 2)


def test_fsc_mask_and_batched_agree_with_single():
    D = 16
    rng = np.random.default_rng(5)
    v1, v2 = rng.standard_normal((2, 3, D, D, D))
    v2 = v2 + v1
    mask = rng.uniform(size=(D, D, D))
    freq_b, cb = fsc_batched(v1, v2, mask=mask, pixel_size_A=2.0)
    assert cb.shape == (3, D // 2 + 1)
    for k in range(3):
        freq, c = fsc(v1[k], v2[k], mask=mask, pixel_size_A=2.0)
        np.testing.assert_allclose(cb[k], c, atol=1e-12)
        _, c2 = fsc(v1[k] * mask, v2[k] * mask, pixel_size_A=2.0)
        np.testing.assert_allclose(c, c2, atol=1e-12)
    np.testing.assert_allclose(freq_b, freq)
    # fsc_fourier on transforms gives the same thing
    cf = fsc_fourier(_rfftn(v1[0] * mask), _rfftn(v2[0] * mask))
    np.testing.assert_allclose(cf, cb[0], atol=1e-12)


@pytest.mark.parametrize("D", BOXES)
def test_fsc_kernel_equals_array_code_and_full_space_sums(D):
    """The Numba shell sums (NumPy default) = the array code (GPU path) = a brute-force FSC
    over the full complex ``fftn`` (no Hermitian bookkeeping), batched, complex64 input."""
    rng = np.random.default_rng(11)
    v1 = rng.standard_normal((2, D, D, D)).astype(np.float32)
    v2 = (v1 + 2.0 * rng.standard_normal((2, D, D, D))).astype(np.float32)
    F1 = np.fft.rfftn(v1, axes=(1, 2, 3)).astype(np.complex64)
    F2 = np.fft.rfftn(v2, axes=(1, 2, 3)).astype(np.complex64)
    fast = fsc_fourier(F1, F2)
    slow = fsc_fourier(F1, F2, impl="xp")
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    G1, G2 = np.fft.fftn(v1.astype(np.float64), axes=(1, 2, 3)), np.fft.fftn(v2, axes=(1, 2, 3))
    k = np.fft.fftfreq(D, 1.0 / D)
    r = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2))
    for b in range(2):
        for s in range(D // 2 + 1):
            sel = r == s
            num = np.sum((G1[b][sel] * np.conj(G2[b][sel])).real)
            den = np.sqrt(np.sum(np.abs(G1[b][sel]) ** 2) * np.sum(np.abs(G2[b][sel]) ** 2))
            assert abs(fast[b, s] - num / den) < 1e-5
    # fewer shells: the kept ones are unchanged
    np.testing.assert_allclose(fsc_fourier(F1, F2, n_shells=4), fast[:, :4], atol=1e-12)


def test_fsc_zero_maps_and_bad_shapes():
    z = np.zeros((8, 8, 8))
    _, c = fsc(z, z)
    assert np.all(c == 0)
    with pytest.raises(ValueError):
        fsc(z, np.zeros((8, 8, 9)))
    with pytest.raises(ValueError):
        fsc(np.zeros((8, 8, 9)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError):
        fsc(z, z, mask=np.ones((4, 4, 4)))


def test_resolution_at_tanh_crossing():
    f0, w, thr = 0.12, 0.01, 0.143
    freq = np.linspace(0.0, 0.25, 200)
    curve = 0.5 * (1 - np.tanh((freq - f0) / w))
    expected = 1.0 / (f0 + w * np.arctanh(1 - 2 * thr))
    assert resolution_at(freq, curve, thr) == pytest.approx(expected, rel=2e-3)
    thr5 = 0.5
    assert resolution_at(freq, curve, thr5) == pytest.approx(1 / f0, rel=2e-3)
    # NaN shells are ignored
    bad = curve.copy()
    bad[[5, 150]] = np.nan
    assert resolution_at(freq, bad, thr) == pytest.approx(expected, rel=2e-3)
    # never crossing: the Nyquist-limited value
    assert resolution_at(freq, np.ones_like(freq)) == pytest.approx(1 / 0.25)
    # below threshold from DC on: no resolution at all
    assert resolution_at(freq, np.zeros_like(freq)) == np.inf
    assert np.isnan(resolution_at(freq, np.full_like(freq, np.nan)))


def test_fsc_weight_and_ssnr():
    c = np.array([1.0, 0.5, 0.143, 0.0, -0.2, np.nan])
    w = fsc_weight(c)
    np.testing.assert_allclose(w[:4], np.sqrt(2 * c[:4] / (1 + c[:4])))
    assert w[4] == 0 and w[5] == 0 and np.all((w >= 0) & (w <= 1))
    s = ssnr_from_fsc(c)
    assert np.all(np.isfinite(s)) and np.all(s >= 0)
    assert s[1] == pytest.approx(1.0)
    assert ssnr_from_fsc(c, full_map=True)[1] == pytest.approx(2.0)
    # the full-map SSNR is FSC'/(1-FSC') with FSC' = 2FSC/(1+FSC)
    fp = 2 * 0.143 / 1.143
    assert ssnr_from_fsc(np.array([0.143]), full_map=True)[0] == pytest.approx(fp / (1 - fp))
