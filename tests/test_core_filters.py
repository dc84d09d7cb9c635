"""Tests of cryoclass.core.filters against analytic Gaussian transforms and filter formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi

from cryoclass.core.filters import (
    apply_radial_filter,
    apply_radial_filter_fourier,
    filter_profile,
    frequency_radius,
    highpass,
    highpass_fourier,
    lowpass,
    lowpass_fourier,
)
from cryoclass.core.fsc import shell_index
from cryoclass.errors import ParameterError

BOXES = [31, 32]


def _gaussian(D, sigma_px):
    c = np.arange(D) - D // 2
    r2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    return np.exp(-r2 / (2 * sigma_px**2))


def _analytic_ft(D, sigma_px, apix):
    """Continuous FT of the sampled Gaussian at the rfftn frequencies (px³ units)."""
    f = frequency_radius(D, apix) * apix  # cycles/px
    return (2 * np.pi * sigma_px**2) ** 1.5 * np.exp(-2 * np.pi**2 * sigma_px**2 * f**2)


@pytest.mark.parametrize("D", BOXES)
def test_butterworth_lowpass_of_gaussian_matches_analytic(D):
    apix, sigma, order = 2.0, 2.5, 4
    res = D * apix / 6.0  # cutoff on shell 6
    out = lowpass(_gaussian(D, sigma), res, apix, kind="butterworth", order=order)
    F = np.fft.rfftn(np.fft.ifftshift(out))
    f = frequency_radius(D, apix)
    expected = _analytic_ft(D, sigma, apix) / np.sqrt(1 + (f * res) ** (2 * order))
    big = expected > 1e-6 * expected.max()
    np.testing.assert_allclose(F.real[big], expected[big], rtol=1e-6, atol=1e-6)
    # half power exactly at the cutoff: the voxel (kz, ky, kx) = (0, 0, 6)
    ratio = F[0, 0, 6].real / _analytic_ft(D, sigma, apix)[0, 0, 6]
    assert ratio**2 == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("D", BOXES)
def test_hard_lowpass_energy_matches_chi3(D):
    """Energy kept by a hard low-pass of a Gaussian: its power spectrum is a 3D Gaussian in ξ."""
    apix, sigma = 1.0, 2.0
    g = _gaussian(D, sigma)
    res = 4.0 * apix
    out = lowpass(g, res, apix, kind="hard")
    kept = np.sum(out**2) / np.sum(g**2)
    s = 1.0 / (2 * np.sqrt(2) * np.pi * sigma)  # per-axis std of |G(ξ)|² (cycles/px)
    assert kept == pytest.approx(chi(3).cdf((1 / res) / s), rel=0.02)


@pytest.mark.parametrize("kind", ["hard", "cosine", "butterworth"])
def test_profiles_shape_and_complement(kind):
    D, apix, res = 64, 1.5, 8.0
    f = np.linspace(0, 1 / (2 * apix), 500)
    lo = filter_profile(f, res, D=D, pixel_size_A=apix, kind=kind)
    hi = filter_profile(f, res, D=D, pixel_size_A=apix, kind=kind, highpass=True)
    assert lo[0] == 1 and hi[0] == 0
    assert np.all(np.diff(lo) <= 1e-15) and np.all(np.diff(hi) >= -1e-15)
    assert np.all((lo >= 0) & (lo <= 1) & (hi >= 0) & (hi <= 1))
    fc = np.array([1 / res])
    if kind == "butterworth":
        assert filter_profile(fc, res, D=D, pixel_size_A=apix, kind=kind)[0] ** 2 == pytest.approx(
            0.5
        )
        h = filter_profile(fc, res, D=D, pixel_size_A=apix, kind=kind, highpass=True)[0]
        assert h**2 == pytest.approx(0.5)
    else:
        np.testing.assert_allclose(lo + hi, 1.0)
    if kind == "cosine":
        assert filter_profile(fc, res, D=D, pixel_size_A=apix)[0] == pytest.approx(0.5)


def test_cosine_edge_widths():
    D, apix, res = 64, 1.0, 8.0
    edge = 2 / (D * apix)  # 4 shells wide → ±2 shells
    f = np.array([1 / res - edge, 1 / res - edge * 0.999, 1 / res + edge * 0.999, 1 / res + edge])
    v = filter_profile(f, res, D=D, pixel_size_A=apix, edge_shells=4)
    assert v[0] == 1 and 0.99 < v[1] < 1 and 0 < v[2] < 0.01 and v[3] == 0
    fa = np.array([1 / 9.0, 1 / 8.0, 1 / 7.0])
    va = filter_profile(fa, res, D=D, pixel_size_A=apix, edge_A=2.0)
    assert va[0] == pytest.approx(1) and 0.4 < va[1] < 0.6 and va[2] == pytest.approx(0, abs=1e-12)
    with pytest.raises(ParameterError):
        filter_profile(fa, res, D=D, pixel_size_A=apix, edge_A=20.0)


@pytest.mark.parametrize("D", BOXES)
def test_highpass_removes_mean_and_fourier_variants_agree(D):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((D, D, D)).astype(np.float32) + 3.0
    h = highpass(v, 20.0, 1.0)
    assert h.dtype == np.float32 and abs(float(h.mean())) < 1e-4
    F = np.fft.rfftn(np.fft.ifftshift(v))
    for fn_real, fn_four in ((lowpass, lowpass_fourier), (highpass, highpass_fourier)):
        a = np.fft.rfftn(np.fft.ifftshift(fn_real(v, 6.0, 1.0, kind="cosine")))
        b = fn_four(F, 6.0, 1.0, kind="cosine")
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-2)


def test_images_and_stacks_ndim2():
    D = 20
    imgs = np.random.default_rng(1).standard_normal((4, D, D))
    out = lowpass(imgs, 5.0, 1.0, ndim=2, kind="hard")
    for i in range(4):
        np.testing.assert_allclose(out[i], lowpass(imgs[i], 5.0, 1.0, ndim=2, kind="hard"))
    with pytest.raises(ValueError):
        lowpass(np.zeros((4, 5, 6)), 5.0, 1.0)
    with pytest.raises(ParameterError):
        lowpass(imgs[0], 5.0, 1.0, ndim=2, kind="gauss")
    with pytest.raises(ParameterError):
        lowpass(imgs[0], -5.0, 1.0, ndim=2)


@pytest.mark.parametrize("D", BOXES)
def test_apply_radial_filter(D):
    v = np.random.default_rng(2).standard_normal((D, D, D))
    np.testing.assert_allclose(apply_radial_filter(v, np.ones(D // 2 + 1)), v, atol=1e-12)
    curve = (np.arange(D // 2 + 1) <= 4).astype(float)
    hard = lowpass(v, D / 4.5, 1.0, kind="hard")
    np.testing.assert_allclose(apply_radial_filter(v, curve, fill=0.0), hard, atol=1e-12)
    F = np.fft.rfftn(np.fft.ifftshift(v))
    G = apply_radial_filter_fourier(F, np.arange(D // 2 + 1, dtype=float))
    idx = shell_index(D)
    np.testing.assert_allclose(G, F * np.minimum(idx, D // 2))
