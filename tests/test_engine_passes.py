"""Tests of cryoclass.engine.passes: the view-ordered processing of the in-memory passes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoclass import sim
from cryoclass.core.slices import volumes_to_grid
from cryoclass.engine import passes
from cryoclass.engine.problem import build_problem
from cryoclass.engine.reconstruct import ClassStats


def _plane_angles(A: np.ndarray) -> np.ndarray:
    """Angles (rad) between the slice planes of consecutive rotations (normals up to sign)."""
    n = A[:, 2, :]
    c = np.abs(np.sum(n[1:] * n[:-1], axis=1))
    return np.arccos(np.clip(c, 0.0, 1.0))


def test_view_order_is_a_permutation_that_groups_slice_planes():
    A = Rotation.random(4000, random_state=3).as_matrix()
    o = passes.view_order(A)
    assert np.array_equal(np.sort(o), np.arange(4000))
    # random order: consecutive planes ~1 rad apart; ordered: ~ the band width (≈ 0.05 rad)
    assert np.mean(_plane_angles(A)) > 0.8
    assert np.mean(_plane_angles(A[o])) < 0.1
    assert passes.view_order(A[:1]).tolist() == [0]


@pytest.fixture(scope="module")
def setup():
    ds = sim.simulate(n_particles=400, box=32, pixel_size_A=6.0, snr=0.5, seed=2)
    prob = build_problem(ds.particles, 14.0)
    rng = np.random.default_rng(0)
    D = prob.box_c
    vols = rng.standard_normal((3, D, D, D)).astype(np.float32)
    grid = volumes_to_grid(vols, prob.geom)
    g = prob.geom
    wsig = (g.weight / 10.0).astype(np.float32)
    alpha = np.ones(prob.n, np.float32)
    return prob, grid, wsig, alpha


def _pass(setup, idx, reorder, monkeypatch):
    prob, grid, wsig, alpha = setup
    if not reorder:
        monkeypatch.setattr(passes, "_processing_order", lambda prob, idx: None)
    stats = ClassStats.zeros(prob.geom, 3)
    res = passes.em_pass(
        prob, idx, grid, np.log(np.full(3, 1 / 3)), wsig, alpha, beta=0.2, force_hard=False,
        stats=stats, chunk_size=64,
    )  # fmt: skip
    return res, stats


def test_em_pass_outputs_follow_the_callers_order(setup, monkeypatch):
    prob = setup[0]
    assert passes._processing_order(prob, np.arange(prob.n)) is not None  # in memory: reordered
    idx = np.sort(np.random.default_rng(1).choice(prob.n, 150, replace=False))
    full, s_full = _pass(setup, np.arange(prob.n), True, monkeypatch)
    sub, _ = _pass(setup, idx, True, monkeypatch)
    # per-particle outputs do not depend on the order particles were visited in
    np.testing.assert_array_equal(sub.idx, idx)
    np.testing.assert_array_equal(sub.ll, full.ll[idx])
    np.testing.assert_array_equal(sub.r, full.r[idx])
    np.testing.assert_array_equal(sub.hard, full.hard[idx])
    # statistics: the same sums as in file order, to float32 rounding
    plain, s_plain = _pass(setup, np.arange(prob.n), False, monkeypatch)
    np.testing.assert_array_equal(plain.ll, full.ll)
    scale = np.abs(s_plain.acc).max()
    np.testing.assert_allclose(s_full.acc, s_plain.acc, atol=1e-5 * scale)
    np.testing.assert_allclose(s_full.mass, s_plain.mass, rtol=1e-10)


@pytest.mark.parametrize("reorder", [True, False])
def test_known_log_likelihoods_stand_in_for_the_gather(setup, monkeypatch, reorder):
    """``ll_known`` (an earlier pass's log-likelihoods of the same particles, in the caller's
    order) gives the same pass, bit for bit, without calling the log-likelihood kernel."""
    prob, grid, wsig, alpha = setup
    if not reorder:
        monkeypatch.setattr(passes, "_processing_order", lambda prob, idx: None)
    idx = np.sort(np.random.default_rng(3).choice(prob.n, 170, replace=False))
    kw = dict(beta=0.3, force_hard=False, chunk_size=64)
    lp = np.log(np.array([0.2, 0.5, 0.3]))
    first = passes.em_pass(prob, idx, grid, lp, wsig, alpha, stats=None, **kw)
    s_ref, s_known = ClassStats.zeros(prob.geom, 3), ClassStats.zeros(prob.geom, 3)
    ref = passes.em_pass(prob, idx, grid, lp, wsig, alpha, stats=s_ref, **kw)

    def no_gather(*args, **kwargs):
        raise AssertionError("the log-likelihoods were known")

    monkeypatch.setattr(passes, "loglik", no_gather)
    got = passes.em_pass(prob, idx, grid, lp, wsig, alpha, stats=s_known, ll_known=first.ll, **kw)
    for name in ("idx", "r", "ll", "ess", "hard", "log_evidence"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
    np.testing.assert_array_equal(s_known.acc, s_ref.acc)
    np.testing.assert_array_equal(s_known.mass, s_ref.mass)


def _particle_ordered(prob):
    """The same problem with its rows in particle order (no stored order)."""
    import dataclasses

    from cryoclass.engine.store import ArrayStore

    return dataclasses.replace(prob, store=ArrayStore(prob.store.X, prob.store.C))


def test_stored_viewing_order_changes_no_soft_pass(setup):
    """An in-memory problem keeps its rows in viewing-direction order: a soft pass over all
    particles visits them in the same order as one gathering rows from particle order, so every
    output and every statistic is the same, bit for bit."""
    prob, grid, wsig, alpha = setup
    assert prob.store.order is not None
    plain = _particle_ordered(prob)
    outs = []
    for p in (prob, plain):
        stats = ClassStats.zeros(p.geom, 3)
        res = passes.em_pass(
            p, np.arange(p.n), grid, np.log(np.full(3, 1 / 3)), wsig, alpha, beta=0.2,
            force_hard=False, stats=stats, chunk_size=64,
        )  # fmt: skip
        outs.append((res, stats))
    (a, sa), (b, sb) = outs
    for f in ("r", "ll", "ess", "hard", "log_evidence"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(sa.acc, sb.acc)


def test_hard_and_power_passes_read_in_stored_order(setup):
    """One-hot and power passes read the rows where they are stored: the same sums as in
    particle order, to float rounding (float32 accumulators; power in float64)."""
    prob, grid, wsig, alpha = setup
    plain = _particle_ordered(prob)
    labels = np.arange(prob.n) % 3
    s = []
    for p in (prob, plain):
        st = ClassStats.zeros(p.geom, 3)
        passes.hard_pass(p, np.arange(p.n), labels, st, wsig, alpha, chunk_size=64)
        s.append(st)
    np.testing.assert_allclose(s[0].acc, s[1].acc, atol=1e-5 * np.abs(s[1].acc).max())
    np.testing.assert_array_equal(s[0].mass, s[1].mass)
    np.testing.assert_allclose(
        passes.power_pass(prob, chunk_size=64), passes.power_pass(plain, chunk_size=64), rtol=1e-6
    )
