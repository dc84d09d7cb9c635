"""Kernel benchmark: particle·class evaluations per second of the fused E-step and E+M.

Random class volumes and particles at classification box ``Dc`` (default 64, pad 2, K = 10);
times ``loglik`` (E-step) and ``loglik`` + ``backproject_weighted`` (E+M) over a batch after one
warm-up call (JIT excluded, reported separately), and a gather-only roofline: the same number of
trilinear reads of K contiguous values with no arithmetic — the machine's gather limit for this
access pattern. Results are printed and, with ``--record``, appended to ``benchmarks/RESULTS.md``.

Usage::

    .venv/bin/python benchmarks/kernels.py --box 64 -K 10 -n 4000 --record
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numba as nb
import numpy as np
from scipy.spatial.transform import Rotation

from cryoclass.core.slices import (
    SliceGeometry,
    backproject_weighted,
    loglik,
    new_accumulator,
    volumes_to_grid,
)


@nb.njit(parallel=True, fastmath=True, cache=True)
def _gather_only(grid, A, kx, ky, pad, off, out):  # pragma: no cover - jit
    """Same coordinates and 8×K reads as the E-step kernel, summed without the likelihood."""
    n = A.shape[0]
    K = grid.shape[3]
    for i in nb.prange(n):
        s = np.float32(0.0)
        for m in range(kx.shape[0]):
            qx = pad * (A[i, 0, 0] * kx[m] + A[i, 1, 0] * ky[m])
            qy = pad * (A[i, 0, 1] * kx[m] + A[i, 1, 1] * ky[m])
            qz = pad * (A[i, 0, 2] * kx[m] + A[i, 1, 2] * ky[m])
            if qx < 0:
                qx, qy, qz = -qx, -qy, -qz
            x0 = int(qx)
            y0 = int(np.floor(qy)) + off
            z0 = int(np.floor(qz)) + off
            for k in range(K):
                s += (
                    grid[z0, y0, x0, k]
                    + grid[z0, y0, x0 + 1, k]
                    + grid[z0, y0 + 1, x0, k]
                    + grid[z0, y0 + 1, x0 + 1, k]
                    + grid[z0 + 1, y0, x0, k]
                    + grid[z0 + 1, y0, x0 + 1, k]
                    + grid[z0 + 1, y0 + 1, x0, k]
                    + grid[z0 + 1, y0 + 1, x0 + 1, k]
                ).real
        out[i] = s


def make_inputs(Dc: int, K: int, n: int, pad: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    geom = SliceGeometry(Dc, pad)
    grid = volumes_to_grid(rng.normal(size=(K, Dc, Dc, Dc)).astype(np.float32), geom)
    A = Rotation.random(n, random_state=seed).as_matrix().astype(np.float32)
    X = (rng.normal(size=(n, geom.M)) + 1j * rng.normal(size=(n, geom.M))).astype(np.complex64)
    C = rng.uniform(-1, 1, (n, geom.M)).astype(np.float32)
    alpha = np.ones(n, np.float32)
    wsig = geom.weight.astype(np.float32)
    r = rng.dirichlet(np.ones(K), n).astype(np.float32)
    half = rng.integers(0, 2, n)
    return geom, grid, A, X, C, alpha, wsig, r, half


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(Dc: int, K: int, n: int, pad: int, repeats: int) -> dict:
    geom, grid, A, X, C, alpha, wsig, r, half = make_inputs(Dc, K, n, pad)
    acc = new_accumulator(geom, K)
    t0 = time.perf_counter()
    loglik(grid, A[:8], X[:8], C[:8], alpha[:8], wsig, geom)
    backproject_weighted(A[:8], X[:8], C[:8], alpha[:8], wsig, r[:8], half[:8], geom, acc)
    out = np.empty(8)
    _gather_only(grid, A[:8], geom.kx, geom.ky, np.float32(pad), geom.off, out)
    jit_s = time.perf_counter() - t0
    out = np.empty(n)
    t_g = _best(
        lambda: _gather_only(grid, A, geom.kx, geom.ky, np.float32(pad), geom.off, out), repeats
    )
    t_e = _best(lambda: loglik(grid, A, X, C, alpha, wsig, geom), repeats)

    def em():
        ll = loglik(grid, A, X, C, alpha, wsig, geom)
        backproject_weighted(A, X, C, alpha, wsig, r, half, geom, acc)
        return ll

    t_em = _best(em, repeats)
    return dict(
        Dc=Dc,
        K=K,
        n=n,
        pad=pad,
        M=geom.M,
        threads=nb.get_num_threads(),
        jit_s=jit_s,
        gather_pc_per_s=n * K / t_g,
        e_pc_per_s=n * K / t_e,
        em_pc_per_s=n * K / t_em,
    )


def machine() -> str:
    cpu = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, {platform.platform()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("-K", type=int, default=10)
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("--pad", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    a = ap.parse_args()
    rows = [run(a.box, a.K, a.n, p, a.repeats) for p in a.pad]
    load = os.getloadavg()[0]
    lines = [
        f"\n### Kernels, {datetime.date.today()} — box {a.box}, K = {a.K}, n = {a.n}",
        f"Machine: {machine()}; load average at start {load:.1f}.  ",
        f"Command: `.venv/bin/python benchmarks/kernels.py --box {a.box} -K {a.K} -n {a.n} "
        f"--pad {' '.join(map(str, a.pad))}`\n",
        "| pad | disc pixels M | threads | E-step p·c/s | E+M p·c/s | gather-only p·c/s | "
        "E-step / gather | JIT s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pad']} | {r['M']} | {r['threads']} | {r['e_pc_per_s']:,.0f} | "
            f"{r['em_pc_per_s']:,.0f} | {r['gather_pc_per_s']:,.0f} | "
            f"{r['e_pc_per_s'] / r['gather_pc_per_s']:.0%} | {r['jit_s']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    if a.record:
        path = Path(__file__).with_name("RESULTS.md")
        if not path.exists():
            path.write_text("# cryoclass benchmark results\n")
        with open(path, "a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
