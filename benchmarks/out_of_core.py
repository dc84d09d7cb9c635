"""Out-of-core benchmark: classify a large simulated dataset streamed from the particle cache.

Rendering 10⁶ pseudo-atomic projections would take an hour on two cores, so the dataset is built
from a pool: ``--pool`` particles are simulated noiselessly (poses, CTF, shifts, labels from the
simulator), and the stack of ``--n`` particles repeats that pool (particle ``i`` shows pool image
``i mod pool``) with **independent** Gaussian noise per particle at the requested SNR and unique
uids. The images go straight into one ``.mrcs`` (written in chunks, never all in memory) with a
RELION star file. Then ``cryoclass classify`` runs in a child process under ``/usr/bin/time -v``
with ``--cache-dir`` (first run: preprocess into the cache; ``--rerun``: a second run reusing it),
and the peak RSS and wall time are recorded (``--record`` appends to ``benchmarks/RESULTS.md``).

Usage::

    .venv/bin/python benchmarks/out_of_core.py --n 1000000 --workdir /tmp/ooc --record
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_dataset(workdir: Path, n: int, pool: int, box: int, apix: float, snr: float) -> Path:
    """Write ``particles.mrcs`` + ``particles.star`` (see module docstring); returns the star."""
    import mrcfile

    from cryoclass import sim
    from cryoclass.io.particles import MrcsImageSource, Particles
    from cryoclass.io.star import write_star

    star = workdir / "particles.star"
    if star.exists():
        return star
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = sim.simulate(n_particles=pool, box=box, pixel_size_A=apix, snr=None, seed=0)
    sigma = float(np.sqrt(ds.signal_variance / snr))
    clean = ds.particles.images.read(np.arange(pool))
    mrcs = workdir / "particles.mrcs"
    tmp = workdir / "particles.mrcs.tmp"
    with mrcfile.new_mmap(str(tmp), shape=(n, box, box), mrc_mode=2, overwrite=True) as m:
        m.voxel_size = apix
        m.flush()
    # fill the data block with plain writes (no memory map of the whole file)
    with mrcfile.open(str(tmp), header_only=True) as m:
        offset = int(m.header.nbytes + m.extended_header.nbytes)
    with open(tmp, "r+b") as f:
        f.seek(offset)
        step = 16384
        for s in range(0, n, step):
            e = min(s + step, n)
            rng = np.random.default_rng([1, s])
            block = clean[np.arange(s, e) % pool].copy()
            block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(sigma)
            f.write(np.ascontiguousarray(block, np.float32).tobytes())
    os.replace(tmp, mrcs)
    rep = np.arange(n) % pool
    meta = ds.particles.meta.iloc[rep].reset_index(drop=True)
    meta["uid"] = np.arange(1, n + 1, dtype=np.int64)
    meta["half_set"] = np.arange(n) % 2
    meta["image_path"] = str(mrcs)
    meta["image_index"] = np.arange(n, dtype=np.int64)
    src = MrcsImageSource(np.full(n, str(mrcs)), np.arange(n))
    names = [f"{i + 1:06d}@particles.mrcs" for i in range(n)]
    write_star(star, Particles(meta, src), image_names=names)
    np.save(workdir / "labels.npy", ds.labels[rep])
    (workdir / "dataset.json").write_text(
        json.dumps(
            {"n": n, "pool": pool, "box": box, "apix": apix, "snr": snr, "sigma": sigma,
             "build_s": round(time.perf_counter() - t0, 1)}
        )
    )  # fmt: skip
    return star


_CHILD = """
import sys
import cryoclass
from cryoclass.cli import ProgressPrinter

star, out, cache, K, res, oem, fem, bpc = sys.argv[1:9]
params = cryoclass.ClassificationParams(
    n_classes=int(K), filter_res_A=float(res), cache_dir=cache, oem_epochs=int(oem),
    max_fem_iters=int(fem), oem_batch_size_per_class=int(bpc), init_mode="simple",
    init_restarts=1, init_lowres_iters=0,
)
job = cryoclass.Classification(cryoclass.read_particles(star), params, outdir=out, overwrite=True)
job.subscribe(ProgressPrinter(bar=False))
job.run()
"""


def run_classify(star: Path, out: Path, cache: Path, args: argparse.Namespace) -> dict:
    """``Classification`` (as ``cryoclass classify`` does, plus ``init_restarts=1,
    init_lowres_iters=0``, which the CLI does not expose) in a child under ``time -v``."""
    cmd = [
        "/usr/bin/time", "-v", sys.executable, "-c", _CHILD, str(star), str(out), str(cache),
        str(args.K), str(args.filter_res), str(args.oem_epochs), str(args.fem),
        str(args.batch_per_class),
    ]  # fmt: skip
    env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads), OMP_NUM_THREADS="1")
    load = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=star.parent)
    wall = time.perf_counter() - t0
    err = p.stderr
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    sys.stderr.write(err[-3000:])
    if p.returncode != 0:
        raise SystemExit(f"classify failed ({p.returncode})")
    times = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) .*\((\d+\.\d) s", err, re.M)
    }
    return {
        "wall_s": round(wall, 1),
        "peak_rss_GB": round(rss_kb / 1e6, 3),
        "load_before": [round(x, 2) for x in load],
        "stderr_tail": err[-2500:],
        "iter_lines": [ln for ln in err.splitlines() if ln.strip().startswith(("OEM", "FEM"))],
        "times": times,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--pool", type=int, default=20_000)
    ap.add_argument("--box", type=int, default=48)
    ap.add_argument("--apix", type=float, default=4.0)
    ap.add_argument("--snr", type=float, default=0.05)
    ap.add_argument("-K", type=int, default=3)
    ap.add_argument("--filter-res", type=float, default=8.0)
    ap.add_argument("--oem-epochs", type=int, default=1)
    ap.add_argument("--fem", type=int, default=2)
    ap.add_argument("--batch-per-class", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cryoclass_ooc"))
    ap.add_argument("--rerun", action="store_true", help="run twice (second reuses the cache)")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--note", default="", help="extra line for the RESULTS.md entry")
    args = ap.parse_args()
    t0 = time.perf_counter()
    star = make_dataset(args.workdir, args.n, args.pool, args.box, args.apix, args.snr)
    print(f"dataset ready in {time.perf_counter() - t0:.0f} s", flush=True)
    runs = []
    for r in range(2 if args.rerun else 1):
        existed = any((args.workdir / "cache").glob("particles-*/manifest.json"))
        res = run_classify(star, args.workdir / f"out{r}", args.workdir / "cache", args)
        res["cache"] = "reused" if existed else "built"
        print(json.dumps({k: v for k, v in res.items() if k != "stderr_tail"}), flush=True)
        runs.append(res)
    from cryoclass.demo import adjusted_rand_index

    labels = np.load(args.workdir / "labels.npy")
    hard = _read_hard(args.workdir / "out0")
    ari = adjusted_rand_index(labels, hard) if hard is not None else float("nan")
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "ari": ari}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "out_of_core.json").write_text(json.dumps(summary, indent=1))
    if args.record:
        record(args, runs, ari)


def _read_hard(out: Path) -> np.ndarray | None:
    import starfile

    stars = sorted(out.glob("*particles*.star"))
    if not stars:
        return None
    tab = starfile.read(stars[0])
    df = tab["particles"] if isinstance(tab, dict) else tab
    return df["rlnClassNumber"].to_numpy() - 1


def record(args: argparse.Namespace, runs: list[dict], ari: float) -> None:
    ds = json.loads((args.workdir / "dataset.json").read_text())
    Dc = int(2 * np.ceil(args.box * args.apix / args.filter_res))
    lines = [
        "",
        "## Out of core: 10⁶ particles streamed from the particle cache",
        "",
        f"Generated by `benchmarks/out_of_core.py` on {datetime.datetime.now().isoformat()} "
        f"({os.cpu_count()} cores, {platform.platform()}; load average before each run below).",
        "",
        f"- Data: N = {ds['n']:,} particles, box {ds['box']} px at {ds['apix']} Å, SNR "
        f"{ds['snr']}: {ds['pool']:,} noiseless simulator projections (3 states) repeated "
        "with independent noise per particle, unique uids, one `.mrcs` "
        f"({ds['n'] * ds['box'] ** 2 * 4 / 1e9:.1f} GB). Built in {ds['build_s']} s.",
        f"- Job: `Classification` as `cryoclass classify -K {args.K} --filter-res "
        f"{args.filter_res} --cache-dir` (classification box {Dc}), init simple with "
        f"`init_restarts=1, init_lowres_iters=0`, {args.oem_epochs} O-EM epoch "
        f"(batch {args.batch_per_class}×K), {args.fem} F-EM iterations, "
        f"`NUMBA_NUM_THREADS={args.threads}`; outputs (.star/.cs/.mrc) written.",
        f"- ARI against the truth: {ari:.3f}.",
        *([f"- {args.note}"] if args.note else []),
        "",
        "| run | cache | wall (s) | peak RSS (GB) | load avg before |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs):
        lines.append(
            f"| {i + 1} | {r['cache']} | {r['wall_s']} | "
            f"**{r['peak_rss_GB']}** | {r['load_before'][0]} |"
        )
    lines += ["", "Per iteration (first run):", "", "```", *runs[0]["iter_lines"], "```", ""]
    with open(HERE / "RESULTS.md", "a") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
