"""Preprocessing kernel: equal to the array-code definition (ifftshift → rfft2 → crop → disc ×
recentring phase; RELION's CTF by ``ctf_2d``), and non-finite pixels are named."""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass import sim
from cryoclass.conventions import (
    classification_box,
    ctf_2d,
    fourier_crop_2d,
    recentre_phase,
)
from cryoclass.core.slices import SliceGeometry, extract_disc
from cryoclass.engine.problem import build_problem
from cryoclass.errors import InputFileError
from cryoclass.io.particles import Particles
from cryoclass.io.source import ArrayImageSource


def _reference(particles, filter_res_A):
    """The array-code definition, particle block at once, float64 throughout."""
    meta = particles.meta
    D, apix = int(particles.box), float(particles.pixel_size_A)
    Dc, _ = classification_box(D, apix, filter_res_A)
    geom = SliceGeometry(Dc, 2, r_max=min(D * apix / filter_res_A, Dc / 2))
    fx = geom.kx.astype(np.float64)[None, :] / (D * apix)
    fy = geom.ky.astype(np.float64)[None, :] / (D * apix)
    imgs = particles.images.read(np.arange(len(particles))).astype(np.float64)
    F = np.fft.rfft2(np.fft.ifftshift(imgs, axes=(-2, -1)))
    disc = extract_disc(fourier_crop_2d(F, Dc), geom)
    c = lambda name: meta[name].to_numpy(np.float64)[:, None]  # noqa: E731
    X = disc * recentre_phase(fx, fy, c("shift_x_A"), c("shift_y_A"))
    C = ctf_2d(
        fx,
        fy,
        c("defocus_u_A"),
        c("defocus_v_A"),
        c("defocus_angle_deg"),
        c("voltage_kV"),
        c("cs_mm"),
        c("amplitude_contrast"),
        c("phase_shift_deg"),
        c("bfactor_A2"),
    )
    return X, C


@pytest.mark.parametrize("box", [32, 33])  # odd boxes: ifftshift is not a sign flip
def test_kernel_equals_array_definition(box):
    ds = sim.simulate(n_particles=70, box=box, pixel_size_A=5.0, snr=1.0, seed=2)
    meta = ds.particles.meta
    rng = np.random.default_rng(0)  # exercise every CTF term, including B-factor, phase plate
    meta["bfactor_A2"] = rng.uniform(0, 80, len(meta))
    meta["phase_shift_deg"] = rng.uniform(0, 90, len(meta))
    meta["defocus_angle_deg"] = rng.uniform(-180, 180, len(meta))
    prob = build_problem(ds.particles, 12.0, chunk_size=32)  # chunks of 32, 32, 6
    X_ref, C_ref = _reference(ds.particles, 12.0)
    # float32 images and FFT: |error| ~ 1e-6 of the largest coefficient
    scale = np.abs(X_ref).max()
    np.testing.assert_allclose(prob.X, X_ref, rtol=0, atol=2e-6 * scale)
    np.testing.assert_allclose(prob.C, C_ref, rtol=0, atol=2e-6)  # |CTF| ≤ 1, float32 store


def test_non_finite_pixel_is_named():
    ds = sim.simulate(n_particles=40, box=24, pixel_size_A=6.0, snr=1.0, seed=1)
    imgs = ds.particles.images.read(np.arange(40)).copy()
    imgs[23, 5, 7] = np.inf
    bad = Particles(ds.particles.meta, ArrayImageSource(imgs))
    with pytest.raises(InputFileError, match="particle 23 has NaN or inf"):
        build_problem(bad, 14.0, chunk_size=16)
    meta = ds.particles.meta.copy()  # a CTF parameter that slipped past the readers' checks
    meta.loc[31, "defocus_u_A"] = np.nan
    with pytest.raises(InputFileError, match="particle 31 has NaN or inf"):
        build_problem(Particles(meta, ds.particles.images), 14.0, chunk_size=16)
