"""cryoclass_widgets — notebook dashboard for cryoclass (ipywidgets, Plotly, nglview).

Example
-------
>>> from cryoclass_widgets import Dashboard                      # doctest: +SKIP
>>> Dashboard.from_files("particles.star")                        # doctest: +SKIP

``Dashboard(particles)`` shows the setup form, Run/Stop with progress, live diagnostic plots, the
3D class viewer and the class table with export. The figure builders in
:mod:`cryoclass_widgets.figures` are pure (arrays → ``plotly`` figures) and usable on their own.
"""

from __future__ import annotations

from .dashboard import Dashboard
from .live_plots import LivePlots
from .results_panel import ResultsPanel
from .setup_panel import SetupPanel
from .state import RunState
from .viewers import VolumeViewer

__version__ = "0.1.0"

__all__ = [
    "Dashboard",
    "SetupPanel",
    "LivePlots",
    "VolumeViewer",
    "ResultsPanel",
    "RunState",
    "__version__",
]
