"""Our conventions against RELION itself: ``relion_reconstruct`` of simulated particles.

Noiseless particles of one state (box 64, 3 Å/px, defocus 0.8–1.2 µm with a strong 6000 Å
astigmatism so that its angle matters, 6 Å shifts) are written as ``.star``/``.mrcs`` and
reconstructed by ``relion_reconstruct --ctf``; the map must match the truth. The same images with
a deliberately wrong convention in the star file (transposed rotation matrices, flipped origin
sign, flipped CTF sign, flipped astigmatism angle, swapped defocus U/V) must fail the same test,
which shows that the test can catch each of those mistakes.

Measured with RELION 3.1.3 (2000 particles; correlation in the mask, minimum FSC over shells
1–21 of 32): correct 0.9999 / 0.9999; transposed matrices 0.80 / 0.45; flipped origin
0.85 / −0.43; flipped CTF −0.9999 / −1.0; flipped astigmatism angle 0.993 / 0.20; swapped
defocus U/V 0.978 / −0.95.

Missing ``relion_reconstruct`` skips these tests, or fails them when ``CRYOCLASS_REQUIRE_RELION=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cryoclass.sim import simulate

pytestmark = pytest.mark.relion

BOX, APIX, N = 64, 3.0, 2000
# Thresholds. Noiseless data, 2000 uniform views: RELION's gridding reconstruction reproduces the
# truth almost exactly (measured cc 0.9999, FSC ≥ 0.9999 up to shell 21 of 32). We require
# cc > 0.98 and FSC > 0.95 on every shell up to 2/3 Nyquist: loose enough for RELION's gridding
# and interpolation at these sizes, tight enough that every wrong convention below fails by far.
MIN_CC, MIN_FSC, FSC_SHELLS = 0.98, 0.95, 2 * BOX // 6


def _relion() -> str:
    exe = shutil.which("relion_reconstruct")
    if exe is None:
        msg = "relion_reconstruct not found (install RELION 3.1, Debian package 'relion')"
        if os.environ.get("CRYOCLASS_REQUIRE_RELION") == "1":
            pytest.fail(msg + "; CRYOCLASS_REQUIRE_RELION=1 requires it")
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="module")
def dataset():
    _relion()  # skip (or fail) before simulating
    return simulate(
        n_particles=N, box=BOX, pixel_size_A=APIX, snr=None, states=("closed",),
        defocus_range_A=(8000.0, 12000.0), astigmatism_A=6000.0, shift_sigma_A=6.0, seed=7,
    )  # fmt: skip


def _mask(truth: np.ndarray) -> np.ndarray:
    """Soft mask: truth above 5 % of its maximum, dilated by 3 px, Gaussian edge of 1.5 px."""
    core = ndimage.binary_dilation(truth > 0.05 * truth.max(), iterations=3)
    return ndimage.gaussian_filter(core.astype(np.float64), 1.5)


def _fsc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """FSC per integer shell 0..D//2 (independent of cryoclass.core)."""
    Fa, Fb = np.fft.fftn(a), np.fft.fftn(b)
    k = np.fft.fftfreq(a.shape[0]) * a.shape[0]
    r = np.sqrt(sum(g**2 for g in np.meshgrid(k, k, k, indexing="ij"))).round().astype(int).ravel()
    num = np.bincount(r, (Fa * Fb.conj()).real.ravel())
    den = np.sqrt(np.bincount(r, (abs(Fa) ** 2).ravel()) * np.bincount(r, (abs(Fb) ** 2).ravel()))
    return (num / den)[: a.shape[0] // 2 + 1]


def _reconstruct_and_compare(ds, workdir: Path, meta_edit=None, image_sign: float = 1.0):
    from cryoclass.io.mrc import read_mrc
    from cryoclass.io.particles import Particles, write_particles_with_images

    exe = _relion()
    meta = ds.particles.meta.copy()
    if meta_edit is not None:
        meta_edit(meta)
    images = ds.particles.images.read(np.arange(len(meta))) * np.float32(image_sign)
    parts = Particles.from_arrays(images, meta)
    workdir.mkdir(parents=True, exist_ok=True)
    write_particles_with_images(workdir / "particles.star", parts, workdir / "particles.mrcs")
    cmd = [exe, "--i", "particles.star", "--o", "rec.mrc", "--ctf"]
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rec, apix = read_mrc(workdir / "rec.mrc")
    assert rec.shape == (BOX,) * 3 and apix == pytest.approx(APIX, rel=1e-4)
    truth = ds.volumes[0].astype(np.float64)
    m = _mask(truth)
    a, b = rec.astype(np.float64) * m, truth * m
    inside = m > 0.5
    cc = float(np.corrcoef(a[inside], b[inside])[0, 1])
    return cc, _fsc(a, b)


def _passes(cc: float, fsc: np.ndarray) -> bool:
    return cc > MIN_CC and bool(np.all(fsc[1 : FSC_SHELLS + 1] > MIN_FSC))


def test_relion_reconstruct_matches_truth(dataset, tmp_path):
    cc, fsc = _reconstruct_and_compare(dataset, tmp_path / "correct")
    print(f"correct: cc={cc:.4f} fsc[1:{FSC_SHELLS + 1}] min={fsc[1 : FSC_SHELLS + 1].min():.4f}")
    assert cc > MIN_CC
    assert np.all(fsc[1 : FSC_SHELLS + 1] > MIN_FSC), np.round(fsc, 3)


def _transpose(meta):
    cols = [f"rotation_{i}{j}" for i in range(3) for j in range(3)]
    A = meta[cols].to_numpy().reshape(-1, 3, 3).transpose(0, 2, 1)
    meta[cols] = A.reshape(-1, 9)


def _flip_shift(meta):
    meta[["shift_x_A", "shift_y_A"]] *= -1.0


def _flip_astigmatism(meta):
    meta["defocus_angle_deg"] *= -1.0


def _swap_defocus(meta):
    meta[["defocus_u_A", "defocus_v_A"]] = meta[["defocus_v_A", "defocus_u_A"]].to_numpy()


@pytest.mark.parametrize(
    "mistake, edit, sign",
    [("transposed matrices", _transpose, 1.0), ("flipped origin", _flip_shift, 1.0),
     ("flipped CTF sign", None, -1.0), ("flipped astigmatism angle", _flip_astigmatism, 1.0),
     ("swapped defocus U/V", _swap_defocus, 1.0)],
)  # fmt: skip
def test_wrong_convention_is_caught(dataset, tmp_path, mistake, edit, sign):
    cc, fsc = _reconstruct_and_compare(dataset, tmp_path / "wrong", edit, sign)
    print(f"{mistake}: cc={cc:.4f} fsc[1:{FSC_SHELLS + 1}] min={fsc[1 : FSC_SHELLS + 1].min():.4f}")
    assert not _passes(cc, fsc), f"{mistake} was not detected: cc={cc:.4f}"
