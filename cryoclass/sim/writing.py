"""Writing a :class:`~cryoclass.sim.simulate.SimulatedDataset` to disk with its ground truth.

Example
-------
>>> import tempfile
>>> from cryoclass.sim import simulate
>>> ds = simulate(n_particles=10, box=24, pixel_size_A=8.0, seed=0)
>>> files = ds.write(tempfile.mkdtemp())
>>> sorted(files)[:3]
['particles.cs', 'particles.mrcs', 'particles.star']
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

if TYPE_CHECKING:
    from .simulate import SimulatedDataset

__all__ = ["write_dataset"]


def write_dataset(ds: SimulatedDataset, outdir: Path) -> dict[str, Path]:
    """Write particles (``.star``/``.mrcs``/``.cs``), truth labels, truth maps and parameters.

    See :meth:`SimulatedDataset.write` for the file list. Returns file name → path.
    """
    from .. import __version__
    from ..io.mrc import write_mrc
    from ..io.particles import write_particles_with_images

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    files = {name: outdir / name for name in ("particles.star", "particles.mrcs", "particles.cs")}
    write_particles_with_images(
        files["particles.star"], ds.particles, files["particles.mrcs"], files["particles.cs"]
    )
    labels = outdir / "truth_labels.csv"
    pd.DataFrame(
        {
            "uid": ds.particles.meta["uid"].to_numpy(),
            "label": ds.labels,
            "state": [ds.state_names[k] for k in ds.labels],
        }
    ).to_csv(labels, index=False)
    files["truth_labels.csv"] = labels
    for k, vol in enumerate(ds.volumes):
        name = f"truth_class_{k + 1:02d}.mrc"
        write_mrc(outdir / name, vol, ds.pixel_size_A)
        files[name] = outdir / name
    counts = {s: int((ds.labels == k).sum()) for k, s in enumerate(ds.state_names)}
    record = {
        "cryoclass_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "parameters": ds.parameters,
        "states": list(ds.state_names),
        "truth_class_files": {s: f"truth_class_{k + 1:02d}.mrc" for k, s in
                              enumerate(ds.state_names)},
        "counts": counts,
        "mass_fractions_changed": ds.mass_fractions,
        "snr_definition": "var(noiseless CTF-modulated images over the whole box) / noise_sigma^2",
        "signal_variance": ds.signal_variance,
        "noise_sigma": ds.noise_sigma,
        "n_atoms": {s: a.n_atoms for s, a in zip(ds.state_names, ds.atoms)},
        "shift_convention": "RELION origin: particle centre at -origin in the box",
    }  # fmt: skip
    sim_yaml = outdir / "simulation.yaml"
    sim_yaml.write_text(yaml.safe_dump(record, sort_keys=False))
    files["simulation.yaml"] = sim_yaml
    return files
