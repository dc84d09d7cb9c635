"""Unequal class populations: does cryoclass find a rare state? (not part of the #4 benchmark).

Simulates the three-state protein (closed / open / closed + ligand) with the given populations,
scores the oracle (true volumes, noise and populations as priors), then runs the default
classification for each seed and each variant (``ClassificationParams`` overrides; ``truth``:
start from the true volumes) and prints the ARI against the truth, the class sizes and the
confusion matrix (rows: true states).

Example
-------
    .venv/bin/python benchmarks/populations.py --pops 0.6 0.3 0.1 --snr 0.02 \\
        --variants "{}" "{'init_lowres_iters': 0, 'init_refine_iters': 0}" "{'truth': True}"
"""

from __future__ import annotations

import argparse
import ast

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pops", type=float, nargs=3, default=[0.6, 0.3, 0.1])
    ap.add_argument("--snr", type=float, default=0.02)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--filter-res", type=float, default=8.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["{}"], help="dict literals of overrides")
    a = ap.parse_args()

    import cryoclass
    from cryoclass import sim
    from cryoclass.demo import adjusted_rand_index as ari

    ds = sim.simulate(
        n_particles=a.n, box=64, pixel_size_A=3.0, snr=a.snr, populations=a.pops,
        seed=a.data_seed,
    )  # fmt: skip
    oracle = sim.oracle_labels(ds, a.filter_res, priors=np.asarray(a.pops))
    print(f"populations {a.pops}, SNR {a.snr}, N = {a.n}: oracle ARI {ari(ds.labels, oracle):.4f}")
    truth = [(v.astype(np.float32), ds.pixel_size_A) for v in ds.volumes]
    for spec in a.variants:
        kw = ast.literal_eval(spec)
        start = kw.pop("truth", False)
        if start:
            kw["init_mode"] = "input"
        for seed in a.seeds:
            p = cryoclass.ClassificationParams(
                n_classes=3, filter_res_A=a.filter_res, seed=seed, **kw
            )
            r = cryoclass.Classification(
                ds.particles, p, init_volumes=truth if start else None
            ).run()
            conf = np.zeros((3, 3), int)
            np.add.at(conf, (ds.labels, r.hard), 1)
            print(
                f"{spec} seed {seed}: ARI {ari(ds.labels, r.hard):.4f}, sizes "
                f"{np.bincount(r.hard, minlength=3).tolist()}, confusion {conf.tolist()}"
            )


if __name__ == "__main__":
    main()
