"""``cryoclass info``: a particle set at a glance, checked against the particles' own metadata
and against view distributions whose binning is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoclass.cli import main
from cryoclass.conventions import classification_box
from cryoclass.errors import ParameterError
from cryoclass.io import Particles, read_particles, write_particles_with_images, write_star
from cryoclass.io.summary import direction_bins, format_summary, particle_summary


def _matrices_viewing(dirs: np.ndarray) -> np.ndarray:
    """Rotation matrices whose third row (the viewing direction) is each of ``dirs``."""
    out = []
    for d in dirs:
        d = d / np.linalg.norm(d)
        a = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = np.cross(a, d)
        u /= np.linalg.norm(u)
        out.append(np.stack([u, np.cross(d, u), d]))
    return np.array(out)


def _particles(rotations: np.ndarray, box: int = 32, apix: float = 4.0) -> Particles:
    n = len(rotations)
    rng = np.random.default_rng(0)
    meta = {
        "rotations": rotations,
        "pixel_size_A": apix,
        "defocus_u_A": rng.uniform(1.0e4, 2.0e4, n),
        "voltage_kV": 300.0,
    }
    return Particles.from_arrays(np.zeros((n, box, box), np.float32), meta)


def test_views_binned_exactly():
    centres = direction_bins(200)
    even = particle_summary(_particles(_matrices_viewing(np.repeat(centres, 3, axis=0))))
    assert even["views"] == {"bins": 200, "coverage": 1.0, "max_over_mean": 1.0}
    one = particle_summary(_particles(_matrices_viewing(np.repeat(centres[:1], 400, axis=0))))
    assert one["views"]["coverage"] == pytest.approx(1 / 200)
    assert one["views"]["max_over_mean"] == pytest.approx(200.0)


def test_summary_matches_the_metadata():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(500, 3))
    p = _particles(_matrices_viewing(q))
    s = particle_summary(p)
    m = p.meta
    assert (s["n_particles"], s["box_px"], s["pixel_size_A"], s["nyquist_A"]) == (500, 32, 4.0, 8.0)
    df = 0.5 * (m["defocus_u_A"] + m["defocus_v_A"]).to_numpy() / 1e4
    np.testing.assert_allclose(s["defocus_um_min_median_max"], [df.min(), np.median(df), df.max()])
    assert sum(s["half_sets"]) == 500
    assert s["optics_groups"][0]["n_particles"] == 500
    assert s["optics_groups"][0]["voltage_kV"] == 300.0
    # the boxes are the job's (classification_box), only for resolutions this box allows
    res = [b["filter_res_A"] for b in s["classification_boxes"]]
    assert res == [8.0, 10.0, 12.0, 15.0, 20.0]  # 4 and 6 Å are finer than Nyquist (8 Å)
    for b in s["classification_boxes"]:
        assert (b["box_px"], b["pixel_size_A"]) == classification_box(32, 4.0, b["filter_res_A"])
        assert 0 < b["particles_GB"] < 500 * b["box_px"] ** 2 * 12 / 1e9
    text = format_summary(s)
    assert "500 particles, box 32 px at 4 Å/px" in text and "Nyquist 8 Å" in text
    with pytest.raises(ParameterError, match="finer than Nyquist"):
        particle_summary(p, filter_res_A=(6.0,))


def test_cli_info(tmp_path, capsys):
    rng = np.random.default_rng(2)
    p = _particles(_matrices_viewing(rng.normal(size=(60, 3))))
    star = tmp_path / "particles.star"
    write_particles_with_images(star, p, tmp_path / "particles.mrcs")
    assert main(["info", str(star), "--filter-res", "10"]) == 0
    out = capsys.readouterr().out
    assert "60 particles" in out and "10 Å →" in out and "8 Å →" not in out
    assert main(["info", str(star), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_particles"] == 60 and s["box_px"] == 32 and s["class_sizes"] is None
    # a classification's output: the class sizes it carries
    classified = tmp_path / "classified.star"
    write_star(classified, read_particles(star), extra={"rlnClassNumber": np.arange(60) % 3 + 1})
    assert main(["info", str(classified)]) == 0
    assert "classes in the file: 3, sizes 20 / 20 / 20" in capsys.readouterr().out
    assert main(["info", str(star), "--filter-res", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finer than Nyquist" in err[0]
    assert main(["info", str(tmp_path / "missing.star")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.star" in err[0]
