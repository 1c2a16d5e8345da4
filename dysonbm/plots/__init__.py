"""Figures, one module per reproduction (`linear_scaling`, `phase_diagram`), written by `save`.

Matplotlib's Agg backend is selected here, before any figure module imports pyplot: figures
are files, never windows.
"""

import matplotlib

matplotlib.use("Agg")
