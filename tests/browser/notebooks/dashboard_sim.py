# Notebook under test (cells separated by "# %%"); tests/browser/test_lab_dashboard.py turns it
# into an .ipynb in a temporary directory. Tiny simulated data set, real engine; with
# CRYOCLASS_BROWSER_DEMO=1 (or without the engine) the synthetic DemoJob drives the dashboard.
# %%
import os

from cryoclass_widgets import Dashboard
from cryoclass_widgets.demo import DemoParticles, demo_job_factory

import cryoclass
from cryoclass import ClassificationParams

try:
    from cryoclass import Classification  # noqa: F401

    USE_ENGINE = not os.environ.get("CRYOCLASS_BROWSER_DEMO")
except (ImportError, AttributeError):
    USE_ENGINE = False
print("cryoclass", cryoclass.__version__, "engine" if USE_ENGINE else "demo job")
# %%
params = ClassificationParams(
    n_classes=3,
    filter_res_A=9.0,
    max_fem_iters=30,
    convergence_pct=0.0,
    rms_change_check=False,
    init_particles_per_class=100,
    oem_batch_size_per_class=100,
    seed=0,
)
if USE_ENGINE:
    from cryoclass.io import write_particles_with_images
    from cryoclass.sim import simulate

    ds = simulate(n_particles=600, box=40, pixel_size_A=3.0, snr=0.5, seed=0)
    # on disk too, so that the particles box has a file of this directory to suggest
    write_particles_with_images("sim/particles.star", ds.particles, "sim/particles.mrcs")
    dash = Dashboard(ds.particles, params=params)
else:
    dash = Dashboard(
        DemoParticles(600, box=40, pixel_size_A=3.0),
        params=params,
        job_factory=demo_job_factory(delay_s=0.4, n_oem=6, n_fem=20),
    )
dash  # noqa: B018 - displays the dashboard
