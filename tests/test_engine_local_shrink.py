"""Local Wiener shrinkage of class differences (cryoclass.engine.local_shrink)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass.engine import local_shrink as ls

D = 24


def _blob(center, sigma=2.0, amp=1.0):
    z, y, x = np.mgrid[:D, :D, :D].astype(np.float32)
    r2 = (z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2
    return (amp * np.exp(-r2 / (2 * sigma**2))).astype(np.float32)


def _maps(diffs, noise, seed=0):
    """Consensus halves, class half-maps and full maps for true differences ``diffs`` (K, D³)
    plus independent noise of standard deviation ``noise`` in each half."""
    rng = np.random.default_rng(seed)
    cons = _blob((12, 12, 12), 5.0)
    ch = np.stack([cons, cons])
    halves = [
        cons[None] + diffs + noise * rng.standard_normal(diffs.shape).astype(np.float32)
        for _ in range(2)
    ]
    full = 0.5 * (halves[0] + halves[1])
    return ch, halves, full


def _local_shrink(full, ch, halves, mask, sigma_px):
    """The class maps ``full`` shrunk towards the consensus (the mean of its halves ``ch``) by
    the local SNR of their differences, estimated from the class half-maps ``halves``."""
    cons = 0.5 * (ch[0] + ch[1])
    d = [halves[h] - ch[h][None] for h in (0, 1)]
    return cons[None] + ls.shrink_differences(full - cons[None], d, mask, sigma_px)


def test_gaussian_smooth_preserves_sum_and_matches_variance():
    v = np.zeros((1, D, D, D), np.float32)
    v[0, 12, 12, 12] = 1.0
    s = ls.gaussian_smooth(v, 2.0)
    assert s.sum() == pytest.approx(1.0, rel=1e-5)
    z = np.arange(D) - 12
    prof = s[0].sum(axis=(1, 2))
    assert (prof * z**2).sum() == pytest.approx(4.0, rel=1e-3)  # σ² = 4 voxels²


@pytest.mark.parametrize("K", [3, ls.MAX_JOINT_K + 2])
def test_noise_free_differences_are_kept_and_pure_noise_is_removed(K):
    mask = np.ones((D, D, D), np.float32)
    diffs = np.zeros((K, D, D, D), np.float32)
    diffs[0] = _blob((8, 12, 12), 2.0, 1.0)
    ch, halves, full = _maps(diffs, 0.0)
    out = _local_shrink(full, ch, halves, mask, 2.0)
    cons = 0.5 * (ch[0] + ch[1])
    # no noise: the local SNR is infinite where the class differs, so its difference stays
    inside = diffs[0] > 0.1
    np.testing.assert_allclose((out[0] - cons)[inside], diffs[0][inside], rtol=1e-3)
    # pure noise (no true difference at all): almost all of it is removed
    ch, halves, full = _maps(np.zeros_like(diffs), 0.3, seed=1)
    out = _local_shrink(full, ch, halves, mask, 2.0)
    before = np.sqrt(np.mean((full - cons[None]) ** 2))
    after = np.sqrt(np.mean((out - cons[None]) ** 2))
    assert after < 0.2 * before


def test_joint_filter_removes_noise_between_two_equal_classes():
    """Classes 0 and 1 are the same (both differ from the consensus by −b, say 'closed'),
    class 2 differs by +2b ('open'); a small ligand ℓ is in class 1 only. The joint filter
    keeps the ligand and removes the 0-vs-1 noise where both differ from the consensus;
    class-by-class filtering keeps that noise (each class differs there)."""
    b = _blob((12, 6, 12), 3.0, 1.0)
    lig = _blob((12, 18, 12), 2.5, 1.0)  # about the smoothing kernel in size
    diffs = np.stack([-b, -b + lig, 2 * b])
    mask = np.ones((D, D, D), np.float32)
    ch, halves, full = _maps(diffs, 0.15, seed=2)
    joint = _local_shrink(full, ch, halves, mask, 2.0)
    region = b > 0.3
    noise_before = np.sqrt(np.mean((full[0] - full[1])[region] ** 2))
    noise_joint = np.sqrt(np.mean((joint[0] - joint[1])[region] ** 2))
    old = ls.MAX_JOINT_K
    try:
        ls.MAX_JOINT_K = 0  # force class-by-class filtering
        single = _local_shrink(full, ch, halves, mask, 2.0)
    finally:
        ls.MAX_JOINT_K = old
    noise_single = np.sqrt(np.mean((single[0] - single[1])[region] ** 2))
    assert noise_joint < 0.35 * noise_before
    assert noise_joint < 0.5 * noise_single
    # the ligand (a real difference between classes 0 and 1) survives
    core = lig > 0.3
    kept = np.mean((joint[1] - joint[0])[core]) / np.mean(lig[core])
    assert kept > 0.75  # measured 0.87 (the p = 2 Wiener factor at this local SNR)


def test_unmasked_voxels_are_left_alone():
    K = 2
    diffs = np.zeros((K, D, D, D), np.float32)
    ch, halves, full = _maps(diffs, 0.3, seed=3)
    mask = np.zeros((D, D, D), np.float32)
    mask[:12] = 1
    out = _local_shrink(full, ch, halves, mask, 2.0)
    np.testing.assert_allclose(out[:, 12:], full[:, 12:], atol=1e-6)
    assert not np.allclose(out[:, :12], full[:, :12])


@pytest.mark.parametrize("K", [1, 2, 3, 5, ls.MAX_JOINT_K])
def test_numba_kernel_equals_array_code(K, monkeypatch):
    """The CPU kernel (Cholesky, Jacobi eigen-decomposition per voxel) against the batched
    array code the GPU runs, on noisy maps where many voxels have negative signal eigenvalues
    (clipped) and a mask that leaves voxels out."""
    rng = np.random.default_rng(K)
    diffs = np.stack([_blob(rng.uniform(6, 18, 3), 2.0, rng.uniform(-1, 1)) for _ in range(K)])
    ch, halves, full = _maps(diffs, 0.2, seed=K)
    mask = (_blob((12, 12, 12), 6.0) > 0.05).astype(np.float32)
    monkeypatch.delenv("CRYOCLASS_KERNEL_IMPL", raising=False)  # the Numba kernel
    fast = _local_shrink(full, ch, halves, mask, 2.0)
    monkeypatch.setenv("CRYOCLASS_KERNEL_IMPL", "xp")
    ref = _local_shrink(full, ch, halves, mask, 2.0)
    cons = 0.5 * (ch[0] + ch[1])
    scale = float(np.abs(ref - cons[None]).max())
    np.testing.assert_allclose(fast - cons[None], ref - cons[None], atol=1e-5 * scale, rtol=0)
    assert np.abs(ref - full).max() > 0.1 * scale  # the shrinkage did change the maps


def test_gaussian_transfer_is_cached_and_read_only():
    """The transfer function is built once per (box, σ) and cannot be changed by a caller."""
    g1 = ls._gaussian_transfer(16, 2.0)
    assert ls._gaussian_transfer(16, 2.0) is g1
    assert not g1.flags.writeable
    assert g1.shape == (16, 16, 9) and g1[0, 0, 0] == 1.0
    assert ls._gaussian_transfer(16, 3.0) is not g1


@pytest.mark.parametrize("power", [2.0, 1.5])
def test_joint_kernel_k3_scalar_path_equals_lapack(power):
    """K = 3 runs on scalars (unrolled Cholesky, substitutions and Jacobi): per voxel
    ``W δ = L U f(Λ) Uᵀ L⁻¹ δ`` against NumPy's Cholesky and ``eigh`` (LAPACK) in float64, on
    random covariances with clipped (negative) signal eigenvalues and near-degenerate ones."""
    from cryoclass.core._shrink_numba import joint_shrink_kernel

    rng = np.random.default_rng(7)
    V, K = 500, 3
    B = rng.standard_normal((V, K, K))
    N = B @ B.transpose(0, 2, 1) + 0.1 * np.eye(K)
    B = rng.standard_normal((V, K, K))
    S = B @ B.transpose(0, 2, 1) - 1.0 * np.eye(K)  # some eigenvalues < 0: clipped
    S[:50] = np.eye(K) * 2.0 + 1e-9 * S[:50]  # (nearly) degenerate signal
    d = rng.standard_normal((V, K))
    pairs = [(i, j) for i in range(K) for j in range(i, K)]
    Sp = np.stack([S[:, i, j] for i, j in pairs])
    Np = np.stack([N[:, i, j] for i, j in pairs])
    pi = np.array([i for i, _ in pairs], np.int64)
    pj = np.array([j for _, j in pairs], np.int64)
    out = np.empty_like(d)
    joint_shrink_kernel(Sp, Np, pi, pj, d, power, out)
    ridge = 1e-6 * np.trace(N, axis1=1, axis2=2) / K + 1e-30
    L = np.linalg.cholesky(N + ridge[:, None, None] * np.eye(K))
    Li = np.linalg.inv(L)
    lam, U = np.linalg.eigh(Li @ S @ Li.transpose(0, 2, 1))
    lam = np.maximum(lam, 0.0)
    f = (lam / (1.0 + lam)) ** power
    want = (L @ U @ (f[:, :, None] * (U.transpose(0, 2, 1) @ Li)) @ d[:, :, None])[:, :, 0]
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-10 * np.abs(want).max())
