"""Tests of cryoclass.core.symmetry: group structure, RELION's matrices, symmetrisers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from cryoclass.core.filters import lowpass
from cryoclass.core.masks import spherical_mask
from cryoclass.core.symmetry import (
    parse_symmetry,
    symmetrize_fourier,
    symmetrize_volume,
    symmetry_operators,
)
from cryoclass.errors import ParameterError

ORDERS = {"C1": 1, "C4": 4, "C7": 7, "D1": 2, "D2": 4, "D7": 14, "T": 12, "O": 24, "I": 60}


def _contains(ops, m, tol=1e-9):
    return bool(np.any(np.abs(ops - m).max(axis=(1, 2)) < tol))


@pytest.mark.parametrize("symbol", [*ORDERS, "I1", "I3", "I4", "c3", " d5 "])
def test_group_structure(symbol):
    ops = symmetry_operators(symbol)
    name = symbol.strip().upper()
    n = ORDERS.get(name, 60 if name.startswith("I") else (3 if name == "C3" else 10))
    assert ops.shape == (n, 3, 3) and ops.dtype == np.float64
    np.testing.assert_array_equal(ops[0], np.eye(3))
    np.testing.assert_allclose(
        ops @ ops.transpose(0, 2, 1), np.broadcast_to(np.eye(3), ops.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(ops), 1.0, atol=1e-12)
    # closed under multiplication and inversion, no duplicates
    for a in ops:
        assert _contains(ops, a.T)
        for b in ops:
            assert _contains(ops, a @ b)
    d = np.abs(ops[:, None] - ops[None]).max(axis=(2, 3))
    assert np.all(d[~np.eye(n, dtype=bool)] > 1e-3)


def test_relion_axis_conventions():
    c4 = symmetry_operators("C4")
    assert _contains(c4, np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]))  # 4-fold about z
    d7 = symmetry_operators("D7")
    assert _contains(d7, np.diag([1.0, -1.0, -1.0]))  # 2-fold along x
    assert not _contains(d7, np.diag([-1.0, 1.0, -1.0]))
    t = symmetry_operators("T")
    c = np.cos(2 * np.pi / 3)
    s = np.sin(2 * np.pi / 3)
    assert _contains(t, np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]))  # 3-fold about z
    i2 = symmetry_operators("I")
    assert _contains(i2, np.diag([-1.0, -1.0, 1.0]))  # I2: 2-fold about z
    i1 = symmetry_operators("I1")
    assert _contains(i1, np.diag([1.0, -1.0, -1.0]))  # I1: 2-fold about x
    o = symmetry_operators("O")
    assert _contains(o, np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]))


def test_parse_and_bad_symbols():
    assert parse_symmetry("d7") == ("D", 7)
    assert parse_symmetry("I") == ("I", 0)
    for bad in ("C0", "X3", "", "D"):
        with pytest.raises(ParameterError):
            symmetry_operators(bad)
    with pytest.raises(ValueError):
        parse_symmetry("I5")


# --------------------------------------------------------------------------- RELION reference
def _relion_ops(symbol: str, workdir) -> np.ndarray:
    proc = subprocess.run(
        ["relion_refine", "--print_symmetry_ops", "--sym", symbol, "--i", "none.star", "--o", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
    )
    lines = proc.stdout.splitlines()
    mats = [
        [[float(v) for v in lines[i + j].split()] for j in (1, 2, 3)]
        for i, line in enumerate(lines)
        if re.match(r"\s*R\(\d+\)=", line)
    ]
    if not mats:
        raise RuntimeError(f"no matrices in relion_refine output:\n{proc.stdout}\n{proc.stderr}")
    return np.array(mats)


@pytest.mark.relion
@pytest.mark.parametrize("symbol", ["C1", "C4", "C7", "D2", "D7", "T", "O", "I", "I1", "I3", "I4"])
def test_operators_match_relion(symbol, tmp_path):
    if shutil.which("relion_refine") is None:
        if os.environ.get("CRYOCLASS_REQUIRE_RELION") == "1":
            pytest.fail("relion_refine not found but CRYOCLASS_REQUIRE_RELION=1")
        pytest.skip("relion_refine not installed")
    ref = _relion_ops(symbol, tmp_path)
    ours = symmetry_operators(symbol)
    assert ref.shape == ours.shape
    np.testing.assert_allclose(ref[0], np.eye(3))
    # same set up to ordering: a bijection within RELION's printed precision (≤ 1e-5)
    d = np.abs(ref[:, None] - ours[None]).max(axis=(2, 3))
    match = d.argmin(axis=1)
    assert np.all(d.min(axis=1) < 5e-5)
    assert len(set(match.tolist())) == len(ours)


# --------------------------------------------------------------------------- symmetrisers
def _phantom(D, seed=0):
    """Smooth asymmetric random phantom inside a sphere."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((D, D, D))
    v = lowpass(v, 6.0, 1.0, kind="cosine") * spherical_mask(D, D / 2 - 5, soft_px=2)
    return v


def _corr(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.mark.parametrize("D", [27, 28])
@pytest.mark.parametrize("symbol", ["C4", "D7", "I"])
def test_symmetrized_volume_is_invariant(D, symbol):
    ops = symmetry_operators(symbol)
    sym = symmetrize_volume(_phantom(D), ops)
    assert sym.shape == (D,) * 3 and sym.dtype == np.float64
    for R in ops[1:]:
        rotated = symmetrize_volume(sym, R[None])
        assert _corr(rotated, sym) > 0.99


def test_symmetrize_volume_basics():
    D = 20
    v = _phantom(D, seed=1).astype(np.float32)
    out = symmetrize_volume(v, symmetry_operators("C1"))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, v, atol=1e-6)
    # a 90° turn about z is a pure index permutation: v'(x, y) = v(y, -x) for r' = R r
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    rot = symmetrize_volume(v, R[None])
    c = D // 2
    z, y, x = 3, 7, 12
    assert rot[z, y, x] == pytest.approx(v[z, c - (x - c), y], abs=1e-6)
    # batched, and sum = n_ops × mean
    ops = symmetry_operators("C3")
    batch = symmetrize_volume(np.stack([v, 2 * v]), ops, reduce="sum")
    np.testing.assert_allclose(batch[1], 2 * batch[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch[0] / 3, symmetrize_volume(v, ops), rtol=1e-5, atol=1e-6)
    with pytest.raises(ParameterError):
        symmetrize_volume(v, ops, reduce="max")
    with pytest.raises(ParameterError):
        symmetrize_volume(v, np.eye(2))


def _pad_ft(v, P):
    D = v.shape[0]
    pad = np.zeros((P,) * 3)
    o = P // 2 - D // 2
    pad[o : o + D, o : o + D, o : o + D] = v
    return np.fft.rfftn(np.fft.ifftshift(pad))


def _unpad(F, P, D):
    o = P // 2 - D // 2
    return np.fft.fftshift(np.fft.irfftn(F, s=(P,) * 3, axes=(0, 1, 2)))[
        o : o + D, o : o + D, o : o + D
    ]


@pytest.mark.parametrize("D, P", [(21, 42), (20, 40), (20, 41)])
@pytest.mark.parametrize("symbol", ["C4", "D7", "I"])
def test_symmetrize_fourier_matches_real_space(D, P, symbol):
    ops = symmetry_operators(symbol)
    v = _phantom(D, seed=2)
    F = _pad_ft(v, P)
    G = symmetrize_fourier(F, ops)
    assert G.shape == F.shape and G.dtype == np.complex128
    # Hermitian: the kx = 0 plane satisfies G(-k) = conj G(k)
    plane = G[:, :, 0]
    flip = np.roll(plane[::-1, ::-1], 1, axis=(0, 1))
    if P % 2 == 0:  # the -P/2 row/column has no stored +P/2 twin
        keep = np.arange(P) != P // 2
        plane, flip = plane[keep][:, keep], flip[keep][:, keep]
    np.testing.assert_allclose(plane, flip.conj(), atol=1e-8 * np.abs(G).max())
    real_sym = symmetrize_volume(v, ops)
    four_sym = _unpad(G, P, D)
    assert _corr(four_sym, real_sym) > 0.99
    for R in ops[1:4]:
        assert _corr(symmetrize_volume(four_sym, R[None]), four_sym) > 0.99


def test_symmetrize_fourier_identity_weights_and_sum():
    D = 16
    F = _pad_ft(_phantom(D, seed=3), 32).astype(np.complex64)
    np.testing.assert_allclose(symmetrize_fourier(F, symmetry_operators("C1")), F, atol=1e-6)
    W = np.abs(F) ** 2  # a real weight grid stays real
    Ws = symmetrize_fourier(W, symmetry_operators("D2"), reduce="sum")
    assert Ws.dtype == np.float32 and np.all(Ws >= -1e-3 * W.max())
    stacked = symmetrize_fourier(np.stack([F, 2 * F]), symmetry_operators("C2"), reduce="sum")
    np.testing.assert_allclose(stacked[1], 2 * stacked[0], rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError):
        symmetrize_fourier(np.zeros((8, 8, 8), complex), symmetry_operators("C2"))
    # max_radius: same values inside the sphere, zero outside
    ops = symmetry_operators("D3")
    full = symmetrize_fourier(F, ops)
    part = symmetrize_fourier(F, ops, max_radius=10)
    r = np.sqrt(
        np.fft.fftfreq(32, 1 / 32)[:, None, None] ** 2
        + np.fft.fftfreq(32, 1 / 32)[None, :, None] ** 2
        + np.arange(17)[None, None, :] ** 2
    )
    np.testing.assert_allclose(part[r <= 10], full[r <= 10], rtol=1e-6)
    assert np.all(part[r > 10] == 0)
