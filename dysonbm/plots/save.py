"""The one way a figure is written: optional suptitle and tight layout, PNG at a fixed dpi, figure closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def save(fig, path, *, title: str | None = None, tight: bool = False, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path``, close it (figures of a sweep would pile up otherwise), return the path."""
    if title:
        fig.suptitle(title)
    if tight:
        fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
