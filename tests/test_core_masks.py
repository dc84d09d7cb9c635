"""Tests of cryoclass.core.masks: auto solvent mask geometry, soft edges, resampling, checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cryoclass.core.filters import lowpass
from cryoclass.core.masks import (
    auto_solvent_mask,
    check_mask,
    distance_to_set,
    resample_mask,
    soft_edge,
    spherical_mask,
)
from cryoclass.errors import InputFileError, ParameterError

BOXES = [39, 40]


def _brute_distance(binary):
    """Distance (px) from each voxel to the nearest True voxel by k-d tree (not EDT)."""
    pts = np.argwhere(binary)
    grid = np.indices(binary.shape).reshape(3, -1).T
    d, _ = cKDTree(pts).query(grid)
    return d.reshape(binary.shape)


def _radius(D):
    c = np.arange(D) - D // 2
    return np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)


@pytest.mark.parametrize("D", BOXES)
@pytest.mark.parametrize("lowpass_A", [None, 15.0])
def test_auto_mask_of_sphere(D, lowpass_A):
    apix = 2.0
    ball = (_radius(D) <= 6).astype(np.float32)
    m = auto_solvent_mask(ball, apix, threshold=0.2, lowpass_A=lowpass_A)
    assert m.dtype == np.float32 and m.shape == (D,) * 3
    assert m.min() >= 0 and m.max() <= 1
    smooth = ball if lowpass_A is None else lowpass(ball, lowpass_A, apix, kind="cosine")
    binary = smooth >= 0.2 * smooth.max()
    d_A = _brute_distance(binary) * apix
    assert np.all(m[d_A <= 10.0 + 1e-9] == 1.0)  # 1 within 10 Å of the threshold surface
    assert np.all(m[d_A >= 20.0 - 1e-9] == 0.0)  # 0 beyond 20 Å
    band = (d_A > 10) & (d_A < 20)
    expected = 0.5 * (1 + np.cos(np.pi * (d_A[band] - 10) / 10))
    np.testing.assert_allclose(m[band], expected, atol=1e-6)
    # monotone edge: the mask never increases with the distance from the set
    order = np.argsort(d_A.ravel(), kind="stable")
    assert np.all(np.diff(m.ravel()[order]) <= 1e-6)


def test_auto_mask_largest_component_and_errors():
    D = 40
    r_big = _radius(D)
    c = np.arange(D) - D // 2
    small_r = np.sqrt((c[:, None, None] - 12) ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    vol = (r_big <= 6).astype(float) + (small_r <= 3).astype(float)
    vol[(r_big <= 6)] = 1.0
    both = auto_solvent_mask(vol, 2.0, lowpass_A=None, dilate_A=2.0, soft_edge_A=2.0)
    one = auto_solvent_mask(
        vol, 2.0, lowpass_A=None, dilate_A=2.0, soft_edge_A=2.0, largest_component=True
    )
    cz = D // 2 + 12
    assert both[cz, D // 2, D // 2] == 1 and one[cz, D // 2, D // 2] == 0
    assert one[D // 2, D // 2, D // 2] == 1
    with pytest.raises(ParameterError):
        auto_solvent_mask(-np.ones((8, 8, 8)), 1.0)
    with pytest.raises(ParameterError):
        auto_solvent_mask(vol, 0.0)
    with pytest.raises(ParameterError):
        auto_solvent_mask(vol, 1.0, threshold=1.5)
    with pytest.raises(ValueError):
        auto_solvent_mask(np.ones((8, 8, 9)), 1.0)


@pytest.mark.parametrize("D", [15, 16])
def test_spherical_mask_and_soft_edge(D):
    r = _radius(D)
    m = spherical_mask(D, 4.0, soft_px=3.0)
    assert m[D // 2, D // 2, D // 2] == 1
    assert np.all(m[r <= 4] == 1) and np.all(m[r >= 7] == 0)
    np.testing.assert_allclose(
        m[(r > 4) & (r < 7)], 0.5 * (1 + np.cos(np.pi * (r[(r > 4) & (r < 7)] - 4) / 3)), atol=1e-6
    )
    assert spherical_mask(D, 3.0, ndim=2).shape == (D, D)
    binary = r <= 3
    np.testing.assert_allclose(distance_to_set(binary), _brute_distance(binary), atol=1e-9)
    s = soft_edge(binary, 4.0)
    assert np.all(s[binary] == 1) and np.all(s[_brute_distance(binary) >= 4] == 0)
    with pytest.raises(ValueError):
        distance_to_set(np.zeros((4, 4, 4), bool))


@pytest.mark.parametrize("method", ["linear", "fourier"])
@pytest.mark.parametrize("D, D_new", [(40, 24), (39, 64), (24, 24)])
def test_resample_mask_keeps_range_and_size(method, D, D_new):
    m = spherical_mask(D, D / 4, soft_px=3.0)
    out = resample_mask(m, D_new, method=method)
    assert out.shape == (D_new,) * 3 and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # same physical object: volume fraction preserved
    assert out.mean() == pytest.approx(m.mean(), rel=0.05)
    if D == D_new:
        np.testing.assert_allclose(out, m, atol=1e-6)
    # the centre stays at the centre
    assert out[D_new // 2, D_new // 2, D_new // 2] == pytest.approx(1.0, abs=0.02)


def test_resample_mask_errors():
    with pytest.raises(ParameterError):
        resample_mask(np.ones((8, 8, 8)), 0)
    with pytest.raises(ParameterError):
        resample_mask(np.ones((8, 8, 8)), 4, method="cubic")


def test_check_mask():
    m = spherical_mask(16, 5, soft_px=2)
    out = check_mask(m, 16, 1.2, name="mask.mrc", mask_pixel_size_A=1.2)
    assert out.dtype == np.float32
    with pytest.raises(InputFileError, match="mask.mrc.*shape"):
        check_mask(m, 18, 1.2, name="mask.mrc")
    with pytest.raises(InputFileError, match="pixel size"):
        check_mask(m, 16, 1.2, name="mask.mrc", mask_pixel_size_A=1.0)
    bad = m.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputFileError, match="NaN"):
        check_mask(bad, 16, 1.2, name="mask.mrc")
    with pytest.raises(InputFileError, match="outside"):
        check_mask(m * 3, 16, 1.2, name="mask.mrc")
    with pytest.raises(InputFileError, match="zero"):
        check_mask(np.zeros_like(m), 16, 1.2, name="mask.mrc")
    with pytest.raises(ParameterError):
        check_mask(m, 0, 1.2)
    with pytest.raises(ParameterError):
        check_mask(m, 16, -1.0)
    # tiny overshoot from resampling is accepted and clipped
    assert check_mask(m * (1 + 1e-5), 16, 1.2).max() <= 1.0
