"""GPU benchmark: the same jobs on the CPU (NumPy/Numba, every core) and the GPU (CuPy).

For each simulated setting (the accuracy benchmark's data: box 64, 3 Å/px, states closed/open/
ligand, data seed ``--data-seed``) this measures, in one process:

* the oracle's ARI (the classifier that knows the true volumes, DESIGN §7);
* per cryoclass seed, a CPU job and a GPU job with the same parameters: wall time of
  ``Classification.run()`` (the data already in memory, kernels compiled: a warm-up job on each
  device runs first), time per phase (from the job's events), ARI against the truth and as a
  fraction of the oracle's, agreement of the two devices' hard classes (after matching labels);
* the CuPy memory pool's size after each GPU job (what the job held at most, near enough: the
  pool keeps freed blocks).

``--cli`` also runs the command line once on the GPU (``cryoclass classify --device gpu``) on
the first setting written to disk, and checks its outputs. Results go to ``--out`` (JSON) and
a Markdown table on stdout. Settings past ``--budget-s`` seconds are skipped (the GPU machine
is lent for minutes).

Usage (on a machine with CuPy and an NVIDIA GPU)::

    python benchmarks/gpu.py --n 5000 20000 --snr 0.05 0.01 --seeds 0 1 --out gpu.json --cli
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from accuracy import STATES, K, adjusted_rand_index  # noqa: E402 - the same data and ARI


def ari(a: Any, b: Any) -> float:
    return round(float(adjusted_rand_index(a, b)), 4)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of particles with the same class after the best one-to-one relabelling."""
    from itertools import permutations

    best = 0.0
    for perm in permutations(range(K)):
        best = max(best, float(np.mean(np.asarray(perm)[a] == b)))
    return round(best, 4)


def machine() -> dict[str, Any]:
    import numba
    import scipy

    info: dict[str, Any] = {
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
    }
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info.update(
            cupy=cupy.__version__,
            gpu=props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
            gpu_mem_GiB=round(props["totalGlobalMem"] / 2**30, 1),
            cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
            cuda_driver=cupy.cuda.runtime.driverGetVersion(),
        )
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        info["cupy_error"] = repr(e)
    try:
        # "-dirty": the tree differs from that commit (a copied tree: say which it was)
        info["git_commit"] = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        info["git_commit"] = None
    return info


def timed_job(particles: Any, device: str, seed: int, filter_res_A: float) -> dict[str, Any]:
    """Run one job; wall time, phase times (s), hard classes and (GPU) pool size."""
    import cryoclass
    from cryoclass.events import JobFinished, PhaseStarted

    phases: list[tuple[str, float]] = []
    end = [0.0]

    def cb(ev: Any) -> None:
        if isinstance(ev, PhaseStarted):
            phases.append((ev.phase, ev.time_s))
        elif isinstance(ev, JobFinished):
            end[0] = ev.time_s

    pool = None
    if device == "gpu":
        import cupy

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
    job = cryoclass.Classification(
        particles, n_classes=K, filter_res_A=filter_res_A, seed=seed, device=device
    )
    t0 = time.perf_counter()
    res = job.run(callbacks=[cb])
    wall = time.perf_counter() - t0
    marks = phases + [("end", end[0] or wall)]
    per_phase = {p: round(max(0.0, marks[i + 1][1] - t), 3) for i, (p, t) in enumerate(marks[:-1])}
    out: dict[str, Any] = {"device": device, "seed": seed, "wall_s": round(wall, 3)}
    out["phases_s"] = per_phase
    out["hard"] = np.asarray(res.hard)
    if pool is not None:
        out["gpu_pool_MiB"] = round(pool.total_bytes() / 2**20, 1)
    return out


def run_cli_check(ds: Any, workdir: Path, filter_res_A: float, device: str) -> dict[str, Any]:
    """``cryoclass classify --device DEVICE`` on the dataset written to disk; outputs checked."""
    ddir = workdir / "cli_data"
    ds.write(ddir)
    out = workdir / "cli_out"
    cmd = [
        sys.executable, "-m", "cryoclass", "classify", str(ddir / "particles.star"),
        "-K", str(K), "--filter-res", f"{filter_res_A:g}", "-o", str(out), "--seed", "0",
        "--device", device, "--overwrite", "--quiet",
    ]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    files = sorted(f.name for f in out.iterdir()) if out.exists() else []
    res: dict[str, Any] = {"rc": p.returncode, "wall_s": round(wall, 2), "files": files}
    if p.returncode != 0:
        res["stderr_tail"] = p.stderr[-3000:]
        return res
    import pandas as pd
    import starfile

    tab = starfile.read(out / "particles.star")
    tab = tab["particles"] if isinstance(tab, dict) else tab
    truth = pd.read_csv(ddir / "truth_labels.csv")
    cls = dict(zip(tab["cryoclassUid"].astype(np.int64), tab["rlnClassNumber"].astype(int)))
    labels = np.array([cls[u] - 1 for u in truth["uid"].astype(np.int64)])
    res["ari"] = ari(truth["label"], labels)
    return res


def run_setting(a: argparse.Namespace, n: int, snr: float) -> dict[str, Any]:
    from types import SimpleNamespace

    from cryoclass import sim
    from cryoclass.sim.oracle import oracle_labels

    t0 = time.perf_counter()
    ds = sim.simulate(
        n_particles=n, box=a.box, pixel_size_A=a.apix, snr=snr, states=STATES, seed=a.data_seed
    )
    s: dict[str, Any] = {"n": n, "snr": snr, "simulate_s": round(time.perf_counter() - t0, 2)}
    truth = np.asarray(ds.labels)
    t0 = time.perf_counter()
    ods = SimpleNamespace(particles=ds.particles, volumes=ds.volumes, noise_sigma=ds.noise_sigma)
    s["oracle_ari"] = ari(truth, oracle_labels(ods, a.filter_res))
    s["oracle_s"] = round(time.perf_counter() - t0, 2)
    s["runs"] = []
    for seed in a.seeds:
        pair = {}
        for device in a.devices:
            try:
                r = timed_job(ds.particles, device, seed, a.filter_res)
            except Exception as e:  # noqa: BLE001 - recorded; the other device still runs
                import traceback

                s["runs"].append({"device": device, "seed": seed, "error": repr(e)})
                traceback.print_exc()
                continue
            r["ari"] = ari(truth, r["hard"])
            r["ari_over_oracle"] = round(r["ari"] / s["oracle_ari"], 4)
            pair[device] = r.pop("hard")
            s["runs"].append(r)
            print(json.dumps({"n": n, "snr": snr, **r}), flush=True)
        if len(pair) == 2:
            s["runs"][-1]["agreement_with_cpu"] = agreement(pair["cpu"], pair["gpu"])
    if a.cli and not a._cli_done:
        a._cli_done = True
        try:
            s["cli"] = run_cli_check(ds, Path(a.workdir), a.filter_res, a.cli_device)
        except Exception as e:  # noqa: BLE001 - recorded
            s["cli"] = {"error": repr(e)}
        print(json.dumps({"cli": s["cli"]}), flush=True)
    return s


def warm_up(a: argparse.Namespace) -> dict[str, float]:
    """Compile the kernels of each device (Numba JIT, CuPy NVRTC) on a small job."""
    from cryoclass import sim

    ds = sim.simulate(n_particles=600, box=a.box, pixel_size_A=a.apix, snr=0.05, seed=99)
    out = {}
    for device in a.devices:
        t0 = time.perf_counter()
        try:
            timed_job(ds.particles, device, 0, a.filter_res)
        except Exception as e:  # noqa: BLE001 - the setting runs will report it again
            print(f"warm-up on {device} failed: {e!r}", flush=True)
        out[device] = round(time.perf_counter() - t0, 2)
    return out


def markdown(res: dict[str, Any]) -> str:
    rows = [
        "| N | SNR | oracle ARI | device | seed | wall (s) | ARI (÷ oracle) | phases (s) | "
        "GPU pool (MiB) | agreement with CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in res["settings"]:
        for r in s["runs"]:
            if "error" in r:
                rows.append(f"| {s['n']} | {s['snr']} | | {r['device']} | {r['seed']} | "
                            f"error: {r['error'][:80]} | | | | |")  # fmt: skip
                continue
            ph = ", ".join(f"{k} {v:.2f}" for k, v in r["phases_s"].items())
            rows.append(
                f"| {s['n']} | {s['snr']} | {s['oracle_ari']:.3f} | {r['device']} | {r['seed']} "
                f"| {r['wall_s']:.2f} | {r['ari']:.3f} ({r['ari_over_oracle']:.3f}) | {ph} | "
                f"{r.get('gpu_pool_MiB', '')} | {r.get('agreement_with_cpu', '')} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[5000, 20000])
    p.add_argument("--snr", type=float, nargs="+", default=[0.05, 0.01])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--devices", nargs="+", default=["cpu", "gpu"], choices=("cpu", "gpu"))
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=3.0)
    p.add_argument("--filter-res", type=float, default=8.0)
    p.add_argument("--budget-s", type=float, default=1e9, help="skip settings after this")
    p.add_argument("--cli", action="store_true", help="also run the CLI once (first setting)")
    p.add_argument("--cli-device", default="gpu", choices=("cpu", "gpu"))
    p.add_argument("--workdir", default="/tmp/cryoclass_gpu_bench")
    p.add_argument("--out", default="gpu.json")
    a = p.parse_args(argv)
    a._cli_done = False
    from cryoclass.backend import cupy_available

    if "gpu" in a.devices and not cupy_available():
        print("no usable GPU (CuPy with an NVIDIA GPU): CPU jobs only", flush=True)
        a.devices = [d for d in a.devices if d != "gpu"]
        a.cli = a.cli and a.cli_device != "gpu"
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python", "benchmarks/gpu.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "settings": [],
    }
    print(json.dumps(res["machine"]), flush=True)
    res["warm_up_s"] = warm_up(a)
    print(json.dumps({"warm_up_s": res["warm_up_s"]}), flush=True)
    for n in a.n:
        for snr in a.snr:
            if time.perf_counter() - t_start > a.budget_s:
                res.setdefault("skipped", []).append({"n": n, "snr": snr})
                continue
            res["settings"].append(run_setting(a, n, snr))
            Path(a.out).write_text(json.dumps(res, indent=1))
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
