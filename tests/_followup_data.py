"""Shared simulated data for the follow-up tests (built once per session, cached).

Three states that differ enough to be told apart at 8–16 Å: ``closed``, ``open`` (a domain
hinged by 25°) and ``missing`` (closed minus a subunit of ≈ 5 % of the mass).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

STATES = ("closed", "open", "missing")


@functools.cache
def three_states() -> Any:
    """3000 particles, box 32 at 4 Å/px (Nyquist 8 Å), SNR 0.1, 1000 per state."""
    from cryoclass import sim

    return sim.simulate(n_particles=3000, box=32, pixel_size_A=4.0, snr=0.1, states=STATES, seed=5)


@functools.cache
def small_classification(root: str) -> Path:
    """A quick K = 2 classification of 600 particles (closed/open) written to ``root/parent``."""
    import numpy as np

    from cryoclass import Classification, ClassificationParams

    ds = three_states()
    keep = np.nonzero(ds.labels < 2)[0][:600]
    outdir = Path(root) / "parent"
    Classification(
        ds.particles.subset(keep),
        ClassificationParams(n_classes=2, filter_res_A=12.0, max_fem_iters=3, seed=0),
        outdir=outdir,
        command="cryoclass classify test.star -K 2 --filter-res 12 -o parent",
    ).run()
    return outdir
