"""Reliability, numerics: no NaN/inf ever reaches an output.

Hostile-but-legal data (all-zero images, CTF ≈ 0 everywhere, empty classes, extreme
log-likelihood gaps, zero-weight shells) must give finite posteriors, ESS, volumes, FSC and
iteration records — in memory and in every file written to OUTDIR.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import cryoclass
from cryoclass.core.masks import spherical_mask
from cryoclass.engine.em import responsibilities
from cryoclass.errors import InputFileError
from cryoclass.io.cryosparc import load_cs
from cryoclass.io.mrc import read_mrc
from cryoclass.io.particles import Particles
from cryoclass.io.source import ArrayImageSource
from cryoclass.sim import simulate

FAST = dict(
    oem_epochs=1,
    max_fem_iters=2,
    oem_batch_size_per_class=50,
    init_particles_per_class=30,
    pca_n_reconstructions=6,
    filter_res_A=15.0,
)
N, BOX, APIX = 150, 24, 6.0


@pytest.fixture(scope="module")
def base():
    ds = simulate(
        n_particles=N, box=BOX, pixel_size_A=APIX, snr=1.0, seed=5, states=("closed", "open")
    )
    imgs = np.asarray(ds.particles.images.read(np.arange(N)))
    return ds.particles, imgs


def _parts(base, images=None, **meta) -> Particles:
    P, imgs = base
    m = P.meta.copy()
    for k, v in meta.items():
        m[k] = v
    return Particles(m, ArrayImageSource(imgs if images is None else images))


def _mask():
    return np.asarray(spherical_mask(BOX, 0.38 * BOX, 2.0)), APIX


def assert_all_finite(res, outdir=None) -> None:
    """Every array of the result and every number in every output file is finite."""
    for name in ("posteriors", "ess", "scale", "volumes", "consensus", "fsc", "consensus_fsc"):
        a = np.asarray(getattr(res, name))
        assert np.all(np.isfinite(a)), f"{name} has {int((~np.isfinite(a)).sum())} NaN/inf"
    np.testing.assert_allclose(res.posteriors.sum(1), 1.0, atol=1e-5)
    assert np.all(res.ess >= 1 - 1e-6) and np.all(res.ess <= res.n_classes + 1e-6)
    it = res.iterations
    nums = it.drop(columns=["pct_switched", "rms_change"]).select_dtypes("number")
    assert np.all(np.isfinite(nums.to_numpy(float))), "iterations has NaN/inf"
    assert np.all(np.isfinite(it["rms_change"].to_numpy(float)[1:]))
    if outdir is None:
        return
    for f in outdir.rglob("*"):
        if f.suffix == ".mrc":
            assert np.all(np.isfinite(read_mrc(f)[0])), f
        elif f.suffix == ".cs":
            arr = load_cs(f)
            for n in arr.dtype.names:
                if arr.dtype[n].kind == "f":
                    assert np.all(np.isfinite(arr[n])), (f, n)
        elif f.suffix == ".csv" and f.stat().st_size > 1:
            df = pd.read_csv(f).select_dtypes("number")
            if f.name == "iterations.csv":  # undefined before the 2nd F-EM iteration: empty cells
                df = df.drop(columns=["pct_switched", "rms_change"])
            if f.name == "class_table.csv":  # mean ESS of an empty class: an empty cell
                assert df["mean_ess"].isna().equals(df["size"] == 0), f
                df = df.drop(columns=["mean_ess"])
            assert "nan" not in f.read_text().lower(), f
            assert np.all(np.isfinite(df.to_numpy(float))), f
        elif f.suffix == ".npz" and "checkpoint" not in f.parts:
            with np.load(f) as z:
                assert all(np.all(np.isfinite(z[k])) for k in z.files), f


def _run(parts, outdir=None, n_classes=2, mask=True, **kw):
    p = cryoclass.ClassificationParams(n_classes=n_classes, **{**FAST, **kw})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an overflow/invalid is a bug here
        job = cryoclass.Classification(
            parts, p, solvent_mask=_mask() if mask else None, outdir=outdir
        )
        return job.run()


# --------------------------------------------------------------------------- E-step arithmetic
def test_responsibilities_extreme_log_likelihoods():
    ll = np.array(
        [
            [1e300, -1e300, 0.0],
            [-1e300, -1e300, -1e300],
            [1e308, 1e308, -1e308],
            [-np.inf, -np.inf, -np.inf],
            [np.nan, np.nan, np.nan],
            [np.nan, 0.0, -5.0],
            [0.0, 1e-300, -1e-300],
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for beta in (0.0, 0.5, 0.99):
            for hard in (False, True):
                lp = np.log([0.2, 0.3, 0.5])
                r, ess, h, ev = responsibilities(ll, lp, beta=beta, force_hard=hard)
                assert np.all(np.isfinite(r)) and np.all(np.isfinite(ess))
                assert np.all(np.isfinite(ev))
                np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-6)
                assert np.all((ess >= 1 - 1e-9) & (ess <= 3 + 1e-9))
                assert h[0] == 0 and h[2] in (0, 1)
    r, ess, _, _ = responsibilities(ll, np.log([0.2, 0.3, 0.5]))
    np.testing.assert_allclose(r[3], 1 / 3)  # no information → uniform, not all-zero
    np.testing.assert_allclose(r[0], [1, 0, 0])


def test_responsibilities_dead_class_prior():
    r, ess, hard, ev = responsibilities(np.zeros((4, 3)), np.array([0.0, -np.inf, -np.inf]))
    np.testing.assert_allclose(r[:, 0], 1.0)
    assert np.all(np.isfinite(ev)) and np.all(ess == 1)


# --------------------------------------------------------------------------- whole runs
def test_all_zero_images_with_a_mask_give_finite_uniform_outputs(base, tmp_path):
    res = _run(_parts(base, np.zeros_like(base[1])), tmp_path / "out")
    assert_all_finite(res, tmp_path / "out")
    np.testing.assert_allclose(res.posteriors, 0.5, atol=1e-6)


def test_all_zero_images_without_a_mask_fail_clearly(base):
    with pytest.raises(InputFileError, match="no signal"):
        _run(_parts(base, np.zeros_like(base[1])), mask=False)


def test_some_all_zero_images(base, tmp_path):
    imgs = base[1].copy()
    imgs[::5] = 0
    res = _run(_parts(base, imgs), tmp_path / "out", mask=False, per_particle_scale="optimal")
    assert_all_finite(res, tmp_path / "out")


@pytest.mark.parametrize("fsc_filter", [True, False])
def test_ctf_zero_everywhere_for_some_particles(base, tmp_path, fsc_filter):
    """A huge B-factor makes the CTF underflow to 0 on the whole disc for 20 % of particles."""
    bf = np.zeros(N)
    bf[::5] = 1e7
    res = _run(_parts(base, bfactor_A2=bf), tmp_path / "out", use_fsc_filter=fsc_filter)
    assert_all_finite(res, tmp_path / "out")


def test_ctf_zero_everywhere_for_all_particles(base, tmp_path):
    res = _run(
        _parts(base, bfactor_A2=np.full(N, 1e7)), tmp_path / "out", shrink_to_consensus=False
    )
    assert_all_finite(res, tmp_path / "out")
    np.testing.assert_allclose(res.posteriors, 0.5, atol=1e-6)


def test_zero_weight_shells(base, tmp_path):
    """CTF zero beyond the lowest shells: the outer shells get no weight at all."""
    res = _run(_parts(base, bfactor_A2=np.full(N, 3e4)), tmp_path / "out", use_fsc_filter=False)
    assert_all_finite(res, tmp_path / "out")
    res = _run(_parts(base, bfactor_A2=np.full(N, 3e4)), None, highpass_res_A=40.0)
    assert_all_finite(res)


@pytest.mark.parametrize("hard", [False, True])
def test_empty_classes(base, tmp_path, hard):
    """K = 6 on two states with re-seeding off: some classes end up (nearly) empty."""
    res = _run(base[0], tmp_path / "out", n_classes=6, force_hard=hard, min_class_size=0.0)
    assert_all_finite(res, tmp_path / "out")
    assert (res.class_table()["size"] == 0).any() or hard is False


def test_input_init_with_an_all_zero_class(base, tmp_path):
    vol = np.zeros((BOX,) * 3, np.float32)
    init = [(vol, APIX), (vol + 1e-3 * np.random.default_rng(0).normal(size=vol.shape), APIX)]
    p = cryoclass.ClassificationParams(n_classes=2, init_mode="input", **FAST)
    res = cryoclass.Classification(
        base[0], p, init_volumes=init, solvent_mask=_mask(), outdir=tmp_path / "out"
    ).run()
    assert_all_finite(res, tmp_path / "out")
