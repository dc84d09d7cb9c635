"""Where does cryoclass lose accuracy against the oracle? E-steps under hybrid volumes.

Runs one default classification (``Classification`` API) on a dataset written by
``benchmarks/accuracy.py`` (its ``truth_class_*.mrc`` and ``truth_labels.csv``), matches the
classes to the true states, then scores every particle (argmax of the log-likelihood, no class
priors) under volumes that mix the run's estimates with the truth:

- the true volumes (the oracle), and with the run's per-particle scales and noise model;
- the run's volumes; the run's mean + the true differences (is it the consensus?);
- the run's differences zeroed outside the true support of the differences (is it noise where
  the classes do not differ?);
- the true differences low-passed per shell as the run's are, and with the run's remaining
  noise only outside / only inside that support.

Differences are taken from the mean of the K class maps, inside the solvent mask; the support is
the top 20 % (and 40 %) of the smoothed true difference magnitude over the mask.

Example
-------
    .venv/bin/python benchmarks/gap_to_oracle.py \\
        benchmarks/results/work/n5000_snr0.01_box64_apix3_seed0 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def _run(ddir: Path, seed: int, filter_res_A: float) -> tuple[Any, Any, np.ndarray]:
    """A default classification; returns its driver (final state), result and truth labels."""
    import pandas as pd

    import cryoclass
    import cryoclass.engine.driver as drv

    captured: dict[str, Any] = {}
    orig = drv.Driver.run

    def run(self: Any) -> Any:
        captured["driver"] = self
        yield from orig(self)

    drv.Driver.run = run  # type: ignore[method-assign]
    try:
        parts = cryoclass.read_particles(ddir / "particles.star")
        p = cryoclass.ClassificationParams(n_classes=3, filter_res_A=filter_res_A, seed=seed)
        res = cryoclass.Classification(parts, p).run()
    finally:
        drv.Driver.run = orig  # type: ignore[method-assign]
    t = pd.read_csv(ddir / "truth_labels.csv")
    truth = dict(zip(t["uid"], t["label"]))
    labels = np.array([truth[u] for u in res.assignments["uid"]])
    return captured["driver"], res, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path, help="a dataset directory of benchmarks/accuracy.py")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--filter-res", type=float, default=8.0)
    a = ap.parse_args()

    import yaml
    from scipy.optimize import linear_sum_assignment

    from cryoclass.conventions import resample_volume
    from cryoclass.core.fsc import shell_index
    from cryoclass.core.slices import loglik, volumes_to_grid
    from cryoclass.demo import adjusted_rand_index as ari
    from cryoclass.engine.local_shrink import gaussian_smooth
    from cryoclass.engine.passes import chunks
    from cryoclass.io.mrc import read_mrc

    d, res, lab = _run(a.dataset, a.seed, a.filter_res)
    st, prob = d.st, d.prob
    print(f"run ARI (with class priors) {ari(lab, res.assignments['class'].values):.4f}")
    rec = yaml.safe_load((a.dataset / "simulation.yaml").read_text())
    true = np.stack([read_mrc(a.dataset / f)[0] for f in rec["truth_class_files"].values()])
    Dc = prob.box_c
    true = np.stack([resample_volume(v.astype(np.float32), Dc) for v in true])
    true *= (prob.box / Dc) ** 3  # the problem's Fourier units (see sim.oracle.truth_grid)
    conf = np.zeros((3, 3))
    np.add.at(conf, (lab, st.hard), 1)
    rows, cols = linear_sum_assignment(-conf)
    est = st.volumes[cols[np.argsort(rows)]]  # est[j] ↔ true state j
    mask = st.solvent_mask
    w_true = (prob.geom.weight / ((prob.box**2) * float(rec["noise_sigma"]) ** 2)).astype(
        np.float32
    )
    ones = np.ones(prob.n, np.float32)

    def score(vols: np.ndarray, alpha: Any = None, wsig: Any = None, masked: bool = True) -> float:
        g = volumes_to_grid((vols * (mask if masked else 1.0)).astype(np.float32), prob.geom)
        al = st.alpha.astype(np.float32) if alpha is None else alpha
        ws = d.wsig() if wsig is None else wsig
        ll = np.empty((prob.n, 3))
        for c in chunks(np.arange(prob.n), 1024):
            A, X, C, _ = prob.take(c)
            ll[c] = loglik(g, A, X, C, al[c], ws, prob.geom)
        return ari(lab, ll.argmax(1))

    em, tm = est.mean(0), true.mean(0)
    de, dt = (est - em) * mask, (true - tm) * mask
    env = gaussian_smooth(np.abs(dt).sum(0)[None], 1.5)[0]
    support = {q: (env > np.quantile(env[mask > 0.5], q)).astype(np.float32) for q in (0.6, 0.8)}
    # per-shell transfer of the true differences into the run's, and the noise left after it
    FT, FE = np.fft.rfftn(dt, axes=(1, 2, 3)), np.fft.rfftn(de, axes=(1, 2, 3))
    sh = shell_index(Dc, np)  # (Dc, Dc, Dc//2 + 1)
    S = int(sh.max()) + 1
    filt = np.empty_like(dt)
    for k in range(3):
        num = np.bincount(sh.ravel(), (np.conj(FT[k]) * FE[k]).real.ravel(), S)
        den = np.bincount(sh.ravel(), (np.abs(FT[k]) ** 2).ravel(), S)
        transfer = (num / np.maximum(den, 1e-30))[sh]
        filt[k] = np.fft.irfftn(FT[k] * transfer, s=(Dc,) * 3, axes=(0, 1, 2))
    noise = de - filt
    out = support[0.8]
    rows_out = [
        ("true volumes, α = 1, true σ (the oracle)", score(true, ones, w_true, masked=False)),
        ("true volumes, the run's α and σ²", score(true)),
        ("the run's volumes", score(est)),
        ("the run's mean + true differences", score(em + dt)),
        ("the run's volumes, differences zeroed outside the top-40 % support",
         score(em + de * support[0.6])),
        ("the run's volumes, differences zeroed outside the top-20 % support",
         score(em + de * out)),
        ("the run's mean + true differences with the run's per-shell transfer", score(em + filt)),
        ("... + true differences + the run's noise only outside the support",
         score(em + dt + noise * (1 - out))),
        ("... + true differences + the run's noise only inside the support",
         score(em + dt + noise * out)),
    ]  # fmt: skip
    for name, v in rows_out:
        print(f"{v:.4f}  {name}")
    frac = float((noise**2 * (1 - out)).sum() / (noise**2).sum())
    print(f"noise power outside the top-20 % support: {frac:.0%}")


if __name__ == "__main__":
    main()
