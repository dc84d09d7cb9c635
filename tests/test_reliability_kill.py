"""Reliability, interruptions: ``cryoclass classify`` is SIGKILLed at random moments (seeded).

After every kill OUTDIR must be consistent (every non-temporary file parses; temporary files are
only hidden ``.*.tmp``; the checkpoint loads), and ``--resume`` must finish with the same
posteriors (within 1e-5) as an uninterrupted run with the same seed. A second run into a
finished OUTDIR without ``--overwrite`` exits 2 with a one-line error and touches nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cryoclass.io import read_particles, read_star
from cryoclass.io.cryosparc import load_cs
from cryoclass.io.mrc import read_mrc

pytestmark = pytest.mark.timeout(300)

ARGS = [
    "-K", "3", "--filter-res", "14", "--oem-epochs", "2", "--max-fem-iters", "4",
    "--batch-per-class", "150", "--convergence-pct", "0", "--no-rms-check", "--seed", "3",
    "--quiet",
]  # fmt: skip
N_KILLS = 5


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "cryoclass"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cryoclass.cli"]


def _classify(data: Path, outdir: Path, *extra: str) -> subprocess.Popen:
    cmd = [*_cli(), "classify", str(data / "particles.star"), "-o", str(outdir), *ARGS, *extra]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from cryoclass.sim import simulate

    d = tmp_path_factory.mktemp("killdata")
    simulate(n_particles=400, box=32, pixel_size_A=6.0, snr=1.0, seed=11).write(d)
    return d


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    t0 = time.perf_counter()
    proc = _classify(data, out)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    return out, time.perf_counter() - t0


def _posteriors(outdir: Path) -> np.ndarray:
    arr = load_cs(outdir / "particles.cs")
    k = 0
    cols = []
    while f"alignments_class3D_{k}/class_posterior" in arr.dtype.names:
        cols.append(arr[f"alignments_class3D_{k}/class_posterior"])
        k += 1
    return np.stack(cols, axis=1)


def check_consistent(outdir: Path) -> dict[str, int]:
    """Every file in OUTDIR parses; leftovers are only hidden ``.*.tmp``. Returns counts."""
    from cryoclass.engine.state import load_checkpoint

    counts = {"files": 0, "tmp": 0}
    if not outdir.exists():
        return counts
    for f in sorted(outdir.rglob("*")):
        if not f.is_file():
            continue
        if f.name.startswith("."):
            assert f.name.endswith(".tmp"), f"unexpected hidden file {f}"
            counts["tmp"] += 1
            continue
        counts["files"] += 1
        ext = f.suffix
        if ext == ".yaml":
            doc = yaml.safe_load(f.read_text())
            assert "params" in doc and "cryoclass_version" in doc
        elif ext in (".mrc", ".mrcs"):
            vol, _ = read_mrc(f)
            assert np.all(np.isfinite(vol)), f
        elif f.name == "run_model.star":  # RELION's class-selection summary: its maps exist
            refs = read_star(f)["model_classes"]["rlnReferenceImage"]
            assert len(refs) > 0 and all((f.parent / Path(r).name).is_file() for r in refs)
        elif ext == ".star":
            blocks = read_star(f)
            assert len(blocks["particles"]) > 0
            if f.name == "particles.star":
                read_particles(f)
        elif ext == ".cs":
            arr = load_cs(f)
            assert len(arr) > 0
        elif ext == ".csv":
            pd.read_csv(f)
        elif ext == ".npz":
            with np.load(f, allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        elif ext == ".json":
            json.loads(f.read_text())
        elif ext == ".zip":
            with zipfile.ZipFile(f) as zf:
                assert zf.testzip() is None
        else:
            raise AssertionError(f"unexpected file {f}")
    if (outdir / "checkpoint" / "state.json").exists():
        st, _ = load_checkpoint(outdir)
        assert st.phase in ("consensus", "init", "oem", "fem", "finish")
    return counts


def _state(outdir: Path) -> tuple[str, int]:
    p = outdir / "checkpoint" / "state.json"
    if not p.exists():
        return "", -1
    meta = json.loads(p.read_text())
    return meta["phase"], int(meta["iteration"])


def _where(outdir: Path) -> str:
    if any((outdir / n).exists() for n in ("particles.star", "particles.cs", "class_00.mrc")):
        return "writing final outputs" if not (outdir / "params.yaml").exists() else "finished"
    phase, it = _state(outdir)
    return f"checkpoint {phase} it {it}" if phase else "before first checkpoint"


#: (label, predicate on OUTDIR, max extra random delay in s) — kill points spread over the run;
#: ``None`` as the delay: no predicate, a random moment in the first 10-40 % of the reference
#: run's wall time (start-up or preprocessing; a fixed window missed once the job got faster)
KILL_POINTS = [
    ("early", lambda d: False, None),
    ("after consensus", lambda d: _state(d)[0] in ("init", "oem"), 0.5),
    ("O-EM done", lambda d: _state(d)[0] == "fem", 0.3),
    ("F-EM it 2", lambda d: _state(d) >= ("fem", 2), 0.3),
    ("final writes", lambda d: (d / "particles.star").exists(), 0.05),
]


def _run_and_kill(
    data: Path, out: Path, rng: random.Random, pred, extra_s: float | None, t_ref: float
) -> dict:
    resume = (out / "checkpoint" / "state.json").exists() or (out / "params.yaml").exists()
    proc = _classify(data, out, *(["--resume"] if resume else []))
    t0 = time.perf_counter()
    deadline = t0 + 120
    if extra_s is None:  # plain random moment
        time.sleep(rng.uniform(0.1, 0.4) * t_ref)
    else:
        while proc.poll() is None and not pred(out) and time.perf_counter() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, extra_s))
    alive = proc.poll() is None
    where = _where(out)
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    elapsed = round(time.perf_counter() - t0, 2)
    return dict(killed=alive, at=where, after_s=elapsed, resumed=resume, **check_consistent(out))


def test_sigkill_at_random_moments_then_resume_matches(data, reference, tmp_path):
    ref_out, t_ref = reference
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = []
    for label, pred, extra_s in KILL_POINTS:
        kills.append({"target": label, **_run_and_kill(data, out, rng, pred, extra_s, t_ref)})
    proc = _classify(data, out, "--resume")
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    check_consistent(out)
    np.testing.assert_allclose(_posteriors(out), _posteriors(ref_out), atol=1e-5)
    ref_cs, cs = load_cs(ref_out / "particles.cs"), load_cs(out / "particles.cs")
    np.testing.assert_array_equal(cs["alignments3D/class"], ref_cs["alignments3D/class"])
    np.testing.assert_array_equal(cs["uid"], ref_cs["uid"])
    survived = sum(k["killed"] for k in kills)
    print(json.dumps({"reference_wall_s": round(t_ref, 2), "kills": kills}, indent=1))
    assert survived >= 4, kills  # the kill points must land while the job runs


def _fingerprint(d: Path) -> dict[str, tuple[int, str]]:
    return {
        str(f.relative_to(d)): (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted(d.rglob("*"))
        if f.is_file()
    }


def test_second_run_into_finished_outdir_is_refused(data, reference):
    out, _ = reference
    before = _fingerprint(out)
    proc = _classify(data, out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "already holds a classification" in lines[0], err
    assert "overwrite" in lines[0] and "Traceback" not in err
    assert _fingerprint(out) == before
    check_consistent(out)
