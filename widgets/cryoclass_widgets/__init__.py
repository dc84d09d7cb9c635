"""cryoclass_widgets — notebook dashboard for cryoclass (ipywidgets, Plotly, nglview)."""

__version__ = "0.1.0"
