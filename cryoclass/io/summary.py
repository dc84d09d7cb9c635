"""A particle set at a glance, before classifying it (``cryoclass info``).

What a scientist checks before choosing K and the filter resolution: how many particles, the
box and pixel size (hence Nyquist), the optics, the defocus range, whether half-sets and
per-particle scales came with the file, how evenly the viewing directions cover the sphere, and
what classification box each filter resolution gives.

Viewing directions: particle i is viewed along the third row of its RELION matrix ``A_i`` (the
map's direction that becomes the image's z). They are counted in ``n_bins`` bins of equal area
on the sphere (the nearest of a Fibonacci lattice's points, ≈ 14° apart for 200). *Coverage* is
the fraction of bins holding at least one particle; *max / mean* the fullest bin against the
average bin (1 = perfectly even; random uniform views of 20+ particles per bin give about 1.5-2;
a strongly preferred orientation gives tens, all particles in one bin gives the bin count).

Example
-------
>>> from cryoclass import read_particles                         # doctest: +SKIP
>>> from cryoclass.io.summary import particle_summary, format_summary  # doctest: +SKIP
>>> print(format_summary(particle_summary(read_particles("run_data.star"))))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..conventions import classification_box
from ..core.slices import SliceGeometry
from ..errors import ParameterError

__all__ = ["particle_summary", "format_summary", "view_directions", "direction_bins"]

#: Filter resolutions (Å) tabulated when none are asked for (those finer than Nyquist or coarser
#: than half the box are left out).
DEFAULT_FILTER_RES_A = (4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0)


def view_directions(rotations: np.ndarray) -> np.ndarray:
    """(N, 3, 3) RELION matrices → (N, 3) unit viewing directions (their third rows)."""
    d = np.asarray(rotations, np.float64)[:, 2, :]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def direction_bins(n_bins: int) -> np.ndarray:
    """(n_bins, 3) points of a Fibonacci lattice: near-equal-area bins on the sphere."""
    i = np.arange(n_bins) + 0.5
    z = 1.0 - 2.0 * i / n_bins
    phi = np.pi * (1.0 + 5.0**0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _coverage(rotations: np.ndarray, n_bins: int) -> dict[str, float]:
    dirs = view_directions(rotations)
    centres = direction_bins(n_bins)
    counts = np.zeros(n_bins, np.int64)
    for s in range(0, len(dirs), 65536):  # nearest bin centre = largest dot product
        np.add.at(counts, np.argmax(dirs[s : s + 65536] @ centres.T, axis=1), 1)
    return {
        "bins": n_bins,
        "coverage": float(np.count_nonzero(counts) / n_bins),
        "max_over_mean": float(counts.max() / counts.mean()) if len(dirs) else 0.0,
    }


def _range(x: np.ndarray) -> list[float]:
    return [float(np.min(x)), float(np.median(x)), float(np.max(x))]


def particle_summary(
    particles: Any, filter_res_A: tuple[float, ...] | None = None, n_bins: int = 200
) -> dict[str, Any]:
    """Facts about a :class:`~cryoclass.io.Particles` set (a JSON-ready dict).

    ``filter_res_A``: the filter resolutions (Å) to tabulate the classification box for
    (default :data:`DEFAULT_FILTER_RES_A`, those possible for this box).
    """
    if n_bins < 1:
        raise ParameterError("n_bins", f"must be ≥ 1, got {n_bins}")
    m = particles.meta
    n, box, apix = len(particles), int(particles.box), float(particles.pixel_size_A)
    df_mean = 0.5 * (m["defocus_u_A"].to_numpy() + m["defocus_v_A"].to_numpy())
    astig = np.abs(m["defocus_u_A"].to_numpy() - m["defocus_v_A"].to_numpy())
    halves = np.bincount(m["half_set"].to_numpy(np.int64), minlength=2)
    optics = (
        m.groupby("optics_group")[["voltage_kV", "cs_mm", "amplitude_contrast"]]
        .first()
        .reset_index()
    )
    asked = DEFAULT_FILTER_RES_A if filter_res_A is None else tuple(filter_res_A)
    boxes = []
    for res in asked:
        try:
            dc, apix_c = classification_box(box, apix, float(res))
        except ParameterError:
            if filter_res_A is not None:  # asked for explicitly: say why it is impossible
                raise
            continue
        geom = SliceGeometry(dc, r_max=min(box * apix / float(res), dc / 2))
        boxes.append(
            {
                "filter_res_A": float(res),
                "box_px": int(dc),
                "pixel_size_A": float(apix_c),
                # what the job keeps per particle: its transform (complex64) and CTF (float32)
                # on the classification disc (memory, or the on-disk cache with cache_dir)
                "particles_GB": float(n * geom.M * 12 / 1e9),
            }
        )
    scale = m["scale"].to_numpy()
    return {
        "source": str(particles.source_path or "memory"),
        "n_particles": n,
        "box_px": box,
        "pixel_size_A": apix,
        "nyquist_A": 2.0 * apix,
        "box_A": box * apix,
        "optics_groups": [
            {
                "group": int(r.optics_group),
                "voltage_kV": float(r.voltage_kV),
                "cs_mm": float(r.cs_mm),
                "amplitude_contrast": float(r.amplitude_contrast),
                "n_particles": int((m["optics_group"] == r.optics_group).sum()),
            }
            for r in optics.itertuples()
        ],
        "defocus_um_min_median_max": [v / 1e4 for v in _range(df_mean)],
        "astigmatism_um_median": float(np.median(astig) / 1e4),
        "half_sets": [int(halves[0]), int(halves[1])],
        "scale_min_median_max": _range(scale),
        "views": _coverage(particles.rotations, n_bins),
        "classification_boxes": boxes,
    }


def format_summary(s: dict[str, Any]) -> str:
    """:func:`particle_summary`'s dict as the text ``cryoclass info`` prints."""
    lines = [
        f"{s['source']}: {s['n_particles']} particles, box {s['box_px']} px at "
        f"{s['pixel_size_A']:g} Å/px ({s['box_A']:g} Å), Nyquist {s['nyquist_A']:g} Å",
    ]
    for g in s["optics_groups"]:
        lines.append(
            f"  optics group {g['group']}: {g['n_particles']} particles, {g['voltage_kV']:g} kV, "
            f"Cs {g['cs_mm']:g} mm, amplitude contrast {g['amplitude_contrast']:g}"
        )
    lo, med, hi = s["defocus_um_min_median_max"]
    lines.append(
        f"  defocus {lo:.2f}-{hi:.2f} µm (median {med:.2f}), "
        f"astigmatism median {s['astigmatism_um_median']:.3f} µm"
    )
    h0, h1 = s["half_sets"]
    lines.append(f"  half-sets {h0} / {h1}")
    smin, smed, smax = s["scale_min_median_max"]
    if smin == smax == 1.0:
        lines.append("  per-particle scale: all 1")
    else:
        lines.append(f"  per-particle scale {smin:.3g}-{smax:.3g} (median {smed:.3g})")
    if s.get("class_sizes"):
        sizes = s["class_sizes"]
        lines.append(
            f"  classes in the file: {len(sizes)}, sizes " + " / ".join(str(c) for c in sizes)
        )
    v = s["views"]
    lines.append(
        f"  viewing directions: {100 * v['coverage']:.0f} % of {v['bins']} equal-area bins "
        f"occupied, fullest bin {v['max_over_mean']:.1f}× the mean"
        # with fewer than ~20 particles per bin the fullest bin is high by chance alone
        + (
            "  (preferred orientation)"
            if v["max_over_mean"] > 5 and s["n_particles"] >= 20 * v["bins"]
            else ""
        )
    )
    if s["classification_boxes"]:
        lines.append("  filter resolution → classification box (preprocessed particles' size):")
        for b in s["classification_boxes"]:
            lines.append(
                f"    {b['filter_res_A']:5g} Å → {b['box_px']:4d} px at {b['pixel_size_A']:.3g} "
                f"Å/px ({b['particles_GB']:.2g} GB)"
            )
    return "\n".join(lines)
