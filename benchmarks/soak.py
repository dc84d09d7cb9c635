"""Soak test: a long classification (K = 50, many F-EM iterations) must keep memory flat.

Records the resident set size (RSS) after every O-EM/F-EM iteration through the job's event
stream, fits a line to the F-EM part (after a warm-up) and reports the growth per iteration.
With ``--outdir`` the job also checkpoints every iteration (the realistic CLI path).

Usage
-----
``python benchmarks/soak.py [--n 3000] [--box 48] [-K 50] [--fem-iters 30] [--json out.json]``
``--append-results`` appends a "Reliability — soak" section to ``benchmarks/RESULTS.md``.

Example
-------
>>> python benchmarks/soak.py --fem-iters 30 --append-results   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def rss_mb() -> float:
    """Resident set size of this process in MB (psutil if installed, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


def soak(n: int, box: int, K: int, fem_iters: int, outdir: str | None, seed: int = 0) -> dict:
    """Run the soak job and return the RSS series and the verdict."""
    import cryoclass
    from cryoclass.events import IterationFinished
    from cryoclass.sim import simulate

    ds = simulate(n_particles=n, box=box, pixel_size_A=3.0, snr=0.1, seed=seed)
    params = cryoclass.ClassificationParams(
        n_classes=K,
        filter_res_A=9.0,
        oem_epochs=2,
        oem_batch_size_per_class=max(n // (2 * K), 10),
        init_particles_per_class=max(n // (4 * K), 10),
        pca_n_reconstructions=20,
        max_fem_iters=fem_iters,
        convergence_pct=0.0,
        rms_change_check=False,
        min_class_size=0.0,
        seed=seed,
    )
    series: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def on_event(e: Any) -> None:
        if isinstance(e, IterationFinished):
            series.append(
                dict(
                    phase=e.phase,
                    iteration=e.iteration,
                    time_s=round(time.perf_counter() - t0, 2),
                    rss_MB=round(rss_mb(), 1),
                )
            )

    gc.collect()
    rss0 = rss_mb()
    job = cryoclass.Classification(ds.particles, params, outdir=outdir, overwrite=True)
    job.run([on_event])
    fem = [s for s in series if s["phase"] == "fem"]
    warm = fem[min(5, len(fem) // 3) :]  # after caches/JIT/allocator settle
    x = np.arange(len(warm), dtype=float)
    y = np.array([s["rss_MB"] for s in warm])
    slope = float(np.polyfit(x, y, 1)[0]) if len(warm) > 2 else float("nan")
    return dict(
        n_particles=n,
        box=box,
        box_c=job.box_c,
        K=K,
        fem_iters=len(fem),
        oem_iters=len(series) - len(fem),
        checkpoints=outdir is not None,
        wall_s=round(time.perf_counter() - t0, 1),
        rss_before_job_MB=round(rss0, 1),
        rss_first_fem_MB=fem[0]["rss_MB"] if fem else None,
        rss_last_fem_MB=fem[-1]["rss_MB"] if fem else None,
        rss_max_MB=max(s["rss_MB"] for s in series),
        fem_growth_MB_per_iter=round(slope, 3),
        fem_growth_total_MB=round(float(y[-1] - y[0]), 1) if len(y) else None,
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        series=series,
    )


def verdict(r: dict, tol_MB_per_iter: float = 0.5) -> str:
    g = r["fem_growth_MB_per_iter"]
    ok = g == g and abs(g) <= tol_MB_per_iter
    word = "FLAT" if ok else "GROWING"
    return (
        f"{word}: F-EM RSS slope {g:+.3f} MB/iteration over {r['fem_iters']} iterations "
        f"(tolerance ±{tol_MB_per_iter} MB/iteration; total {r['fem_growth_total_MB']:+.1f} MB "
        "after warm-up)"
    )


def markdown(r: dict) -> str:
    rows = "\n".join(
        f"| {s['phase']} | {s['iteration'] + 1} | {s['time_s']:.1f} | {s['rss_MB']:.1f} |"
        for s in r["series"]
    )
    return f"""
## Reliability — soak (memory over a long run)

`python benchmarks/soak.py --n {r["n_particles"]} --box {r["box"]} -K {r["K"]} --fem-iters \
{r["fem_iters"]}{" --outdir" if r["checkpoints"] else ""}` — {r["machine"]}.
{r["n_particles"]} simulated particles, box {r["box"]} → classification box {r["box_c"]},
K = {r["K"]}, {r["oem_iters"]} O-EM + {r["fem_iters"]} F-EM iterations (convergence_pct 0,
RMS check off,
{"checkpoint written every iteration" if r["checkpoints"] else "no OUTDIR"}), wall {r["wall_s"]} s.
RSS before the job {r["rss_before_job_MB"]} MB, first F-EM {r["rss_first_fem_MB"]} MB, last F-EM
{r["rss_last_fem_MB"]} MB, max {r["rss_max_MB"]} MB.

**Verdict: {verdict(r)}.**

<details><summary>RSS after every iteration</summary>

| phase | iteration | time (s) | RSS (MB) |
|---|---|---|---|
{rows}

</details>
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--box", type=int, default=48)
    ap.add_argument("-K", type=int, default=50)
    ap.add_argument("--fem-iters", type=int, default=30)
    ap.add_argument("--outdir", action="store_true", help="checkpoint to a temporary OUTDIR")
    ap.add_argument("--json", help="write the full record here")
    ap.add_argument("--append-results", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = soak(a.n, a.box, a.K, a.fem_iters, str(Path(tmp) / "out") if a.outdir else None)
    print(verdict(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    if a.append_results:
        path = Path(__file__).parent / "RESULTS.md"
        with open(path, "a") as fh:  # append only: other sections belong to other benchmarks
            fh.write(markdown(r))


if __name__ == "__main__":
    main()
