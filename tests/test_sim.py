"""Tests of the simulator: image formation, conventions, noise, determinism, states, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryoclass.conventions import recentre_phase, rfft_frequencies
from cryoclass.errors import ParameterError
from cryoclass.sim import make_atoms, make_volumes, project_atoms, simulate, voxelise
from cryoclass.sim.phantom import PseudoAtoms

D, APIX = 48, 4.0


@pytest.fixture(scope="module")
def closed():
    atoms = make_atoms(D, APIX, ("closed",))
    return atoms, voxelise(atoms[0], D, APIX).astype(np.float64)


def _project(atoms, A, t=(0.0, 0.0), box=D, apix=APIX):
    out = np.zeros((1, box, box))
    return project_atoms(atoms, A[None], np.asarray([t]), np.zeros(1, int), box, apix, out=out)[0]


def _analytic_slice(atoms: PseudoAtoms, A, box, apix):
    """Continuous FT of the Gaussians (voxel units) at ``A.T @ (kx, ky, 0)`` on the rfft2 grid."""
    ky, kx = (g * box * apix for g in rfft_frequencies(box, apix))  # integer frequencies
    k3 = np.stack([kx, ky, np.zeros_like(kx)], -1) @ A  # rows: (A.T @ k).T
    p, s = atoms.positions_A / apix, atoms.sigmas_A / apix
    G = np.zeros(kx.shape, complex)
    for pi, si, wi in zip(p, s, atoms.weights):
        amp = (
            wi
            * (2 * np.pi * si**2) ** 1.5
            * np.exp(-2 * np.pi**2 * si**2 * (k3**2).sum(-1) / box**2)
        )
        G += amp * np.exp(-2j * np.pi * (k3 @ pi) / box)
    return G


def test_identity_projection_is_sum_along_z(closed):
    atoms, vol = closed
    img = _project(atoms, np.eye(3))
    # Both use the same separable ±4σ window; the only difference is the z-truncation of the
    # voxel sum, erfc(4/√2) = 6.3e-5 of each atom's integral, so 2e-4 leaves a 3× margin.
    err = np.abs(img - vol.sum(0)).max() / np.abs(img).max()
    assert err < 2e-4
    # … and its transform is exactly the kz = 0 plane of the volume's (no scale factor).
    Fimg = np.fft.rfft2(np.fft.ifftshift(img))
    Fvol = np.fft.rfftn(np.fft.ifftshift(vol))
    assert np.abs(Fimg - Fvol[0]).max() / np.abs(Fvol[0]).max() < 2e-4


def test_rotated_projection_is_central_slice(closed):
    atoms, _ = closed
    A = Rotation.from_euler("zyz", [30.0, 50.0, 70.0], degrees=True).as_matrix()
    img = _project(atoms, A)
    F = np.fft.rfft2(np.fft.ifftshift(img))
    G = _analytic_slice(atoms[0], A, D, APIX)
    # Error budget: ±4σ truncation (3.4e-4 of an atom's 2D mass) and aliasing of σ = 1 px
    # Gaussians (exp(-2π²σ²) ≈ 3e-9 per image, negligible): 2e-3 relative L2 is a 5× margin.
    assert np.linalg.norm(F - G) / np.linalg.norm(G) < 2e-3


def test_rotated_projection_matches_rotated_voxel_map(closed):
    atoms, vol = closed
    A = Rotation.from_euler("zyz", [-40.0, 110.0, 15.0], degrees=True).as_matrix()
    img = _project(atoms, A)
    # Independent reference: rotate the voxel map (r' = A r) with scipy, then sum along z.
    P = np.eye(3)[::-1]  # (x, y, z) <-> array index order (z, y, x)
    M = P @ A.T @ P
    c = np.full(3, D // 2)
    rotated = ndimage.affine_transform(vol, M, offset=c - M @ c, order=3)
    ref = rotated.sum(0)
    # Cubic interpolation of the σ = 1 px Gaussians costs ~1e-3 relative error (measured 0.5–1.2e-3
    # for three poses): allow 5e-3. A transposed matrix gives 0.4–0.8.
    assert np.corrcoef(img.ravel(), ref.ravel())[0, 1] > 0.9999
    assert np.linalg.norm(img - ref) / np.linalg.norm(ref) < 5e-3
    wrong = _project(atoms, A.T)
    assert np.linalg.norm(wrong - ref) / np.linalg.norm(ref) > 0.3


def test_shift_convention_relion_origin():
    # One atom at the centre; RELION origin t puts the particle centre at −t (checked against
    # relion_reconstruct in test_relion_crosscheck.py).
    atom = PseudoAtoms(
        np.zeros((1, 3)), np.ones(1), np.full(1, 1.5 * APIX), np.zeros(1, int), ("a",)
    )
    t = np.array([8.0, -12.0])  # Å = (2, -3) px
    img = _project([atom], np.eye(3), t)
    yy, xx = np.mgrid[:D, :D]
    centroid = np.array([(img * xx).sum(), (img * yy).sum()]) / img.sum()
    np.testing.assert_allclose(centroid, D // 2 - t / APIX, atol=1e-6)
    # recentre_phase(t) brings it back to the box centre
    fy, fx = rfft_frequencies(D, APIX)
    F = np.fft.rfft2(np.fft.ifftshift(img)) * recentre_phase(fx, fy, t[0], t[1])
    back = np.fft.fftshift(np.fft.irfft2(F, s=(D, D)))
    np.testing.assert_allclose(back, _project([atom], np.eye(3)), atol=1e-9 * img.max())


def test_snr_definition():
    kw = dict(n_particles=200, box=32, pixel_size_A=6.0, states=("closed", "open"), seed=5)
    noisy = simulate(snr=0.1, **kw)
    clean = simulate(snr=None, **kw)
    x = clean.particles.images.read(np.arange(200)).astype(np.float64)
    noise = noisy.particles.images.read(np.arange(200)) - x
    assert clean.noise_sigma == 0.0
    assert clean.signal_variance == pytest.approx(x.var(), rel=1e-5)
    assert noisy.noise_sigma == pytest.approx(np.sqrt(x.var() / 0.1), rel=1e-6)
    # 2e5 noise samples: the variance is known to ±0.3 %; allow 3 %.
    assert x.var() / noise.var() == pytest.approx(0.1, rel=0.03)
    assert abs(noise.mean()) < 0.01 * noise.std()


def test_determinism_and_independence_of_threads_and_chunks():
    kw = dict(n_particles=40, box=24, pixel_size_A=8.0, snr=0.2, seed=11)
    a = simulate(**kw)
    b = simulate(**kw, n_jobs=1, chunk_size=7)
    c = simulate(**{**kw, "seed": 12})
    ia, ib = a.particles.images.read(np.arange(40)), b.particles.images.read(np.arange(40))
    np.testing.assert_array_equal(ia, ib)
    pd.testing.assert_frame_equal(a.particles.meta, b.particles.meta)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(ia, c.particles.images.read(np.arange(40)))


def test_labels_populations_and_metadata():
    ds = simulate(n_particles=100, box=24, pixel_size_A=8.0, populations=(5, 3, 2), seed=2)
    assert np.bincount(ds.labels).tolist() == [50, 30, 20]
    meta = ds.particles.meta
    assert meta["uid"].is_unique and meta["uid"].dtype == np.int64
    assert sorted(np.bincount(meta["half_set"]).tolist()) == [50, 50]
    assert (meta["defocus_u_A"] - meta["defocus_v_A"]).round(6).eq(500.0).all()
    R = ds.particles.rotations
    np.testing.assert_allclose(
        R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12
    )
    with pytest.raises(ParameterError, match="populations"):
        simulate(n_particles=10, box=24, pixel_size_A=8.0, populations=(1, 1))
    with pytest.raises(ParameterError, match="states"):
        simulate(n_particles=10, box=24, pixel_size_A=8.0, states=("closed", "banana"))
    with pytest.raises(ParameterError, match="snr"):
        simulate(n_particles=10, box=24, pixel_size_A=8.0, snr=0.0)


def test_states_mass_fractions_and_domain_motion():
    states = ("closed", "open", "ligand", "missing")
    vols, atoms = make_volumes(D, APIX, states)
    ds_fracs = simulate(n_particles=4, box=24, pixel_size_A=8.0, states=states).mass_fractions
    assert 0.03 <= ds_fracs["ligand"] <= 0.04
    assert 0.03 <= ds_fracs["missing"] <= 0.08
    assert 0.15 <= ds_fracs["open"] <= 0.35
    closed, opened = atoms[0], atoms[1]
    assert 1500 <= closed.n_atoms <= 3000
    # the protein spans 60–70 % of the box
    pos = closed.positions_A
    diameter = 2 * np.linalg.norm(pos, axis=1).max()
    assert 0.6 <= diameter / (D * APIX) <= 0.7
    # domain motion: the body does not move, the hinge domain rotates by 25°
    hinge = closed.domain == closed.domain_names.index("hinge")
    np.testing.assert_array_equal(closed.positions_A[~hinge], opened.positions_A[~hinge])
    a, b = closed.positions_A[hinge], opened.positions_A[hinge]
    rot, _ = Rotation.align_vectors(b - b.mean(0), a - a.mean(0))
    assert np.rad2deg(rot.magnitude()) == pytest.approx(25.0, abs=0.01)
    # ligand: closed + extra density only
    lig = atoms[2]
    np.testing.assert_array_equal(lig.positions_A[: closed.n_atoms], closed.positions_A)
    assert (vols[2] - vols[0]).min() >= 0 and (vols[2] - vols[0]).max() > 0.1 * vols[0].max()


def test_write_and_read_back(tmp_path):
    pytest.importorskip("cryoclass.io.particles")
    from cryoclass.io.mrc import read_mrc
    from cryoclass.io.particles import read_particles

    ds = simulate(n_particles=30, box=24, pixel_size_A=8.0, shift_sigma_A=5.0, seed=4)
    files = ds.write(tmp_path)
    expected = {"particles.star", "particles.mrcs", "particles.cs", "truth_labels.csv"}
    assert expected | {"simulation.yaml", "truth_class_01.mrc", "truth_class_03.mrc"} <= set(files)
    idx = np.arange(30)
    for name in ("particles.star", "particles.cs"):
        back = read_particles(files[name])
        np.testing.assert_array_equal(back.images.read(idx), ds.particles.images.read(idx))
        np.testing.assert_allclose(back.rotations, ds.particles.rotations, atol=1e-5)
        for col in ("shift_x_A", "shift_y_A", "defocus_u_A", "defocus_v_A", "defocus_angle_deg"):
            np.testing.assert_allclose(back.meta[col], ds.particles.meta[col], rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(back.meta["uid"], ds.particles.meta["uid"])
        np.testing.assert_array_equal(back.meta["half_set"], ds.particles.meta["half_set"])
        assert back.pixel_size_A == pytest.approx(8.0)
    truth = pd.read_csv(files["truth_labels.csv"])
    np.testing.assert_array_equal(truth["uid"], ds.particles.meta["uid"])
    np.testing.assert_array_equal(truth["label"], ds.labels)
    vol, apix = read_mrc(files["truth_class_02.mrc"])
    np.testing.assert_array_equal(vol, ds.volumes[1])
    assert apix == pytest.approx(8.0)


def test_cli_writes_dataset(tmp_path, capsys):
    import argparse

    pytest.importorskip("cryoclass.io.particles")
    from cryoclass.sim.cli import add_arguments, run

    parser = argparse.ArgumentParser(prog="cryoclass simulate")
    add_arguments(parser)
    argv = ["-o", str(tmp_path / "out"), "-n", "12", "--box", "24", "--apix", "8", "--quiet"]
    assert run(parser.parse_args(argv + ["--states", "closed,missing", "--snr", "0"])) == 0
    out = capsys.readouterr().out
    assert "simulated 12 particles" in out and "truth_class_02.mrc" in out
    assert (tmp_path / "out" / "particles.star").is_file()
    assert run(parser.parse_args(argv + ["--states", "closed,nope"])) == 2
    assert "unknown state" in capsys.readouterr().err
