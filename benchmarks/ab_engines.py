"""Interleaved A/B timing of two (or more) cryoclass engines on one dataset, phase by phase.

The machine these benchmarks run on drifts by 30–50 % within minutes, so a speed change is only
seen when the versions run alternately, many times. Each engine is a ``git archive`` export
(``accuracy.export_engine``, kept with its warm Numba cache) run in a fresh child process from a
scratch directory. From the repository root, ``PYTHONPATH=<export> python -m cryoclass…`` would
import the working tree instead: the current directory comes first on ``sys.path``. The child
checks which code it imported and fails if it is not the export.

Each child reads the particles, runs the job in-process (no outputs written) and reports the wall
time of every phase (from the job's ``PhaseStarted`` events), the job's total and, when the
dataset has ``truth_labels.csv``, the ARI. Pairs alternate the order (A B, B A, …) so a drift
within a pair does not favour one engine.

Example
-------
::

    .venv/bin/python benchmarks/ab_engines.py 4eec583 HEAD --pairs 3 \\
        --data benchmarks/results/work/n5000_snr0.01_box64_apix3_seed0
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from accuracy import child_env, export_engine  # noqa: E402

#: what each child runs: phases timed by the job's own events
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import cryoclass
from pathlib import Path
if not Path(cryoclass.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()):
    sys.exit(f"imported {cryoclass.__file__}, not the engine in {sys.argv[1]}")
from cryoclass.events import PhaseStarted
ds, K, res, seed = Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
parts = cryoclass.read_particles(ds / "particles.star")
t1 = time.perf_counter()
marks = []
def mark(ev):
    if isinstance(ev, PhaseStarted):
        marks.append((ev.phase, time.perf_counter()))
p = cryoclass.ClassificationParams(n_classes=K, filter_res_A=res, seed=seed)
job = cryoclass.Classification(parts, p)
t2 = time.perf_counter()
out = job.run(callbacks=[mark])
t3 = time.perf_counter()
phases, prev, name = {}, t2, "setup"
for ph, t in marks:
    phases[name] = phases.get(name, 0.0) + t - prev
    prev, name = t, ph
phases[name] = phases.get(name, 0.0) + t3 - prev
row = {"import": t1 - t0, "job": t3 - t2, **phases}
truth = ds / "truth_labels.csv"
if truth.exists():
    import pandas as pd
    from cryoclass.demo import adjusted_rand_index
    lab = pd.read_csv(truth)["label"].to_numpy()
    row["ari"] = adjusted_rand_index(lab, out.assignments["class"].to_numpy())
print("AB " + json.dumps(row))
"""


def run_child(engine: Path, a: argparse.Namespace, scratch: str) -> dict[str, Any]:
    """One timed job of ``engine`` in a fresh process; its phase times (s) and ARI."""
    env = child_env(a.threads)
    env["PYTHONPATH"] = str(engine)
    cmd = [sys.executable, "-c", CHILD, str(engine), str(Path(a.data).resolve()), str(a.K),
           str(a.filter_res), str(a.seed)]  # fmt: skip
    p = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("AB ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{engine.name} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return json.loads(lines[-1][3:])


def _line(name: str, r: dict[str, Any], keys: list[str]) -> str:
    ari = f"{r['ari']:.4f}" if "ari" in r else "–"
    return f"| {name} | " + " | ".join(f"{r.get(k, 0.0):.2f}" for k in keys) + f" | {ari} |"


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: one line per run, then the median per engine."""
    keys = [k for k in rows[0][1] if k != "ari" and max(r.get(k, 0.0) for _, r in rows) >= 0.005]
    out = ["| engine | " + " | ".join(keys) + " | ARI |", "|" + "---|" * (len(keys) + 2)]
    out += [_line(n, r, keys) for n, r in rows]
    for name in dict.fromkeys(n for n, _ in rows):
        mine = [r for n, r in rows if n == name]
        med: dict[str, Any] = {k: statistics.median(r.get(k, 0.0) for r in mine) for k in keys}
        if all("ari" in r for r in mine):
            med["ari"] = statistics.median(r["ari"] for r in mine)
        out.append(_line(f"**{name} median**", med, keys))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("engines", nargs="+", help="git revisions to compare (2 or more)")
    ap.add_argument(
        "--data",
        default=str(HERE / "results/work/n5000_snr0.01_box64_apix3_seed0"),
        help="dataset directory with particles.star (truth_labels.csv optional)",
    )
    ap.add_argument("--pairs", type=int, default=3, help="alternating rounds")
    ap.add_argument("-K", type=int, default=3)
    ap.add_argument("--filter-res", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(HERE / "results" / "work"))
    a = ap.parse_args(argv)
    if len(a.engines) < 2:
        ap.error("give at least two engines")
    if not (Path(a.data) / "particles.star").exists():
        ap.error(
            f"{a.data}: no particles.star (simulate one with accuracy.py or cryoclass simulate)"
        )
    engines = {rev: export_engine(rev, Path(a.workdir)) for rev in a.engines}
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for rev, path in engines.items():  # warm-up: the export's first run compiles (JIT)
            print(f"warm-up {rev} ({path.name}) …", file=sys.stderr, flush=True)
            run_child(path, a, scratch)
        for i in range(a.pairs):
            order = list(engines.items()) if i % 2 == 0 else list(engines.items())[::-1]
            for rev, path in order:
                r = run_child(path, a, scratch)
                print(f"pair {i + 1} {rev}: job {r['job']:.2f} s", file=sys.stderr, flush=True)
                rows.append((f"{rev} ({path.name})", r))
    print(f"{a.data}, {a.threads} threads, seconds per phase (in-process job; import = "
          "imports + reading the particles):\n")  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
