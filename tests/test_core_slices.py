"""Fourier-slice projection / back-projection and the fused classification kernels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoclass.conventions import euler_to_matrix
from cryoclass.core import slices as S


def _blobs(D, n=30, sigma=1.5, seed=1):
    """Voxelised sum of Gaussians + its atoms (for analytic projections)."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3)) * D / 10
    w = rng.uniform(0.5, 1.5, n)
    g = np.arange(D) - D // 2
    Z, Y, X = np.meshgrid(g, g, g, indexing="ij")
    vol = np.zeros((D, D, D))
    for p, wi in zip(pts, w):
        vol += wi * np.exp(-((X - p[0]) ** 2 + (Y - p[1]) ** 2 + (Z - p[2]) ** 2) / (2 * sigma**2))
    return vol.astype(np.float32), pts, w, sigma


def _analytic_projection(D, pts, w, sigma, A):
    g = np.arange(D) - D // 2
    Y2, X2 = np.meshgrid(g, g, indexing="ij")
    q = pts @ A.T  # image point of atom p is (A p)[:2]
    img = np.zeros((D, D))
    for p, wi in zip(q, w):
        img += (
            wi
            * np.sqrt(2 * np.pi)
            * sigma
            * np.exp(-((X2 - p[0]) ** 2 + (Y2 - p[1]) ** 2) / (2 * sigma**2))
        )
    return img


def _random_rotations(n, seed=0):
    R = Rotation.random(n, random_state=seed).as_matrix()
    return R.astype(np.float32)


@pytest.mark.parametrize("D", [32, 33])
def test_delta_at_centre_stays_at_centre(D):
    vol = np.zeros((D, D, D), np.float32)
    vol[D // 2, D // 2, D // 2] = 1.0
    imgs = S.project(vol, _random_rotations(5))
    for img in imgs:
        assert np.unravel_index(np.argmax(img), img.shape) == (D // 2, D // 2)
        assert img.sum() == pytest.approx(1.0, rel=1e-5)  # DC = total mass


@pytest.mark.parametrize("D", [40, 41])
def test_projection_matches_analytic_gaussians(D):
    """Fourier-slice projection (pad 2, trilinear + sinc² pre-correction) of a voxelised Gaussian
    mixture vs the exact line integrals of the continuous Gaussians. Measured 0.7 % relative
    error at D = 48; 2 % bound leaves room for odd boxes / other seeds (pad 1 gives 3–8 %)."""
    vol, pts, w, sigma = _blobs(D)
    A = _random_rotations(8, seed=3)
    imgs = S.project(vol, A, pad=2)
    for img, a in zip(imgs, A):
        ref = _analytic_projection(D, pts, w, sigma, a.astype(np.float64))
        assert np.linalg.norm(img - ref) / np.linalg.norm(ref) < 0.02


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_projection_along_axes_equals_sum(axis):
    """Poses that look down z, y or x equal the real-space sum along that axis (the 2 % slack is
    the sinc² pre-correction, exact only on average over off-grid samples)."""
    D = 36
    vol, *_ = _blobs(D, seed=5)
    # A maps volume (x, y, z) to image (x', y', depth); rows pick the image axes.
    A = {
        0: np.eye(3),  # down z: image (x, y)
        1: np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float),  # image (x, z)
        2: np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], float),  # image (z, y)
    }[axis]
    img = S.project(vol, A[None].astype(np.float32))[0]
    if axis == 0:
        ref = vol.sum(0)  # [y, x]
    elif axis == 1:
        ref = vol.sum(1)  # [z, x] -> image rows = y' = z
    else:
        ref = vol.sum(2).T  # [z, y] -> image [y, x'=z]
    assert np.linalg.norm(img - ref) / np.linalg.norm(ref) < 0.03


def test_hot_and_cold_voxels_land_where_rotation_puts_them():
    D = 40
    vol = np.zeros((D, D, D), np.float32)
    hot, cold = np.array([8, -5, 3]), np.array([-6, 7, -9])  # (x, y, z) offsets from centre
    vol[tuple(D // 2 + hot[::-1])] = 1.0
    vol[tuple(D // 2 + cold[::-1])] = -1.0
    A = euler_to_matrix(37.0, 71.0, -120.0)
    img = S.project(vol, A[None].astype(np.float32))[0]
    for p, pick in ((hot, np.argmax), (cold, np.argmin)):
        x, y = (A @ p)[:2]  # independent prediction (matrix acting on the column vector)
        iy, ix = np.unravel_index(pick(img), img.shape)
        assert abs(ix - (D // 2 + x)) <= 1 and abs(iy - (D // 2 + y)) <= 1


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-4)])
def test_backprojection_is_adjoint_of_slice_extraction(dtype, tol):
    """Re⟨P g, y⟩ = Re⟨g, Pᵀ y⟩ (the operator is real-linear: Hermitian mates are conjugated).
    The kernels compute in float32, so both dtypes are held to float32 accuracy."""
    rng = np.random.default_rng(0)
    D, K, n = 24, 2, 20
    geom = S.SliceGeometry(D, 2)
    grid = rng.normal(size=geom.grid_shape + (K,)) + 1j * rng.normal(size=geom.grid_shape + (K,))
    grid = grid.astype(np.complex64)
    A = _random_rotations(n, seed=2)
    Pg = S._gather_xp(grid, A, geom)  # (n, M, K)
    cdt = np.complex64 if dtype is np.float32 else np.complex128
    y = (rng.normal(size=Pg.shape) + 1j * rng.normal(size=Pg.shape)).astype(cdt)
    lhs = np.sum((np.conj(y) * Pg).real, dtype=np.float64)
    rhs = 0.0
    for k in range(K):
        acc = S.new_accumulator(geom, 1)
        ones = np.ones((n, geom.M), np.float32)
        S.backproject_weighted(
            A,
            y[..., k],
            ones,
            np.ones(n),
            np.ones(geom.M),
            np.ones((n, 1)),
            np.zeros(n, int),
            geom,
            acc,
            rmin=0.0,
        )
        num, _ = S.split_accumulator(acc[0])
        rhs += np.sum((np.conj(num[..., 0]) * grid[..., k]).real, dtype=np.float64)
    assert lhs == pytest.approx(rhs, rel=tol)


@pytest.mark.parametrize("D", [32, 33])
def test_noiseless_projections_reconstruct_the_phantom(D):
    vol, *_ = _blobs(D, seed=7)
    A = _random_rotations(1500, seed=4)
    imgs = S.project(vol, A)
    rec = S.reconstruct_simple(imgs, A)
    assert np.corrcoef(rec.ravel(), vol.ravel())[0, 1] > 0.99


def test_friedel_symmetry_of_slices():
    """Slices of a real volume are Hermitian: the kx = 0 pixels (0, ky) and (0, −ky) hold
    complex-conjugate values."""
    rng = np.random.default_rng(3)
    D = 24
    geom = S.SliceGeometry(D, 2)
    vol = rng.normal(size=(1, D, D, D)).astype(np.float32)
    grid = S.volumes_to_grid(vol, geom)
    V = S._gather_xp(grid, _random_rotations(4), geom)[..., 0]
    kx, ky = geom.kx, geom.ky
    for j in np.nonzero((kx == 0) & (ky > 0))[0]:
        mate = np.nonzero((kx == 0) & (ky == -ky[j]))[0]
        if mate.size:
            np.testing.assert_allclose(V[:, j], np.conj(V[:, mate[0]]), rtol=1e-4, atol=1e-3)


def _engine_inputs(D=24, K=3, n=40, seed=0):
    rng = np.random.default_rng(seed)
    # r_max below D/2: the Nyquist pixels (0, -D/2) and (D/2, 0) are not invertible by irfft2,
    # which the unfused reference goes through
    geom = S.SliceGeometry(D, 2, r_max=D / 2 - 1)
    vols = rng.normal(size=(K, D, D, D)).astype(np.float32)
    grid = S.volumes_to_grid(vols, geom)
    A = _random_rotations(n, seed=seed)
    X = (rng.normal(size=(n, geom.M)) + 1j * rng.normal(size=(n, geom.M))).astype(np.complex64)
    C = rng.uniform(-1, 1, (n, geom.M)).astype(np.float32)
    al = rng.uniform(0.5, 2.0, n).astype(np.float32)
    ws = (geom.weight / rng.uniform(1, 2, geom.M)).astype(np.float32)
    return geom, vols, grid, A, X, C, al, ws


def test_fused_loglik_equals_unfused_computation():
    """Fused Numba kernel vs the plain recipe: project every class with :func:`project`, keep the
    disc, apply CTF and scale, sum weighted squared residuals."""
    geom, vols, grid, A, X, C, al, ws = _engine_inputs()
    fused = S.loglik(grid, A, X, C, al, ws, geom, impl="numba")
    ref = np.empty_like(fused)
    for k in range(vols.shape[0]):
        imgs = S.project(vols[k], A, pad=2)
        F = np.fft.rfft2(np.fft.ifftshift(imgs, axes=(-2, -1)))
        P = S.extract_disc(F, geom)
        d = X - al[:, None] * C * P
        ref[:, k] = -0.5 * np.sum(ws * np.abs(d) ** 2, axis=1)
    np.testing.assert_allclose(fused, ref, rtol=2e-4)
    np.testing.assert_allclose(fused, S.loglik(grid, A, X, C, al, ws, geom, impl="xp"), rtol=1e-5)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 9])
def test_loglik_class_blocks_equal_array_code(K):
    """The kernel's class blocks of 4, 3, 2 and 1 (K = 9: 4 + 4 + 1; 5: 4 + 1; …), each its own
    pixel-vectorised loop, give the array code's log-likelihoods; each class its own column
    (a block reading its neighbour's values would mix columns)."""
    geom, vols, grid, A, X, C, al, ws = _engine_inputs(D=20, K=K, seed=3)
    fused = S.loglik(grid, A, X, C, al, ws, geom, impl="numba")
    ref = S.loglik(grid, A, X, C, al, ws, geom, impl="xp")
    np.testing.assert_allclose(fused, ref, rtol=1e-5)
    if K > 1:  # neighbouring columns differ well beyond the tolerance: a mix-up would show
        assert np.abs(np.diff(ref, axis=1)).max(axis=0).min() > 1e-2 * np.abs(ref).max()
    one = S.loglik(grid[..., K - 1 :], A, X, C, al, ws, geom, impl="numba")
    np.testing.assert_allclose(fused[:, K - 1], one[:, 0], rtol=1e-6)


def _responsibilities(kind, n, K, rng):
    if kind == "soft":  # every class active: the kernel's blocks of three classes
        return rng.dirichlet(np.ones(K), n).astype(np.float32)
    if kind == "hard":  # one class per particle: the class-by-class path
        r = np.zeros((n, K), np.float32)
        r[np.arange(n), rng.integers(0, K, n)] = 1.0
        return r
    # "peaked": many classes below rmin = 1e-2 — blocks with inactive members, and particles
    # with too few active classes for blocks
    return rng.dirichlet(np.full(K, 0.3), n).astype(np.float32)


@pytest.mark.parametrize("K", [1, 3, 4, 7])
@pytest.mark.parametrize("kind", ["soft", "hard", "peaked"])
def test_fused_backprojection_equals_array_code(K, kind):
    geom, vols, grid, A, X, C, al, ws = _engine_inputs(seed=1)
    rng = np.random.default_rng(5)
    r = _responsibilities(kind, len(A), K, rng)
    half = rng.integers(0, 2, len(A))
    rmin = 1e-2 if kind == "peaked" else 0.0
    out = []
    for impl in ("numba", "xp"):
        acc = S.new_accumulator(geom, K)
        S.backproject_weighted(A, X, C, al, ws, r, half, geom, acc, rmin=rmin, impl=impl)
        out.append(acc)
    assert np.abs(out[1]).max() > 0
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-4 * np.abs(out[1]).max())


@pytest.mark.parametrize("K", [3, 7])
def test_backprojection_class_blocks_split_across_tasks_agree(K):
    """The kernel's class blocks per task (``nblocks``: how many threads share a half-set)
    change who writes what, never the sums: 1, 2 and K blocks give the same accumulator."""
    from cryoclass.core._slice_numba import backproject_kernel_slp

    geom, vols, grid, A, X, C, al, ws = _engine_inputs(seed=2)
    A, X, C, al, ws = S._prep(A, X, C, al, ws, np)
    rng = np.random.default_rng(6)
    r = _responsibilities("soft", len(A), K, rng)
    half = rng.integers(0, 2, len(A)).astype(np.int64)
    out = []
    for nblocks in (1, 2, K):
        acc = S.new_accumulator(geom, K)
        backproject_kernel_slp(
            A, geom.kx, geom.ky, ws, X, C, al, r, half, np.float32(geom.pad), geom.off,
            np.float32(0.0), acc.reshape(2, -1), acc.shape[2], acc.shape[3], nblocks,
        )  # fmt: skip
        out.append(acc)
    for acc in out[1:]:
        np.testing.assert_allclose(acc, out[0], rtol=1e-6, atol=1e-6 * np.abs(out[0]).max())


def test_one_hot_back_projection_equals_the_class_by_class_path():
    """A particle with one class of several (one-hot passes) takes its own scatter
    (``_scatter_one``, geometry from the vectorised pixel pass); one with two active classes
    takes the class-by-class loop. For the classes both write, the sums are the same, bit for
    bit: class 7 is every particle's second class (at ``rmin``) in the second run, so classes
    0-6 see exactly the same contributions in both."""
    geom, vols, grid, A, X, C, al, ws = _engine_inputs(seed=4)
    rng = np.random.default_rng(8)
    K, n = 8, len(A)
    one_hot = np.zeros((n, K), np.float32)
    one_hot[np.arange(n), rng.integers(0, K - 1, n)] = 1.0
    two = one_hot.copy()
    two[:, K - 1] = 1e-2
    half = rng.integers(0, 2, n)
    out = []
    for r in (one_hot, two):
        acc = S.new_accumulator(geom, K)
        S.backproject_weighted(A, X, C, al, ws, r, half, geom, acc, rmin=1e-2, impl="numba")
        out.append(acc)
    assert np.abs(out[0][..., : K - 1, :]).max() > 0
    np.testing.assert_array_equal(out[0][..., : K - 1, :], out[1][..., : K - 1, :])
    assert not out[0][..., K - 1, :].any() and out[1][..., K - 1, :].any()


def test_backprojection_refuses_a_non_contiguous_accumulator():
    geom, vols, grid, A, X, C, al, ws = _engine_inputs()
    r = np.full((len(A), 3), 1 / 3, np.float32)
    acc = S.new_accumulator(geom, 6)[..., ::2, :]  # a strided view: a flat copy would lose sums
    with pytest.raises(ValueError, match="C-contiguous"):
        S.backproject_weighted(A, X, C, al, ws, r, np.zeros(len(A), int), geom, acc)


def test_geometry_constants_on_a_device_are_made_once_and_not_pickled():
    """``SliceGeometry.on``: on NumPy the constant itself; for another array module a copy made
    once per geometry (a stand-in module counts the copies); a pickled geometry carries no
    device copies and equals the original."""
    import pickle
    from types import SimpleNamespace

    geom = S.SliceGeometry(12, 2)
    assert geom.on(np, "kx") is geom.kx
    made = []
    fake_xp = SimpleNamespace(asarray=lambda a: made.append(a) or np.array(a))
    a = geom.on(fake_xp, "kx")
    b = geom.on(fake_xp, "kx")
    c = geom.on(fake_xp, "twice_ky", lambda: 2 * geom.ky)
    assert a is b and len(made) == 2
    np.testing.assert_array_equal(a, geom.kx)
    np.testing.assert_array_equal(c, 2 * geom.ky)
    back = pickle.loads(pickle.dumps(geom))
    assert back == geom and "_device_cache" not in back.__dict__
    np.testing.assert_array_equal(back.kx, geom.kx)


def test_array_code_corners_equal_the_per_corner_recipe():
    """The array code's 8 trilinear corners, computed at once (flat indices, weights), equal
    the textbook recipe corner by corner: index (z0 + cz, y0 + cy, x0 + cx) of the floor and
    weight wz·wy·wx, bit for bit; every corner inside the grid."""
    geom, vols, grid, A, *_ = _engine_inputs(D=20, K=2, seed=5)
    q, _ = S._slice_coords(A, geom, np)
    Z, Y, X = grid.shape[:3]
    rows, w = S._corner_rows(q, geom, np)
    assert rows.shape == w.shape == q.shape[:2] + (8,) and w.dtype == np.float32
    f = np.floor(q)
    d = (q - f).astype(np.float32)
    i = f.astype(np.int64)
    for c, (cz, cy, cx) in enumerate(np.ndindex(2, 2, 2)):
        z, y, x = i[..., 2] + cz + geom.off, i[..., 1] + cy + geom.off, i[..., 0] + cx
        assert (z >= 0).all() and (z < Z).all() and (y >= 0).all() and (y < Y).all()
        assert (x >= 0).all() and (x < X).all()
        np.testing.assert_array_equal(rows[..., c], np.ravel_multi_index((z, y, x), (Z, Y, X)))
        wz = d[..., 2] if cz else 1 - d[..., 2]
        wy = d[..., 1] if cy else 1 - d[..., 1]
        wx = d[..., 0] if cx else 1 - d[..., 0]
        np.testing.assert_array_equal(w[..., c], wz * wy * wx)
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-6)
    assert S._index_dtype(2**31 - 1) == np.int32 and S._index_dtype(2**31) == np.int64


def test_array_code_batches_give_the_unbatched_result(monkeypatch):
    """Split into particle batches (a tiny :data:`CORNER_BATCH`: one particle each), the
    array code's slices and back-projection equal one batch bit for bit (same order of
    additions)."""
    geom, vols, grid, A, X, C, al, ws = _engine_inputs(D=16, K=3, seed=6)
    n = len(A)
    r = np.random.default_rng(6).dirichlet(np.ones(3), n).astype(np.float32)
    half = (np.arange(n) % 2).astype(np.int64)

    def run():
        acc = S.new_accumulator(geom, 3)
        S._backproject_xp(A, X, C, al, ws, r, half, geom, acc, 1e-4)
        return S._gather_xp(grid, A, geom), acc

    v1, acc1 = run()
    assert len(S._batches(n, geom.M * 8 * 3)) == 1
    monkeypatch.setattr(S, "CORNER_BATCH", geom.M * 8 * 3 * 2 - 1)
    assert len(S._batches(n, geom.M * 8 * 3)) == n
    v2, acc2 = run()
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(acc1, acc2)
    assert np.abs(acc1).max() > 0


@pytest.mark.parametrize("K", [1, 3])
def test_slice_stats_kernel_equals_array_code(K):
    """The vectorised gather of class 0 (of K: the class stride) and the shell sums after it."""
    geom, vols, grid, A, X, C, al, ws = _engine_inputs(D=20, K=K, seed=4)
    got = S.slice_stats(grid, A, X, C, geom, impl="numba")
    ref = S.slice_stats(grid, A, X, C, geom, impl="xp")
    for g, r in zip(got, ref):
        assert np.abs(r).max() > 0
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())
    assert S._slice_stats_agree(S._verified_slice_stats_kernel(), K)


def test_slice_stats_match_loglik():
    """Σ_shell (sxx − 2 sxp + spp)/σ² reproduces −2·loglik for one class with α = 1."""
    geom, vols, grid, A, X, C, _, _ = _engine_inputs(K=1, seed=2)
    sxx, sxp, spp = S.slice_stats(grid, A, X, C, geom)
    sig2 = np.linspace(1.0, 2.0, geom.n_shells)
    ws = geom.weight / sig2[geom.shell]
    ll = S.loglik(grid, A, X, C, np.ones(len(A)), ws, geom)[:, 0]
    np.testing.assert_allclose(-0.5 * ((sxx - 2 * sxp + spp) / sig2).sum(1), ll, rtol=1e-4)


def test_slp_back_projection_is_verified_and_falls_back_when_wrong(monkeypatch):
    """The SLP-compiled kernel is checked once per binary against the array code; where it
    disagrees (a miscompilation), the kernel compiled without SLP is used, with a warning."""
    from cryoclass.core import _slice_numba as SN

    assert S._backproject_agrees(SN.backproject_kernel_slp, 4, False)
    assert S._backproject_agrees(SN.backproject_kernel_slp, 3, False)  # one block of three
    plain = SN.backproject_kernel_plain()
    assert plain is not SN.backproject_kernel_slp
    assert S._backproject_agrees(plain, 4, False) and S._backproject_agrees(plain, 1, False)

    def wrong(*a):  # what a miscompilation could do: every sum 1 % off
        SN.backproject_kernel_slp(*a)
        a[12][...] *= np.float32(1.01)  # a[12]: the flat accumulator

    assert not S._backproject_agrees(wrong, 4, False)
    assert not S._backproject_agrees(wrong, 3, False)
    monkeypatch.setattr(S, "_verified_before", lambda kernel: False)  # no note from earlier
    monkeypatch.setattr(S, "_backproject_agrees", lambda kernel, K, hard: False)
    monkeypatch.setattr(SN, "backproject_kernel_plain", lambda: plain)
    S._verified_backproject_kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="back-projection kernel disagrees"):
            assert S._verified_backproject_kernel() is plain
    finally:
        S._verified_backproject_kernel.cache_clear()


def test_vectorised_loglik_is_verified_and_falls_back_when_wrong(monkeypatch):
    """The 8-lane kernel is checked once per binary against the array code through each block
    size; where it disagrees (a miscompilation), the default-width kernel is used, with a
    warning."""
    from cryoclass.core import _slice_numba as SN

    assert all(S._loglik_agrees(SN.loglik_kernel_wide, K) for K in (1, 6, 7))
    plain = SN.loglik_kernel_plain()
    assert plain is not SN.loglik_kernel_wide
    assert S._loglik_agrees(plain, 3)

    right = SN.loglik_kernel_wide

    def wrong(*a):  # a miscompilation of one block size: class 2 of 4 is 0.1 % off
        right(*a)
        out = a[-1]
        if out.shape[1] >= 3:
            out[:, 2] *= 1.001

    assert S._loglik_agrees(wrong, 1) and not S._loglik_agrees(wrong, 6)
    monkeypatch.setattr(S, "_verified_before", lambda kernel: False)  # no note from earlier
    monkeypatch.setattr(SN, "loglik_kernel_wide", wrong)
    monkeypatch.setattr(SN, "loglik_kernel_plain", lambda: plain)
    S._verified_loglik_kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="log-likelihood kernel disagrees"):
            assert S._verified_loglik_kernel() is plain
    finally:
        S._verified_loglik_kernel.cache_clear()


def test_kernel_check_is_noted_per_compiled_binary(tmp_path):
    """A passed check is noted beside the kernel's Numba cache index and not run again while
    that index (the compiled binary) is unchanged; a rewritten index is checked again; a failed
    check leaves no note (the fallback is chosen again in the next process)."""
    from types import SimpleNamespace

    index = tmp_path / "kernel.nbi"
    index.write_bytes(b"index v1")
    cache = SimpleNamespace(_cache_file=SimpleNamespace(_index_path=str(index)))
    kernel = SimpleNamespace(dispatcher=SimpleNamespace(_cache=cache))
    calls = []

    def agrees(k):
        calls.append(k)
        return verdict

    verdict = True
    assert S._verified_kernel(kernel, lambda: "plain", agrees, "test") is kernel
    assert len(calls) == 1 and (tmp_path / "kernel.nbi.verified").exists()
    assert S._verified_kernel(kernel, lambda: "plain", agrees, "test") is kernel
    assert len(calls) == 1  # noted: not checked again
    index.write_bytes(b"index v2, recompiled")
    verdict = False
    with pytest.warns(RuntimeWarning, match="test kernel disagrees"):
        assert S._verified_kernel(kernel, lambda: "plain", agrees, "test") == "plain"
    assert len(calls) == 2
    assert not S._verified_before(kernel)  # the stale note does not match the new index
    # no cache on disk (e.g. NUMBA_DISABLE_JIT): always checked, nothing written
    bare = SimpleNamespace()
    verdict = True
    assert S._verified_kernel(bare, lambda: "plain", agrees, "test") is bare
    assert S._verified_kernel(bare, lambda: "plain", agrees, "test") is bare
    assert len(calls) == 4


def test_prefetch_hint_compiles_for_this_llvm_and_changes_nothing():
    """The back-projection prefetches the accumulator corners of the pixel ``PREFETCH_AHEAD``
    ahead (``_slice_numba._prefetch``, LLVM's ``prefetch`` intrinsic, whose name depends on the
    LLVM version): it compiles here, is in the machine code's IR, reads and writes nothing
    (even at the array's last element), and the sums it sits beside are exact."""
    import numba as nb

    from cryoclass.core._slice_numba import _PREFETCH_NAME, _prefetch

    @nb.njit(cache=False)
    def touch_and_add(a, ahead):
        s = 0.0
        for i in range(a.size):
            if i + ahead < a.size:
                _prefetch(a, i + ahead)
            _prefetch(a, a.size - 1)
            s += a[i]
        return s

    a = np.arange(1000, dtype=np.float32)
    before = a.copy()
    assert touch_and_add(a, 8) == float(before.sum())
    np.testing.assert_array_equal(a, before)
    ir = touch_and_add.inspect_llvm(touch_and_add.signatures[0])
    assert f"@{_PREFETCH_NAME}(" in ir
