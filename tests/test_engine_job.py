"""The classification job: parameters do what they say, events, outputs, errors, resume."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cryoclass
from cryoclass import sim
from cryoclass.core.symmetry import symmetrize_volume, symmetry_operators
from cryoclass.demo import adjusted_rand_index
from cryoclass.errors import InputFileError, ParameterError
from cryoclass.events import IterationFinished, JobCancelledEvent, JobFinished
from cryoclass.io.mrc import write_mrc

FAST = dict(oem_epochs=2, max_fem_iters=4, oem_batch_size_per_class=150)


@pytest.fixture(scope="module")
def ds():
    return sim.simulate(
        n_particles=450,
        box=32,
        pixel_size_A=6.0,
        snr=1.0,
        states=("closed", "open", "ligand"),
        seed=11,
    )


@pytest.fixture(scope="module")
def base_result(ds):
    # no RMS check: the flow-matrix test needs at least two F-EM iterations
    p = cryoclass.ClassificationParams(
        n_classes=3, filter_res_A=14.0, seed=3, rms_change_check=False, **FAST
    )
    events = []
    res = cryoclass.Classification(ds.particles, p).run([events.append])
    return res, events


def test_classifies_simulated_states(ds, base_result):
    res, _ = base_result
    assert adjusted_rand_index(ds.labels, res.hard) > 0.9


def test_events_and_diagnostics(ds, base_result):
    res, events = base_result
    its = [e for e in events if isinstance(e, IterationFinished)]
    assert [e.phase for e in its][:1] == ["oem"] and its[-1].phase == "fem"
    fem = [e for e in its if e.phase == "fem"]
    assert fem[0].flow_matrix is None and fem[1].flow_matrix.sum() == len(ds.labels)
    assert fem[-1].ess.shape == (len(ds.labels),) and np.all(fem[-1].ess >= 1 - 1e-6)
    assert np.isclose(fem[-1].class_mass.sum(), len(ds.labels))
    assert fem[-1].volumes.shape == (3, res.box_c, res.box_c, res.box_c)
    assert isinstance(events[-1], JobFinished)
    table = res.class_table()
    assert table["size"].sum() == len(ds.labels)
    assert np.allclose(res.posteriors.sum(1), 1, atol=1e-5)
    assert res.diff_slices().shape == (3, 3, res.box_c, res.box_c)
    assert len(res.class_flow()) == len(fem) - 1
    # one clock: every event's time_s counts from the job's start, so they never go back
    # (the EM phases once counted from after the preprocessing)
    times = [e.time_s for e in events]
    assert all(b >= a for a, b in zip(times, times[1:])), times
    assert times[0] < 0.5 * times[-1]


def test_force_hard_gives_one_hot_posteriors(ds):
    p = cryoclass.ClassificationParams(n_classes=3, filter_res_A=14.0, force_hard=True, **FAST)
    res = cryoclass.Classification(ds.particles, p).run()
    assert set(np.unique(res.posteriors)) <= {0.0, 1.0}
    assert np.all(res.ess == 1.0)


def test_scale_modes(ds):
    p = cryoclass.ClassificationParams(
        n_classes=2, filter_res_A=14.0, oem_epochs=1, max_fem_iters=1, per_particle_scale="none"
    )
    assert np.all(cryoclass.Classification(ds.particles, p).run().scale == 1.0)
    parts = ds.particles.subset(np.arange(len(ds.labels)))
    parts.meta["scale"] = np.linspace(0.5, 1.5, len(parts))
    res = cryoclass.Classification(parts, p.replace(per_particle_scale="input")).run()
    assert np.allclose(res.scale, parts.meta["scale"].to_numpy(), rtol=1e-6)
    res = cryoclass.Classification(parts, p.replace(per_particle_scale="optimal")).run()
    assert res.scale.std() > 0 and 0.2 <= res.scale.min() and res.scale.max() <= 5.0


def test_input_volumes_are_used_in_their_order(ds):
    """Truth volumes as input init: class k must be true state k (no label permutation)."""
    vols = [(v, ds.pixel_size_A) for v in ds.volumes]
    p = cryoclass.ClassificationParams(n_classes=3, filter_res_A=14.0, init_mode="input", **FAST)
    res = cryoclass.Classification(ds.particles, p, init_volumes=vols).run()
    assert np.mean(res.hard == ds.labels) > 0.95
    with pytest.raises(ParameterError, match="counts must be equal"):
        cryoclass.Classification(ds.particles, p, init_volumes=vols[:2])


def test_symmetry_makes_symmetric_classes(ds):
    p = cryoclass.ClassificationParams(
        n_classes=2, filter_res_A=14.0, symmetry="C4", oem_epochs=1, max_fem_iters=1
    )
    res = cryoclass.Classification(ds.particles, p).run()
    ops = symmetry_operators("C4")
    for v in res.volumes:
        for R in ops[1:]:
            rotated = symmetrize_volume(v, np.stack([R]))
            assert np.corrcoef(rotated.ravel(), v.ravel())[0, 1] > 0.99


def _focus_mask(closed: np.ndarray, other: np.ndarray, inside: bool) -> np.ndarray:
    """A mask around (or away from) where ``other`` differs from ``closed``."""
    from scipy.ndimage import binary_dilation

    diff = np.abs(other - closed)
    near = binary_dilation(diff > 0.3 * diff.max(), iterations=3)
    return (near if inside else ~near).astype(np.float32)


def test_focus_mask_restricts_classification():
    """Two states differing only by the ligand: focusing on the ligand separates them;
    focusing everywhere except the ligand cannot."""
    d2 = sim.simulate(
        n_particles=300, box=32, pixel_size_A=6.0, snr=2.0, states=("closed", "ligand"), seed=5
    )
    p = cryoclass.ClassificationParams(n_classes=2, filter_res_A=13.0, **FAST)
    aris = {}
    for inside in (True, False):
        mask = _focus_mask(d2.volumes[0], d2.volumes[1], inside)
        res = cryoclass.Classification(d2.particles, p, focus_mask=(mask, d2.pixel_size_A)).run()
        aris[inside] = adjusted_rand_index(d2.labels, res.hard)
    assert aris[True] > 0.8
    assert aris[False] < 0.3


def test_same_seed_same_result(ds):
    p = cryoclass.ClassificationParams(
        n_classes=3, filter_res_A=14.0, seed=7, oem_epochs=1, max_fem_iters=2
    )
    a = cryoclass.Classification(ds.particles, p).run()
    b = cryoclass.Classification(ds.particles, p).run()
    np.testing.assert_array_equal(a.posteriors, b.posteriors)
    np.testing.assert_array_equal(a.volumes, b.volumes)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(n_classes=1000), "only 450 particles"),
        (dict(filter_res_A=5.0), "finer than Nyquist"),
        (dict(filter_res_A=500.0), "coarser than half the box"),
        (dict(n_classes=0), "must be ≥ 1"),
        (dict(reorder_by_size=True, output_every_fem=True), "must be off"),
    ],
)
def test_bad_parameters_are_named(ds, kw, match):
    base = dict(n_classes=2, filter_res_A=14.0)
    base.update(kw)
    with pytest.raises(ParameterError, match=match):
        cryoclass.Classification(ds.particles, **base)


def test_mask_with_wrong_box_is_refused(ds, tmp_path):
    path = tmp_path / "m.mrc"
    write_mrc(path, np.ones((40, 40, 40), np.float32), ds.pixel_size_A)
    with pytest.raises(InputFileError, match="m.mrc"):
        cryoclass.Classification(
            ds.particles, n_classes=2, filter_res_A=14.0, solvent_mask=str(path)
        )


def test_unwritable_outdir(ds, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # running as root: permissions do not bind
        target = Path("/proc/cryoclass_out")
    else:
        target = ro / "out"
    with pytest.raises(InputFileError, match="not writable"):
        cryoclass.Classification(ds.particles, n_classes=2, filter_res_A=14.0, outdir=target)


def test_outputs_written_and_readable(ds, tmp_path):
    p = cryoclass.ClassificationParams(
        n_classes=3, filter_res_A=14.0, oem_epochs=1, max_fem_iters=2
    )
    res = cryoclass.Classification(ds.particles, p, outdir=tmp_path / "o").run()
    o = tmp_path / "o"
    for name in [
        "particles.star",
        "particles.cs",
        "volumes.zip",
        "consensus.mrc",
        "mask_solvent.mrc",
        "mask_focus.mrc",
        "iterations.csv",
        "params.yaml",
        "run_model.star",
        "run_data.star",
        "class_00.mrc",
        "class_02.star",
        "class_01.cs",
        "diagnostics/fsc.csv",
        "diagnostics/class_flow_edges.csv",
        "diagnostics/ess_histogram.csv",
    ]:
        assert (o / name).exists(), name
    back = cryoclass.read_particles(o / "particles.star")
    star_class = back.original["rlnClassNumber"].to_numpy()
    np.testing.assert_array_equal(star_class, res.hard + 1)
    cs = np.load(o / "particles.cs")
    np.testing.assert_array_equal(cs["alignments3D/class"], res.hard)
    np.testing.assert_allclose(cs["alignments_class3D_1/class_posterior"], res.posteriors[:, 1])
    sizes = [len(cryoclass.read_particles(o / f"class_{k:02d}.star")) for k in range(3)]
    assert sizes == list(np.bincount(res.hard, minlength=3))
    it = pd.read_csv(o / "iterations.csv")
    assert {"phase", "pct_switched", "rms_change", "mean_ess", "mass_0"} <= set(it.columns)
    with pytest.raises(InputFileError, match="already holds"):
        cryoclass.Classification(ds.particles, p, outdir=o)


def test_resume_after_interruption_gives_the_same_result(ds, tmp_path):
    p = cryoclass.ClassificationParams(n_classes=3, filter_res_A=14.0, seed=2, **FAST)
    ref = cryoclass.Classification(ds.particles, p).run()
    job = cryoclass.Classification(ds.particles, p, outdir=tmp_path / "r")
    for _ in range(6):  # preprocess, consensus, init, a few O-EM iterations... then "killed"
        job.step()
    assert not job.done()
    res = cryoclass.Classification(ds.particles, p, outdir=tmp_path / "r", resume=True).run()
    np.testing.assert_allclose(res.posteriors, ref.posteriors, atol=1e-6)
    with pytest.raises(InputFileError, match="other parameters"):
        cryoclass.Classification(
            ds.particles, p.replace(seed=9), outdir=tmp_path / "r", resume=True
        ).run()


def test_background_run_can_be_cancelled_twice(ds):
    p = cryoclass.ClassificationParams(
        n_classes=3,
        filter_res_A=14.0,
        max_fem_iters=50,
        convergence_pct=0.0,
        rms_change_check=False,
    )
    job = cryoclass.Classification(ds.particles, p)
    seen = threading.Event()
    events = []

    def cb(e):
        events.append(e)
        if isinstance(e, IterationFinished):
            seen.set()

    job.start([cb])
    assert seen.wait(120)
    job.cancel()
    job.cancel()
    assert job.wait(60)
    assert any(isinstance(e, JobCancelledEvent) for e in events)
    assert job.result is None and job.done()
    assert not any(t.name == "cryoclass-job" for t in threading.enumerate())


def test_cli_bad_input_is_one_clear_line(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cryoclass.cli",
            "classify",
            str(tmp_path / "missing.star"),
            "-K",
            "2",
            "--filter-res",
            "8",
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "missing.star" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_output_every_fem_and_reorder_by_size(ds, tmp_path):
    p = cryoclass.ClassificationParams(
        n_classes=3,
        filter_res_A=14.0,
        oem_epochs=1,
        max_fem_iters=2,
        convergence_pct=0.0,
        rms_change_check=False,
        output_every_fem=True,
    )
    cryoclass.Classification(ds.particles, p, outdir=tmp_path / "e").run()
    for it in (1, 2):
        d = tmp_path / "e" / f"fem_iter_{it:03d}"
        assert (d / "particles.star").exists() and (d / "class_02.mrc").exists()
    assert not (tmp_path / "e" / "fem_iter_000").exists()  # the O-EM hand-over is not an F-EM it
    res = cryoclass.Classification(
        ds.particles, p.replace(output_every_fem=False, reorder_by_size=True)
    ).run()
    sizes = res.posteriors.sum(0)
    assert np.all(np.diff(sizes) <= 1e-6)


def test_auto_tuned_class_similarity_hits_the_target_ess(ds):
    """β is tuned on the first O-EM batch so that the mean class ESS ≈ 0.5·K there (a target
    this confident, SNR 1 data can reach below the β cap of 0.99)."""
    p = cryoclass.ClassificationParams(
        n_classes=3,
        filter_res_A=14.0,
        oem_epochs=1,
        max_fem_iters=1,
        auto_tune_class_similarity=True,
        target_class_ess_fraction=0.5,
        class_similarity_anneal_start=5,
    )
    events = []
    cryoclass.Classification(ds.particles, p).run([events.append])
    first = next(e for e in events if isinstance(e, IterationFinished))
    assert first.beta != p.class_similarity
    assert abs(first.mean_ess - 0.5 * 3) < 0.25


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_integer_parameter_is_a_parameter_error(value):
    """Found by hypothesis: chunk_size=inf raised OverflowError from int(inf)."""
    with pytest.raises(ParameterError, match="finite"):
        cryoclass.ClassificationParams(filter_res_A=8.0, chunk_size=value)


def test_oem_only_assigns_every_particle_with_the_final_volumes(ds):
    """max_fem_iters = 0: the result comes from O-EM alone (it crashed writing results); the
    posteriors are one E-step under the final O-EM volumes — the same as the first F-EM
    iteration's E-step of an otherwise identical run."""
    kw = dict(n_classes=3, filter_res_A=14.0, seed=3, oem_epochs=2, oem_batch_size_per_class=150)
    oem_only = cryoclass.Classification(
        ds.particles, cryoclass.ClassificationParams(max_fem_iters=0, **kw)
    ).run()
    events: list = []
    cryoclass.Classification(
        ds.particles, cryoclass.ClassificationParams(max_fem_iters=1, **kw)
    ).run([events.append])
    fem = [e for e in events if isinstance(e, IterationFinished) and e.phase == "fem"]
    assert oem_only.posteriors.shape == (len(ds.labels), 3)
    assert np.allclose(oem_only.posteriors.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(oem_only.hard, fem[0].hard_class)
    np.testing.assert_allclose(oem_only.ess, fem[0].ess, rtol=1e-6)
    assert adjusted_rand_index(ds.labels, oem_only.hard) > 0.9
    assert "max_fem_iters = 0" in oem_only.reason
