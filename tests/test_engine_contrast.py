"""Class contrast against the pooled mean (the M-step with ``shrink_to_consensus``).

Statistics are built noise-free: class ``k`` has the volume ``V_k`` and the weight ``n_k · u``
at every grid point (``u`` > 0 random, ``n_k`` its relative size), so ``num_k = n_k u G_k``
with ``G_k`` the solution-representation grid of ``V_k``. Then the contrast
``(num_k − wgt_k c) / (wgt_k + reg)`` with ``c = Σ num / Σ wgt`` is known in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoclass.core.slices import SliceGeometry, volumes_to_solution_grid
from cryoclass.engine.reconstruct import ClassStats, ConsensusPrior, _solve_volumes, reconstruct

D = 16


def _blob(c, s, amp=1.0):
    z, y, x = np.mgrid[:D, :D, :D].astype(np.float32)
    return amp * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s**2))


def _stats(vols: np.ndarray, sizes: list[float], seed: int = 0) -> tuple[ClassStats, object]:
    g = SliceGeometry(D, 2)
    K = len(vols)
    grid = volumes_to_solution_grid(vols.astype(np.float32), g)  # (Z, Y, X, K)
    u = np.random.default_rng(seed).uniform(0.5, 2.0, grid.shape[:3]).astype(np.float32)
    st = ClassStats.zeros(g, K)
    for h in (0, 1):  # each half-set holds half of every class
        w = 0.5 * u[..., None] * np.asarray(sizes, np.float32)
        st.acc[h, ..., 0] = w * grid.real
        st.acc[h, ..., 1] = w * grid.imag
        st.acc[h, ..., 2] = w
    st.mass[:] = np.asarray(sizes, np.float64)
    return st, g


@pytest.mark.parametrize("impl", ["auto", "xp"])
def test_contrast_is_the_difference_from_the_size_weighted_mean(monkeypatch, impl):
    monkeypatch.setenv("CRYOCLASS_KERNEL_IMPL", impl)
    vols = np.stack([_blob((8, 8, 8), 3.0), _blob((8, 8, 8), 3.0) + _blob((4, 8, 8), 1.5, 0.5)])
    sizes = [1.0, 3.0]
    st, g = _stats(vols, sizes)
    reg = np.full((2, g.n_shells), 1e-6, np.float32)  # ≪ the weights: unregularised
    out = _solve_volumes(st, None, reg, g, contrast=True)
    mean = (sizes[0] * vols[0] + sizes[1] * vols[1]) / sum(sizes)
    scale = np.abs(vols[1] - vols[0]).max()
    np.testing.assert_allclose(out, vols - mean[None], atol=1e-4 * scale)


@pytest.mark.parametrize("impl", ["auto", "xp"])
def test_identical_classes_of_different_sizes_have_no_contrast(monkeypatch, impl):
    """The bias the contrast removes: classes regularised towards zero differ by their sizes
    alone (a map from fewer particles is attenuated more), the contrast does not."""
    monkeypatch.setenv("CRYOCLASS_KERNEL_IMPL", impl)
    v = _blob((8, 8, 8), 3.0) + _blob((5, 9, 8), 1.5, 0.7)
    vols = np.stack([v, v, v])
    st, g = _stats(vols, [1.0, 3.0, 10.0])
    # a regulariser comparable to the smallest class's weight (low SNR)
    reg = np.full((3, g.n_shells), 1.0, np.float32)
    toward_zero = _solve_volumes(st, None, reg, g)
    spread = np.abs(toward_zero[0] - toward_zero[2]).max() / np.abs(v).max()
    assert spread > 0.2  # measured 0.35: the size difference reads as a class difference
    contrast = _solve_volumes(st, None, reg, g, contrast=True)
    assert np.abs(contrast).max() < 1e-5 * np.abs(v).max()
    # the whole M-step: every class is the consensus it was given
    mask = np.ones((D,) * 3, np.float32)
    rec = reconstruct(st, g, mask, prior=ConsensusPrior(v, local_sigma_px=1.5))
    np.testing.assert_allclose(rec.volumes, np.stack([v] * 3), atol=1e-5 * np.abs(v).max())
