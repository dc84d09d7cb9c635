"""Small synthetic particle datasets written by hand (not by cryoclass writers) for the I/O tests.

Each dataset has two ``.mrcs`` stacks and the same particles described as a RELION 3.1 star, a
RELION 3.0 star and a CryoSPARC ``.cs`` (+ passthrough), together with the true values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from cryoclass.conventions import euler_to_matrix, matrix_to_cryosparc_pose

BOX = 16
APIX = 1.5


@dataclass
class Dataset:
    root: Path
    stacks: list[Path]  # absolute
    truth: dict[str, np.ndarray]  # canonical values per particle
    star31: Path
    star30: Path
    cs: Path
    cs_passthrough: Path
    images: np.ndarray  # (N, D, D) float32, per particle


def write_stack(path: Path, data: np.ndarray, apix: float = APIX) -> None:
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.asarray(data, np.float32))
        m.set_image_stack()
        m.voxel_size = apix


def make_dataset(root: Path, n: int = 12, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "Extract").mkdir(exist_ok=True)
    sizes = [n // 2, n - n // 2]
    stacks, per_stack = [], []
    for k, m in enumerate(sizes):
        p = root / "Extract" / f"mic{k}.mrcs"
        data = rng.normal(size=(m + 2, BOX, BOX)).astype(np.float32)  # 2 unused images at the end
        write_stack(p, data)
        stacks.append(p)
        per_stack.append(data)
    stack_of = np.repeat([0, 1], sizes)
    index = np.concatenate([rng.permutation(m) for m in sizes])  # out-of-order indices
    images = np.stack([per_stack[s][i] for s, i in zip(stack_of, index)])
    rot = rng.uniform(-180, 180, n)
    tilt = rng.uniform(5, 175, n)
    psi = rng.uniform(-180, 180, n)
    truth = {
        "rot": rot,
        "tilt": tilt,
        "psi": psi,
        "A": euler_to_matrix(rot, tilt, psi),
        "shift_x_A": np.round(rng.uniform(-3, 3, n), 3),
        "shift_y_A": np.round(rng.uniform(-3, 3, n), 3),
        "defocus_u_A": np.round(rng.uniform(10000, 20000, n), 2),
        "defocus_angle_deg": np.round(rng.uniform(-90, 90, n), 2),
        "half_set": np.arange(n) % 2,
        "scale": np.round(rng.uniform(0.8, 1.2, n), 4),
        "image_path": np.array([str(stacks[s]) for s in stack_of]),
        "image_index": index,
        "uid": np.r_[rng.integers(1, 2**62, n - 1).astype(np.uint64), np.uint64(2**64 - 5)],
    }
    truth["defocus_v_A"] = truth["defocus_u_A"] - np.round(rng.uniform(0, 500, n), 2)
    names = [f"{i + 1:06d}@Extract/mic{s}.mrcs" for s, i in zip(stack_of, index)]
    common = {
        "rlnImageName": names,
        "rlnMicrographName": [f"mic{s}.mrc" for s in stack_of],
        "rlnAngleRot": rot,
        "rlnAngleTilt": tilt,
        "rlnAnglePsi": psi,
        "rlnDefocusU": truth["defocus_u_A"],
        "rlnDefocusV": truth["defocus_v_A"],
        "rlnDefocusAngle": truth["defocus_angle_deg"],
        "rlnCtfScalefactor": truth["scale"],
        "rlnRandomSubset": truth["half_set"] + 1,
        "rlnClassNumber": np.ones(n, np.int64),
    }
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnAmplitudeContrast": [0.1],
            "rlnSphericalAberration": [2.7],
            "rlnVoltage": [300.0],
            "rlnImagePixelSize": [APIX],
            "rlnImageSize": [BOX],
            "rlnImageDimensionality": [2],
        }
    )
    p31 = pd.DataFrame(
        {
            **common,
            "rlnOriginXAngst": truth["shift_x_A"],
            "rlnOriginYAngst": truth["shift_y_A"],
            "rlnOpticsGroup": np.ones(n, np.int64),
        }
    )
    star31 = root / "particles31.star"
    starfile.write({"optics": optics, "particles": p31}, star31, float_format="%.10g")
    p30 = pd.DataFrame(
        {
            **common,
            "rlnOriginX": truth["shift_x_A"] / APIX,
            "rlnOriginY": truth["shift_y_A"] / APIX,
            "rlnVoltage": 300.0,
            "rlnSphericalAberration": 2.7,
            "rlnAmplitudeContrast": 0.1,
            "rlnDetectorPixelSize": 5.0,
            "rlnMagnification": 5.0e4 / APIX,
        }
    )
    star30 = root / "particles30.star"
    starfile.write({"images": p30}, star30, float_format="%.12g")
    cs, pt = _write_cs(root, truth, stack_of, index, n)
    return Dataset(root, stacks, truth, star31, star30, cs, pt, images)


def _write_cs(root, truth, stack_of, index, n):
    jdir = root / "J5"
    jdir.mkdir(exist_ok=True)
    main = np.zeros(
        n,
        dtype=[
            ("uid", "<u8"),
            ("alignments3D/split", "<u4"),
            ("alignments3D/shift", "<f4", (2,)),
            ("alignments3D/pose", "<f4", (3,)),
            ("alignments3D/psize_A", "<f4"),
            ("alignments3D/alpha", "<f4"),
            ("alignments3D/error", "<f4"),
        ],
    )
    main["uid"] = truth["uid"]
    main["alignments3D/split"] = truth["half_set"]
    main["alignments3D/shift"] = np.stack([truth["shift_x_A"], truth["shift_y_A"]], 1) / APIX
    main["alignments3D/pose"] = matrix_to_cryosparc_pose(truth["A"])
    main["alignments3D/psize_A"] = APIX
    main["alignments3D/alpha"] = truth["scale"]
    main["alignments3D/error"] = np.arange(n)
    pt = np.zeros(
        n,
        dtype=[
            ("uid", "<u8"),
            ("blob/path", "S40"),
            ("blob/idx", "<u4"),
            ("blob/shape", "<u4", (2,)),
            ("blob/psize_A", "<f4"),
            ("ctf/accel_kv", "<f4"),
            ("ctf/cs_mm", "<f4"),
            ("ctf/amp_contrast", "<f4"),
            ("ctf/df1_A", "<f4"),
            ("ctf/df2_A", "<f4"),
            ("ctf/df_angle_rad", "<f4"),
            ("ctf/phase_shift_rad", "<f4"),
            ("ctf/exp_group_id", "<u4"),
            ("location/micrograph_uid", "<u8"),
        ],
    )
    pt["uid"] = truth["uid"]
    pt["blob/path"] = [f"Extract/mic{s}.mrcs".encode() for s in stack_of]
    pt["blob/idx"] = index
    pt["blob/shape"] = BOX
    pt["blob/psize_A"] = APIX
    pt["ctf/accel_kv"] = 300.0
    pt["ctf/cs_mm"] = 2.7
    pt["ctf/amp_contrast"] = 0.1
    pt["ctf/df1_A"] = truth["defocus_u_A"]
    pt["ctf/df2_A"] = truth["defocus_v_A"]
    pt["ctf/df_angle_rad"] = np.deg2rad(truth["defocus_angle_deg"])
    pt["ctf/exp_group_id"] = 1
    pt["location/micrograph_uid"] = 1000 + stack_of
    pt = pt[::-1]  # passthrough rows in another order: merge must go by uid
    cs, pt_path = jdir / "J5_particles.cs", jdir / "J5_passthrough_particles.cs"
    for p, a in ((cs, main), (pt_path, pt)):
        with open(p, "wb") as f:
            np.save(f, a)
    return cs, pt_path


def test_dataset_is_self_consistent(tmp_path):
    ds = make_dataset(tmp_path)
    assert len(ds.images) == 12 and ds.images.shape[1:] == (BOX, BOX)
    assert all(os.path.isfile(p) for p in ds.stacks)
    assert ds.star31.is_file() and ds.star30.is_file() and ds.cs.is_file()
